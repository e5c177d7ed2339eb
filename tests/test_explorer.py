"""The threshold explorer of segcore.analysis.explorer: exact metrics at any threshold."""

from __future__ import annotations

import csv
import io
import pickle

import cv2
import numpy as np
import pytest

from segcore.analysis.downloads import metrics_csv
from segcore.analysis.explorer import EXPLORER_THRESHOLDS, NO_TRUTH_REASON, ThresholdExplorer
from segcore.errors import InvalidImageError
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.metrics.counts import binarize, confusion_counts
from segcore.metrics.sweep import threshold_sweep


@pytest.fixture
def probs_and_truth():
    rng = np.random.default_rng(7)
    truth = np.zeros((64, 64), np.uint8)
    for top, left in [(5, 5), (20, 30), (40, 10), (44, 44)]:
        truth[top : top + 10, left : left + 9] = 1
    noise = rng.random((64, 64)).astype(np.float32)
    prob = np.clip(0.6 * truth + 0.5 * noise, 0, 1).astype(np.float32)
    prob[0, :8] = [0.35, 0.41, 0.5, 0.3, 0.0, 1.0, 0.355, 0.07]  # values exactly on thresholds
    return prob, truth


def predicted_nuclei(prob, t, config=None):
    """Nuclei as the explorer counts them: split instances at 0.25 µm/px (its default)."""
    return int(label_instances(prob, t, config, pixel_size=0.25).max())


def expected_metrics(prob, truth, t):
    mask = binarize(prob, t)
    counts = confusion_counts(truth, mask)
    return {
        "threshold": float(t),
        "dice": counts.dice,
        "jaccard": counts.jaccard,
        "precision": counts.precision,
        "recall": counts.recall,
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "tn": counts.tn,
        "nuclei_pred": predicted_nuclei(prob, t),
        # a binary truth: its 8-connected components
        "nuclei_true": cv2.connectedComponents(truth, connectivity=8)[0] - 1,
    }


ON_GRID = [0.0, 0.07, 0.3, 0.35, 0.41, 0.5, 0.99, 1.0, float(np.linspace(0, 1, 101)[35])]
OFF_GRID = [0.355, 0.123456, float(np.nextafter(0.35, 1.0)), float(np.nextafter(0.5, 0.0))]


@pytest.mark.parametrize("t", ON_GRID + OFF_GRID)
def test_explorer_matches_direct_counting(probs_and_truth, t):
    prob, truth = probs_and_truth
    explorer = ThresholdExplorer(prob, truth)
    assert explorer.metrics_at(t) == expected_metrics(prob, truth, t)
    assert np.array_equal(explorer.mask_at(t), binarize(prob, t))


def test_explorer_is_exact_for_float64_values_between_close_thresholds():
    # 0.35 (the grid's value) and linspace's 0.35000000000000003 split a pixel of exactly 0.35.
    t_grid, t_linspace = 0.35, float(np.linspace(0, 1, 101)[35])
    assert t_grid < t_linspace
    prob = np.full((8, 8), 0.2)
    prob[2:5, 2:5] = 0.35
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    explorer = ThresholdExplorer(prob, truth)
    assert explorer.metrics_at(t_grid)["tp"] == 9
    assert explorer.metrics_at(t_linspace)["tp"] == 0
    for t in (t_grid, t_linspace):
        assert explorer.metrics_at(t) == expected_metrics(prob, truth, t)


def test_explorer_repeated_and_cached_calls_agree(probs_and_truth):
    prob, truth = probs_and_truth
    explorer = ThresholdExplorer(prob, truth)
    first = [explorer.metrics_at(t) for t in (0.4, 0.41, 0.4, np.float32(0.5), 0.5)]
    assert first[0] == first[2]
    assert first[3]["threshold"] == float(np.float32(0.5))
    assert first[4] == expected_metrics(prob, truth, 0.5)
    mask = explorer.mask_at(0.5)
    assert not mask.flags.writeable
    assert mask is explorer.mask_at(0.5)
    for bad in (-0.01, 1.01, float("nan"), None, True):
        with pytest.raises(ValueError, match="threshold"):
            explorer.metrics_at(bad)


def test_explorer_curve_and_best_threshold(probs_and_truth):
    prob, truth = probs_and_truth
    explorer = ThresholdExplorer(prob, truth)
    curve = explorer.curve()
    sweep = threshold_sweep(truth, prob, EXPLORER_THRESHOLDS)
    assert curve.thresholds.shape == (101,)
    assert curve.thresholds[35] == 0.35 and curve.thresholds[41] == 0.41
    assert np.array_equal(curve.dice, sweep.pooled.dice)
    assert np.array_equal(curve.jaccard, sweep.pooled.jaccard)
    assert curve.best_threshold == explorer.best_threshold() == sweep.best_threshold("dice")
    assert curve.best_dice == curve.dice.max()
    assert curve.best_dice == explorer.metrics_at(curve.best_threshold)["dice"]
    assert curve.best_jaccard == explorer.metrics_at(curve.best_threshold)["jaccard"]
    assert explorer.best_threshold("recall") == sweep.best_threshold("recall")
    for i in (0, 35, 41, 100):
        assert curve.dice[i] == expected_metrics(prob, truth, curve.thresholds[i])["dice"]


