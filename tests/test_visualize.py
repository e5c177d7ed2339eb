"""Pictures, palette, threshold explorer and downloads of segcore.analysis.visualize (small
arrays)."""

from __future__ import annotations

import csv
import io
import itertools
import pickle

import cv2
import numpy as np
import pytest

from segcore.analysis.visualize import (
    EXPLORER_THRESHOLDS,
    NO_TRUTH_REASON,
    PALETTE,
    ThresholdExplorer,
    comparison_overlay,
    heatmap,
    legend,
    mask_image,
    mask_png,
    metrics_csv,
    png_bytes,
    prediction_overlay,
)
from segcore.data.images import read_image, read_mask
from segcore.errors import InvalidImageError
from segcore.evaluation.evaluate import count_nuclei
from segcore.metrics.counts import binarize, confusion_counts
from segcore.metrics.sweep import threshold_sweep

TP = PALETTE["true_positive"].rgb
FP = PALETTE["false_positive"].rgb
FN = PALETTE["false_negative"].rgb
PRED = PALETTE["prediction"].rgb
TRUTH = PALETTE["truth"].rgb


def random_image(shape=(32, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def square(shape, top, left, size) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


def ring(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a filled rectangle mask (the pixels a 1-px outline covers)."""
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8), borderValue=0)
    return (mask != 0) & (inner == 0)


@pytest.fixture
def masks():
    """Truth and prediction overlapping in rows 8-11 of columns 10-19: TP, FP and FN pixels."""
    truth = np.zeros((32, 40), np.uint8)
    pred = np.zeros((32, 40), np.uint8)
    truth[4:12, 10:20] = 1
    pred[8:16, 10:20] = 1
    return truth, pred


# --------------------------------------------------------------------------------------------
# Palette: colour-vision check
# --------------------------------------------------------------------------------------------

# Machado, Oliveira & Fernandes (2009), severity 1.0, for linear sRGB.
CVD = {
    "normal": np.eye(3),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "tritanopia": np.array(
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ]
    ),
}
MIN_DELTA_E = {"normal": 30.0, "protanopia": 30.0, "deuteranopia": 30.0, "tritanopia": 15.0}


def simulated_lab(rgb, deficiency: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour as seen with ``deficiency`` (Machado simulation)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    linear = np.clip(CVD[deficiency] @ linear, 0.0, 1.0)
    xyz = (
        np.array(
            [
                [0.4124564, 0.3575761, 0.1804375],
                [0.2126729, 0.7151522, 0.0721750],
                [0.0193339, 0.1191920, 0.9503041],
            ]
        )
        @ linear
    )
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_simulation_sanity():
    assert np.allclose(simulated_lab((255, 255, 255), "normal"), (100, 0, 0), atol=0.01)
    # Red and green, distinct for normal vision, nearly merge for a deuteranope.
    red, green = (200, 80, 0), (90, 140, 0)
    normal = np.linalg.norm(simulated_lab(red, "normal") - simulated_lab(green, "normal"))
    deutan = np.linalg.norm(
        simulated_lab(red, "deuteranopia") - simulated_lab(green, "deuteranopia")
    )
    assert normal > 40 and deutan < 10


@pytest.mark.parametrize("deficiency", list(CVD))
def test_palette_colours_stay_distinct_under_colour_blindness(deficiency):
    for a, b in itertools.combinations(PALETTE.values(), 2):
        delta = np.linalg.norm(simulated_lab(a.rgb, deficiency) - simulated_lab(b.rgb, deficiency))
        assert delta >= MIN_DELTA_E[deficiency], (a.key, b.key, deficiency, delta)


def test_palette_entries():
    assert set(PALETTE) == {
        "true_positive",
        "false_positive",
        "false_negative",
        "prediction",
        "truth",
    }
    assert TP == (0, 158, 115) and FP == (213, 94, 0) and FN == (0, 114, 178)
    assert PALETTE["true_positive"].hex == "#009E73"
    for key, color in PALETTE.items():
        assert color.key == key and color.label and color.description
    with pytest.raises(TypeError):
        PALETTE["x"] = PALETTE["truth"]  # type: ignore[index]
    assert [c.key for c in legend(truth=True)] == [
        "true_positive",
        "false_positive",
        "false_negative",
        "prediction",
        "truth",
    ]
    assert [c.key for c in legend(truth=True, outline=False)] == [
        "true_positive",
        "false_positive",
        "false_negative",
    ]
    assert [c.key for c in legend(truth=False)] == ["prediction"]


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def test_heatmap_is_viridis_with_increasing_lightness():
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :]
    picture = heatmap(ramp)
    assert picture.shape == (1, 256, 3) and picture.dtype == np.uint8
    assert np.abs(picture[0, 0].astype(int) - (68, 1, 84)).max() <= 2  # viridis dark purple
    assert np.abs(picture[0, -1].astype(int) - (253, 231, 37)).max() <= 2  # viridis yellow
    lightness = cv2.cvtColor(picture, cv2.COLOR_RGB2LAB)[0, :, 0].astype(int)
    assert np.all(np.diff(lightness) >= 0) and lightness[-1] - lightness[0] > 150
    assert heatmap(np.full((3, 4, 1), 0.5)).shape == (3, 4, 3)


@pytest.mark.parametrize(
    "bad", [np.full((4, 4), 1.5), np.full((4, 4), np.nan), np.zeros((4, 4, 3)), np.zeros((0, 4))]
)
def test_heatmap_rejects_bad_probabilities(bad):
    with pytest.raises(InvalidImageError):
        heatmap(bad)


def test_mask_image():
    mask = np.array([[0, 1], [255, 0]], np.uint8)
    picture = mask_image(mask)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert picture[0, 1].tolist() == [255, 255, 255] and picture[1, 0].tolist() == [255] * 3
    assert picture[0, 0].tolist() == [0, 0, 0]


def test_comparison_overlay_colours_at_full_opacity(masks):
    truth, pred = masks
    image = random_image()
    out = comparison_overlay(image, truth, pred, opacity=1.0, outline=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    t, p = truth != 0, pred != 0
    assert np.all(out[t & p] == TP)
    assert np.all(out[~t & p] == FP)
    assert np.all(out[t & ~p] == FN)
    assert np.array_equal(out[~t & ~p], image[~t & ~p])
    assert (t & p).any() and (~t & p).any() and (t & ~p).any()


def test_comparison_overlay_opacity_zero_is_the_image(masks):
    truth, pred = masks
    image = random_image()
    out = comparison_overlay(image, truth, pred, opacity=0.0, outline=False)
    assert np.array_equal(out, image)
    assert out is not image
    assert np.array_equal(prediction_overlay(image, pred, opacity=0, outline=False), image)


def test_comparison_overlay_blends(masks):
    truth, pred = masks
    image = random_image()
    out = comparison_overlay(image, truth, pred, opacity=0.25, outline=False)
    expected = np.rint(0.75 * image[8, 12].astype(float) + 0.25 * np.array(TP))  # a TP pixel
    assert np.abs(out[8, 12].astype(int) - expected).max() <= 1
    background = (truth == 0) & (pred == 0)
    assert np.array_equal(out[background], image[background])


def test_comparison_overlay_outlines():
    shape = (40, 48)
    truth = square(shape, 4, 4, 10)
    pred = square(shape, 22, 26, 12)  # a separate false positive, so the outlines do not meet
    image = random_image(shape)
    out = comparison_overlay(image, truth, pred, opacity=1.0, outline=True)
    assert np.all(out[ring(truth)] == TRUTH)
    assert np.all(out[ring(pred)] == PRED)
    interior_t = (truth != 0) & ~ring(truth)
    interior_p = (pred != 0) & ~ring(pred)
    assert np.all(out[interior_t] == FN) and np.all(out[interior_p] == FP)
    outside = (truth == 0) & (pred == 0)
    assert np.array_equal(out[outside], image[outside])  # outlines stay on the masks' pixels
    # Where the outlines coincide, the prediction's is on top.
    same = comparison_overlay(image, truth, truth, opacity=0.0)
    assert np.all(same[ring(truth)] == PRED)


def test_outline_of_a_hole():
    outer = square((20, 20), 2, 2, 12)
    mask = outer.copy()
    mask[6:10, 6:10] = 0
    out = prediction_overlay(np.zeros((20, 20, 3), np.uint8), mask, opacity=0.0)
    hole = square((20, 20), 6, 6, 4)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    hole_border = (cv2.dilate(hole, cross) != 0) & (mask != 0)  # 4-neighbours of the hole
    assert np.all(out[hole_border] == PRED)
    drawn = out.any(axis=2)
    assert np.array_equal(drawn, ring(outer) | hole_border)


def test_prediction_overlay():
    shape = (24, 24)
    pred = square(shape, 5, 5, 8)
    image = random_image(shape, seed=3)
    out = prediction_overlay(image, pred, opacity=1.0, outline=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(out[pred != 0] == PRED)
    assert np.array_equal(out[pred == 0], image[pred == 0])
    outlined = prediction_overlay(image, pred, opacity=0.0, outline=True)
    assert np.all(outlined[ring(pred)] == PRED)
    inner = (pred != 0) & ~ring(pred)
    assert np.array_equal(outlined[inner], image[inner])


def test_overlay_inputs_are_checked(masks):
    truth, pred = masks
    image = random_image()
    with pytest.raises(InvalidImageError, match="same size"):
        comparison_overlay(image, truth[:-1], pred)
    with pytest.raises(InvalidImageError, match="same size"):
        prediction_overlay(image, pred[:, :-1])
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="opacity"):
            comparison_overlay(image, truth, pred, opacity=bad)
    gray = comparison_overlay(image[..., 0], truth, pred)  # greyscale image is converted
    assert gray.shape == (32, 40, 3)


# --------------------------------------------------------------------------------------------
# ThresholdExplorer
# --------------------------------------------------------------------------------------------


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
        "nuclei_pred": count_nuclei(mask),
        "nuclei_true": count_nuclei(truth),
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
            "nuclei_pred": count_nuclei(binarize(prob, t)),
            "reason": NO_TRUTH_REASON,
        }
    assert "ground-truth" in NO_TRUTH_REASON
    assert explorer.curve() is None and explorer.best_threshold() is None
    assert explorer.counts_at(0.5) is None and explorer.nuclei_true is None


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


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def test_metrics_csv_round_trips():
    rows = [
        {"image": 'é, "quoted".png', "threshold": 0.35, "dice": 0.1 + 0.2, "tp": 3},
        {"image": "b.png", "threshold": 0.5, "nuclei_pred": np.int64(7), "note": None},
    ]
    data = metrics_csv(rows)
    assert isinstance(data, bytes)
    read = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert list(read[0]) == ["image", "threshold", "dice", "tp", "nuclei_pred", "note"]
    assert read[0]["image"] == 'é, "quoted".png'
    assert float(read[0]["dice"]) == 0.1 + 0.2  # exact
    assert read[0]["nuclei_pred"] == "" and read[1]["tp"] == "" and read[1]["note"] == ""
    assert int(read[1]["nuclei_pred"]) == 7 and float(read[1]["threshold"]) == 0.5
    with pytest.raises(ValueError, match="row"):
        metrics_csv([])


def test_metrics_csv_of_explorer_rows(probs_and_truth):
    prob, truth = probs_and_truth
    explorer = ThresholdExplorer(prob, truth)
    rows = [explorer.metrics_at(0.5), ThresholdExplorer(prob).metrics_at(0.5)]
    read = list(csv.DictReader(io.StringIO(metrics_csv(rows).decode("utf-8"), newline="")))
    assert float(read[0]["dice"]) == rows[0]["dice"]
    assert read[1]["reason"] == NO_TRUTH_REASON


def test_png_bytes_round_trip():
    image = random_image((16, 12))
    assert np.array_equal(read_image(png_bytes(image)), image)
    gray = image[..., 0]
    assert np.array_equal(read_image(png_bytes(gray))[..., 0], gray)
    for bad in (image.astype(np.float32), image[..., :2], np.zeros((0, 3), np.uint8)):
        with pytest.raises(InvalidImageError):
            png_bytes(bad)


def test_mask_png_round_trip():
    mask = square((16, 12), 3, 2, 5)
    data = mask_png(mask)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.ndim == 2 and set(np.unique(decoded)) == {0, 255}
    assert np.array_equal(read_mask(data), mask)
