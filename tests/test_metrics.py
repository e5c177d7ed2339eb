"""Tests of segcore.metrics: hand-made tables, scikit-learn references, the one-pass
sweep."""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from segcore.metrics import counts as mc
from segcore.metrics import sweep as ms
from segcore.metrics.counts import ConfusionCounts

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg"
EMPTY = ConfusionCounts(0, 0, 0, 0)

# --------------------------------------------------------------------------------------------
# Hand-made tables
# --------------------------------------------------------------------------------------------

Z = [[0, 0], [0, 0]]
ONE = [[1, 0], [0, 0]]
TWO = [[1, 1], [0, 0]]
ALL = [[1, 1], [1, 1]]

# (y_true, y_pred, (tp, fp, fn, tn), dice, jaccard, precision, recall)
CASES = [
    pytest.param(Z, Z, (0, 0, 0, 4), 1.0, 1.0, 1.0, 1.0, id="both-empty"),
    pytest.param(ONE, Z, (0, 0, 1, 3), 0.0, 0.0, 0.0, 0.0, id="empty-pred"),
    pytest.param(Z, ONE, (0, 1, 0, 3), 0.0, 0.0, 0.0, 0.0, id="empty-truth"),
    pytest.param(ALL, ALL, (4, 0, 0, 0), 1.0, 1.0, 1.0, 1.0, id="both-full"),
    pytest.param(TWO, TWO, (2, 0, 0, 2), 1.0, 1.0, 1.0, 1.0, id="identical"),
    pytest.param(TWO, ONE, (1, 0, 1, 2), 2 / 3, 1 / 2, 1.0, 1 / 2, id="pred-subset"),
    pytest.param(ONE, TWO, (1, 1, 0, 2), 2 / 3, 1 / 2, 1 / 2, 1.0, id="pred-superset"),
    pytest.param(ONE, [[0, 1], [0, 0]], (0, 1, 1, 2), 0.0, 0.0, 0.0, 0.0, id="disjoint"),
    pytest.param(TWO, [[0, 1], [1, 0]], (1, 1, 1, 1), 1 / 2, 1 / 3, 1 / 2, 1 / 2, id="half"),
    pytest.param(ALL, Z, (0, 0, 4, 0), 0.0, 0.0, 0.0, 0.0, id="full-vs-empty"),
]


@pytest.mark.parametrize(("y_true", "y_pred", "counts", "d", "j", "p", "r"), CASES)
def test_hand_made_table(y_true, y_pred, counts, d, j, p, r):
    c = mc.confusion_counts(np.array(y_true), np.array(y_pred))
    assert (c.tp, c.fp, c.fn, c.tn) == counts
    assert all(type(v) is int for v in (c.tp, c.fp, c.fn, c.tn))
    assert (c.dice, c.jaccard, c.precision, c.recall) == pytest.approx((d, j, p, r), abs=1e-15)
    assert mc.dice(y_true, y_pred) == pytest.approx(d, abs=1e-15)
    assert mc.jaccard(y_true, y_pred) == pytest.approx(j, abs=1e-15)
    assert mc.precision(y_true, y_pred) == pytest.approx(p, abs=1e-15)
    assert mc.recall(y_true, y_pred) == pytest.approx(r, abs=1e-15)
    assert c.accuracy == pytest.approx((counts[0] + counts[3]) / 4)


# Zero-division conventions straight on the counts: (tp, fp, fn, dice, jaccard, prec., recall).
@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (0, 0, 0, (1.0, 1.0, 1.0, 1.0)),  # both empty: perfect agreement everywhere
        (0, 0, 5, (0.0, 0.0, 0.0, 0.0)),  # nothing predicted, something to find
        (0, 5, 0, (0.0, 0.0, 0.0, 0.0)),  # empty truth, something predicted
        (0, 3, 4, (0.0, 0.0, 0.0, 0.0)),  # no overlap, no zero division
        (3, 0, 0, (1.0, 1.0, 1.0, 1.0)),
    ],
)
def test_zero_division_conventions(tp, fp, fn, expected):
    c = ConfusionCounts(tp, fp, fn, 10)
    assert (c.dice, c.jaccard, c.precision, c.recall) == expected
    curves = ms.MetricCurves.from_counts(np.array([tp]), np.array([fp]), np.array([fn]))
    assert tuple(float(curves.get(n)[0]) for n in mc.METRIC_NAMES) == expected