def test_explorer_without_truth(probs_and_truth):
    prob, _ = probs_and_truth
    explorer = ThresholdExplorer(prob)
    assert not explorer.has_truth and explorer.reason == NO_TRUTH_REASON
    for t in (0.5, 0.355):
        metrics = explorer.metrics_at(t)
        assert metrics == {
            "threshold": t,
            "nuclei_pred": predicted_nuclei(prob, t),
            "reason": NO_TRUTH_REASON,
        }
    assert "ground-truth" in NO_TRUTH_REASON
    assert explorer.curve() is None and explorer.best_threshold() is None
    assert explorer.counts_at(0.5) is None and explorer.nuclei_true is None


def test_explorer_counts_split_nuclei_with_any_setting_and_reads_instance_truth():
    prob = np.zeros((100, 140), np.float32)
    for x in (40, 85):  # two touching discs of radius 25 px (6 µm)
        cv2.circle(prob, (x, 50), 25, 0.9, -1)
    truth = np.zeros((100, 140), np.uint16)
    truth[prob > 0] = 7
    truth[:, 63:][prob[:, 63:] > 0] = 9  # two labelled nuclei, touching
    explorer = ThresholdExplorer(prob, truth, instances=InstanceConfig(split_depth_um=0.2))
    assert explorer.nuclei_true == 2 and explorer.truth_note is None
    assert explorer.metrics_at(0.5)["nuclei_pred"] == 2
    whole = InstanceConfig(split_depth_um=50)
    assert explorer.metrics_at(0.5, whole)["nuclei_pred"] == 1
    labels = explorer.labels_at(0.5)
    assert labels.max() == 2 and not labels.flags.writeable
    assert explorer.labels_at(0.5) is labels  # cached
    binary = ThresholdExplorer(prob, (truth > 0).astype(np.uint8))
    assert binary.nuclei_true == 1 and "binary" in binary.truth_note


def test_explorer_checks_inputs_and_pickles(probs_and_truth):
    prob, truth = probs_and_truth
    with pytest.raises(InvalidImageError, match="same size"):
        ThresholdExplorer(prob, truth[:, :-1])
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        ThresholdExplorer(prob * 3)
    explorer = ThresholdExplorer(prob[..., None], truth)
    assert explorer.shape == (64, 64)
    explorer.metrics_at(0.5)
    copy = pickle.loads(pickle.dumps(explorer))
    assert copy.metrics_at(0.5) == explorer.metrics_at(0.5)
    assert copy.metrics_at(0.355) == expected_metrics(prob, truth, 0.355)
    prob_copy = prob.copy()
    explorer = ThresholdExplorer(prob_copy, truth)
    prob_copy[:] = 0  # the explorer keeps its own copy
    assert explorer.metrics_at(0.5) == expected_metrics(prob, truth, 0.5)


def test_metrics_csv_of_explorer_rows(probs_and_truth):
    prob, truth = probs_and_truth
    explorer = ThresholdExplorer(prob, truth)
    rows = [explorer.metrics_at(0.5), ThresholdExplorer(prob).metrics_at(0.5)]
    read = list(csv.DictReader(io.StringIO(metrics_csv(rows).decode("utf-8"), newline="")))
    assert float(read[0]["dice"]) == rows[0]["dice"]
    assert read[1]["reason"] == NO_TRUTH_REASON


def test_explorer_nbytes_and_label_cache_bounded_by_bytes(monkeypatch):
    import segcore.analysis.explorer as explorer_module

    prob = np.random.default_rng(0).random((100, 100)).astype(np.float32)
    explorer = ThresholdExplorer(prob, prob > 0.5)
    base = explorer.nbytes
    assert base >= prob.nbytes + 100 * 100  # probabilities and the truth mask
    monkeypatch.setattr(explorer_module, "_LABELS_CACHE_BYTES", 2 * 100 * 100 * 4)
    for threshold in (0.3, 0.4, 0.5, 0.6):
        explorer.labels_at(threshold)
    assert len(explorer._labels) == 2  # the byte cap, below the four by count
    assert explorer.nbytes == base + 2 * 100 * 100 * 4
    monkeypatch.setattr(explorer_module, "_LABELS_CACHE_BYTES", 1)
    explorer.labels_at(0.7)
    assert len(explorer._labels) == 1  # the last one is always kept


def test_known_nuclei_never_splits_and_pixel_metrics_need_no_split():
    rng = np.random.default_rng(4)
    prob = rng.random((40, 40)).astype(np.float32)
    truth = (rng.random((40, 40)) > 0.5).astype(np.uint8)
    explorer = ThresholdExplorer(prob, truth)
    assert explorer.known_nuclei_at(0.5) is None  # not counted yet
    pixel = explorer.pixel_metrics_at(0.5)
    assert "nuclei_pred" not in pixel and explorer.known_nuclei_at(0.5) is None
    full = explorer.metrics_at(0.5)
    assert full == {**pixel, "nuclei_pred": full["nuclei_pred"]}
    assert explorer.known_nuclei_at(0.5) == full["nuclei_pred"] == explorer.nuclei_at(0.5)
