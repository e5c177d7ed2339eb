"""Palette, heat map, mask picture and overlays of segcore.analysis.overlays (small arrays)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from segcore.analysis.overlays import (
    PALETTE,
    comparison_overlay,
    display_stretch,
    heatmap,
    legend,
    mask_image,
    prediction_overlay,
)
from segcore.errors import InvalidImageError

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


def test_display_stretch_brightens_a_dim_image_and_keeps_its_colour_balance():
    rng = np.random.default_rng(3)
    dim = rng.integers(0, 17, (50, 60, 3), dtype=np.uint8)  # a 12-bit scan / 257
    dim[..., 0] //= 2  # less red than green and blue
    picture, note = display_stretch(dim)
    assert "dim" in note and picture.shape == dim.shape and picture.dtype == np.uint8
    assert picture.max() == 255 and picture[..., 0].mean() < picture[..., 1].mean() / 1.5
    order = np.argsort(dim.ravel(), kind="stable")
    assert np.all(np.diff(picture.ravel()[order].astype(int)) >= 0)  # one monotone mapping


def test_display_stretch_widens_a_flat_image_and_leaves_ordinary_ones_alone():
    flat = np.random.default_rng(4).integers(150, 180, (40, 40, 3), dtype=np.uint8)
    picture, note = display_stretch(flat)
    assert "contrast" in note and picture.min() == 0 and picture.max() == 255
    ordinary = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    picture, note = display_stretch(ordinary)
    assert note is None and np.shares_memory(picture, ordinary)  # not copied
    constant = np.full((8, 8, 3), 3, np.uint8)
    assert display_stretch(constant)[1] is None  # nothing to stretch