def test_nonzero_is_positive_for_any_dtype():
    truth = np.array([[0, 255], [7, 0]], dtype=np.uint8)
    for pred in (
        np.array([[0, 1], [1, 0]], dtype=bool),
        np.array([[0.0, 1.0], [3.5, 0.0]]),
        np.array([[0, -1], [2, 0]], dtype=np.int16),
    ):
        assert mc.confusion_counts(truth, pred) == ConfusionCounts(2, 0, 0, 2)


def test_confusion_counts_errors():
    with pytest.raises(ValueError, match=r"y_true \(2, 3\).*y_pred \(3, 2\)"):
        mc.confusion_counts(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no pixels"):
        mc.confusion_counts(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        mc.confusion_counts(np.zeros((2, 2)), np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="dtype"):
        mc.dice(np.array([["a"]]), np.array([["b"]]))


def test_confusion_counts_dataclass():
    a = ConfusionCounts(1, 2, 3, 4)
    assert a + ConfusionCounts(1, 1, 1, 1) == ConfusionCounts(2, 3, 4, 5)
    assert sum([a, a], EMPTY) == ConfusionCounts(2, 4, 6, 8)
    assert a.total == 10
    assert a.metric("accuracy") == 0.5
    assert EMPTY.accuracy == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.tp = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=">= 0"):
        ConfusionCounts(-1, 0, 0, 0)
    with pytest.raises(TypeError):
        ConfusionCounts(1.5, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown metric"):
        a.metric("f2")  # type: ignore[arg-type]
    assert type(ConfusionCounts(np.int64(3), 0, 0, 0).tp) is int


# --------------------------------------------------------------------------------------------
# Independent reference: scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("p_true", "p_pred"), [(0.3, 0.4), (0.02, 0.5), (0.0, 0.2), (0.3, 0.0), (0.0, 0.0)]
)
def test_against_sklearn(seed, p_true, p_pred):
    rng = np.random.default_rng(seed)
    y = (rng.random((32, 24)) < p_true).astype(np.uint8)
    p = (rng.random((32, 24)) < p_pred).astype(np.uint8)
    yf, pf = y.ravel(), p.ravel()
    # zero_division chosen to match the module conventions where sklearn divides by zero.
    assert mc.dice(y, p) == pytest.approx(f1_score(yf, pf, zero_division=1.0), abs=1e-12)
    assert mc.jaccard(y, p) == pytest.approx(jaccard_score(yf, pf, zero_division=1.0), abs=1e-12)
    prec_zero = 1.0 if not y.any() else 0.0
    assert mc.precision(y, p) == pytest.approx(
        precision_score(yf, pf, zero_division=prec_zero), abs=1e-12
    )
    rec_zero = 1.0 if not p.any() else 0.0
    assert mc.recall(y, p) == pytest.approx(recall_score(yf, pf, zero_division=rec_zero), abs=1e-12)


def test_relation_between_dice_and_jaccard():
    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.random((20, 20)) < rng.random()
        p = rng.random((20, 20)) < rng.random()
        d, j = mc.dice(y, p), mc.jaccard(y, p)
        assert j == pytest.approx(d / (2 - d), abs=1e-12)


# --------------------------------------------------------------------------------------------
# binarize
# --------------------------------------------------------------------------------------------


def test_binarize_rule_and_validation():
    prob = np.array([[0.0, 0.37, 0.5], [0.49999, 0.5000001, 1.0]])
    assert mc.binarize(prob, 0.5).tolist() == [[0, 0, 1], [0, 1, 1]]
    assert mc.binarize(prob, 0.5).dtype == np.uint8
    assert mc.binarize(prob, 0.37).tolist() == [[0, 1, 1], [1, 1, 1]]
    assert mc.binarize(prob, 0).all()
    assert mc.binarize(prob, 1.0).tolist() == [[0, 0, 0], [0, 0, 1]]
    # float32 probabilities are compared in float64: float32(0.7) < 0.7.
    assert mc.binarize(np.float32([0.7]), 0.7).tolist() == [0]
    for bad in (-0.1, 1.5, float("nan"), "0.5", None, True):
        with pytest.raises(ValueError, match="threshold"):
            mc.binarize(prob, bad)
    with pytest.raises(ValueError, match="outside"):
        mc.binarize(np.array([0.2, 1.2]), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        mc.binarize(np.array([0.2, np.nan]), 0.5)


# --------------------------------------------------------------------------------------------
# threshold_sweep against a naive per-threshold loop
# --------------------------------------------------------------------------------------------


def naive_sweep(truths, probs, thresholds):
    """Reference: one confusion_counts per image and threshold, with `p >= t`."""
    pooled, per_image = [], []
    for t in thresholds:
        counts = [mc.confusion_counts(y, p >= t) for y, p in zip(truths, probs, strict=True)]
        pooled.append(sum(counts, EMPTY))
        per_image.append(counts)
    return pooled, per_image


def assert_sweep_equals_naive(result, truths, probs):
    pooled, per_image = naive_sweep(truths, probs, result.thresholds)
    for i, t in enumerate(result.thresholds):
        c = pooled[i]
        assert (result.tp[i], result.fp[i], result.fn[i], result.tn[i]) == (
            c.tp,
            c.fp,
            c.fn,
            c.tn,
        ), f"counts differ at threshold {t}"
        assert result.counts_at(t) == c
        for name in mc.METRIC_NAMES:
            assert result.pooled.get(name)[i] == getattr(c, name)  # exact
            values = [getattr(ci, name) for ci in per_image[i]]
            assert result.per_image_mean.get(name)[i] == statistics.fmean(values)  # exact
            assert result.per_image.get(name)[:, i].tolist() == values
        for k, ci in enumerate(per_image[i]):
            assert result.counts_at(t, image=k) == ci


def grid_probs(rng, shape, thresholds):
    """Random probabilities, a third of them exactly on grid thresholds (incl. 0 and 1)."""
    p = rng.random(shape)
    on_grid = rng.random(shape) < 0.33
    p[on_grid] = rng.choice(np.asarray(thresholds), size=int(on_grid.sum()))
    return p


def test_sweep_single_image_with_values_on_the_grid():
    rng = np.random.default_rng(0)
    y = (rng.random((30, 40)) < 0.3).astype(np.uint8)
    p = grid_probs(rng, (30, 40), ms.DEFAULT_THRESHOLDS)
    p[0, :6] = [0.5, 0.37, 0.0, 1.0, 0.07, 0.29]
    result = ms.threshold_sweep(y, p)
    assert result.n_images == 1
    assert result.thresholds.tolist() == np.linspace(0, 1, 101).tolist()
    assert_sweep_equals_naive(result, [y], [p])
    # With one image, pooled and mean-over-images agree.
    assert np.array_equal(result.pooled.dice, result.per_image_mean.dice)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_sweep_list_of_images_of_different_sizes(dtype):
    rng = np.random.default_rng(1)
    shapes = [(17, 23), (40, 9), (1, 1), (32, 32), (5, 64)]
    truths = [(rng.random(s) < rng.random()).astype(np.uint8) for s in shapes]
    probs = [grid_probs(rng, s, ms.DEFAULT_THRESHOLDS).astype(dtype) for s in shapes]
    probs[0][0, :4] = [0.5, 0.37, 0.0, 1.0]
    truths[3][:] = 0  # an image without nuclei
    probs[3][:] = np.where(rng.random((32, 32)) < 0.5, 0.0, probs[3])
    result = ms.threshold_sweep(truths, probs)
    assert result.n_images == 5
    assert result.image_counts.shape == (5, 101, 4)
    assert_sweep_equals_naive(result, truths, probs)


def test_sweep_batch_array_and_channel_axis():
    rng = np.random.default_rng(2)
    y = (rng.random((4, 12, 10)) < 0.4).astype(np.float32)
    p = grid_probs(rng, (4, 12, 10), ms.DEFAULT_THRESHOLDS).astype(np.float32)
    result = ms.threshold_sweep(y, p)
    assert result.n_images == 4
    assert_sweep_equals_naive(result, list(y), list(p))
    with_channel = ms.threshold_sweep(y[..., None], p[..., None])
    assert np.array_equal(with_channel.image_counts, result.image_counts)
    single = ms.threshold_sweep(y[0][..., None], p[0])
    assert np.array_equal(single.image_counts[0], result.image_counts[0])


@pytest.mark.parametrize(
    "thresholds",
    [
        [0.5],
        [0.0, 1.0],
        [0.1, 0.37, 0.5, 0.9],
        np.linspace(0, 1, 11),
        np.linspace(0.2, 0.8, 7).tolist(),
        np.linspace(0, 1, 1001),
        [0.3, 0.3 + 1e-9, 0.6],  # finer than 2**-16: binary-search fallback
    ],
)
def test_sweep_custom_grids(thresholds):
    rng = np.random.default_rng(3)
    truths = [(rng.random((9, 11)) < 0.5).astype(np.uint8) for _ in range(3)]
    probs = [grid_probs(rng, (9, 11), thresholds) for _ in range(3)]
    result = ms.threshold_sweep(truths, probs, thresholds)
    assert result.thresholds.tolist() == [float(t) for t in thresholds]
    assert_sweep_equals_naive(result, truths, probs)


def test_sweep_matches_binarize_for_float32_edge_values():
    # float32(0.7) < 0.7 and float32(0.3) > 0.3: the sweep and binarize both compare in float64.
    p = np.float32([[0.7, 0.3, 0.29, 0.71]])
    y = np.ones_like(p, dtype=np.uint8)
    result = ms.threshold_sweep(y, p)
    for value in (0.29, 0.3, 0.7, 0.71):
        t = result.thresholds[result.index_of(value)]
        assert result.counts_at(t) == mc.confusion_counts(y, mc.binarize(p, t))


def test_sweep_empty_image_conventions():
    y = np.zeros((4, 4), np.uint8)
    p = np.zeros((4, 4))
    p[0, 0] = 0.6
    result = ms.threshold_sweep(y, p, [0.5, 0.7])
    # At 0.5 one pixel is predicted on an empty truth; at 0.7 both are empty.
    assert result.pooled.dice.tolist() == [0.0, 1.0]
    assert result.pooled.jaccard.tolist() == [0.0, 1.0]
    assert result.pooled.precision.tolist() == [0.0, 1.0]
    assert result.pooled.recall.tolist() == [0.0, 1.0]


def test_pooled_differs_from_mean_over_images():
    big = np.ones((10, 10), np.uint8)
    small = np.zeros((2, 2), np.uint8)
    small[0, 0] = 1
    result = ms.threshold_sweep([big, small], [big * 0.9, np.zeros((2, 2))], [0.5])
    assert result.per_image.dice[:, 0].tolist() == [1.0, 0.0]
    assert result.per_image_mean.dice[0] == 0.5
    assert result.pooled.dice[0] == pytest.approx(200 / 201)


def test_best_threshold():
    y = np.array([[1, 1, 0, 0]])
    p = np.array([[0.8, 0.6, 0.4, 0.2]])
    result = ms.threshold_sweep(y, p)
    # Dice is 1.0 for every t in (0.4, 0.6]; the tie goes to the one closest to 0.5.
    assert result.best_threshold() == 0.5
    assert result.best_threshold("jaccard", pooled=False) == 0.5
    # Recall is 1.0 for every t <= 0.6: closest to 0.5 is 0.5 itself.
    assert result.best_threshold("recall") == 0.5
    # Precision is 1.0 for t in (0.4, 1.0] (above 0.8 nothing is predicted but truth is not
    # empty, so 0.0 there): (0.4, 0.8]; closest to 0.5 is 0.5.
    assert result.best_threshold("precision") == 0.5
    shifted = ms.threshold_sweep(y, np.array([[0.95, 0.9, 0.855, 0.1]]))
    assert shifted.best_threshold() == pytest.approx(0.86)  # (0.855, 0.9]: lowest is closest
    # Equal distance from 0.5 on both sides: the lower threshold wins.
    tie = ms.threshold_sweep(y, np.array([[0.8, 0.3, 0.3, 0.3]]), [0.25, 0.75])
    assert tie.pooled.dice[0] == tie.pooled.dice[1]
    assert tie.best_threshold() == 0.25
    with pytest.raises(ValueError, match="unknown metric"):
        result.best_threshold("f1")  # type: ignore[arg-type]


def test_result_is_read_only():
    result = ms.threshold_sweep(np.ones((3, 3)), np.full((3, 3), 0.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.tp = None  # type: ignore[misc]
    for array in (result.thresholds, result.tp, result.pooled.dice, result.image_counts):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    with pytest.raises(ValueError, match="not on the sweep's grid"):
        result.counts_at(0.505)


@pytest.mark.parametrize(
    ("thresholds", "match"),
    [
        ([0.5, 0.4], "ascending"),
        ([0.4, 0.4], "ascending"),
        ([-0.1, 0.5], r"\[0, 1\]"),
        ([0.5, 1.01], r"\[0, 1\]"),
        ([0.2, float("nan")], r"\[0, 1\]"),
        ([], "non-empty"),
        ([[0.1, 0.2]], "1-D"),
        (["a"], "numbers"),
    ],
)
def test_sweep_threshold_validation(thresholds, match):
    with pytest.raises(ValueError, match=match):
        ms.threshold_sweep(np.ones((2, 2)), np.full((2, 2), 0.5), thresholds)


def test_sweep_input_validation():
    y = np.ones((2, 2))
    with pytest.raises(ValueError, match="outside"):
        ms.threshold_sweep(y, np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="outside"):
        ms.threshold_sweep(y, np.full((2, 2), -0.01))
    with pytest.raises(ValueError, match=r"probs\[1\] contains NaN"):
        ms.threshold_sweep([y, y], [np.full((2, 2), 0.5), np.full((2, 2), np.nan)])
    with pytest.raises(ValueError, match=r"image 1: y_true has shape \(2, 2\).*\(2, 3\)"):
        ms.threshold_sweep([y, y], [np.zeros((2, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="2 image"):
        ms.threshold_sweep([y, y], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="empty list"):
        ms.threshold_sweep([], [])
    with pytest.raises(ValueError, match="shape"):
        ms.threshold_sweep(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


def test_per_image_counts():
    rng = np.random.default_rng(4)
    truths = [rng.random((5, 7)) < 0.5, rng.random((3, 3)) < 0.5]
    preds = [rng.random((5, 7)) < 0.5, rng.random((3, 3)) < 0.5]
    counts = ms.per_image_counts(truths, preds)
    assert counts == [mc.confusion_counts(t, p) for t, p in zip(truths, preds, strict=True)]
    batch = ms.per_image_counts(np.stack([truths[0]] * 2), np.stack([preds[0]] * 2))
    assert batch == [counts[0], counts[0]]
    with pytest.raises(ValueError, match="image 0"):
        ms.per_image_counts([np.zeros((2, 2))], [np.zeros((2, 3))])


def test_metrics_module_does_not_import_tensorflow():
    code = (
        "import sys, segcore.metrics; "
        "bad = [n for n in ('tensorflow', 'keras') if n in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


def test_real_monuseg_masks():
    if not MONUSEG.is_dir():
        pytest.skip(f"MoNuSeg data not found at {MONUSEG} (expected ../shared/data/monuseg)")
    from segcore.data.images import read_mask

    paths = sorted((MONUSEG / "test" / "masks").glob("*.png"))[:2]
    if len(paths) < 2:
        pytest.skip(f"fewer than 2 masks in {MONUSEG / 'test' / 'masks'}")
    import cv2

    for path in paths:
        truth = read_mask(path)
        assert truth.dtype == np.uint8 and truth.ndim == 2 and 0 < truth.mean() < 1
        shifted = np.roll(truth, 3, axis=1)
        eroded = cv2.erode(truth, np.ones((3, 3), np.uint8))
        for pred in (shifted, eroded):
            d, j = mc.dice(truth, pred), mc.jaccard(truth, pred)
            assert 0.3 < d < 1.0
            assert d == pytest.approx(f1_score(truth.ravel(), pred.ravel()), abs=1e-12)
            assert j == pytest.approx(jaccard_score(truth.ravel(), pred.ravel()), abs=1e-12)
            assert j == pytest.approx(d / (2 - d), abs=1e-12)
        # Erosion only removes pixels: perfect precision, and the sweep agrees at 0.5.
        assert mc.precision(truth, eroded) == 1.0
        result = ms.threshold_sweep(truth, eroded.astype(np.float32), [0.5])
        assert result.counts_at(0.5) == mc.confusion_counts(truth, eroded)
