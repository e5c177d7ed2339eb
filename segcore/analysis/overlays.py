"""The Predict page's pictures: colour palette, probability heat map, mask and overlays.

Inputs follow :mod:`segcore.data.images`: images are ``uint8`` RGB ``(H, W, 3)`` (other
layouts are converted with :func:`~segcore.data.images.to_rgb_uint8`), masks are ``(H, W)``
arrays whose nonzero pixels are nucleus, probabilities are ``(H, W)`` reals in ``[0, 1]``.
Every picture returned is a new ``uint8`` RGB ``(H, W, 3)`` array (except
:func:`display_stretch`'s, which returns an image it leaves unchanged as it is).

A dim or flat image (a 12-bit scan in a 16-bit file, which
:func:`~segcore.data.images.read_image` scales by 1/257, looks black) is contrast-stretched
for display by :func:`display_stretch`; the pictures show it, the model never does.

Colours, chosen to stay distinguishable with colour-vision deficiencies:

* :func:`heatmap` uses OpenCV's *viridis* colormap (:data:`HEATMAP_COLORMAP`), which is
  perceptually uniform and whose lightness increases monotonically from 0 to 1, so it reads
  correctly with any colour-vision deficiency and in greyscale.
* The overlays use :data:`PALETTE`, taken from the Okabe–Ito palette (Okabe & Ito, *Color
  Universal Design*, 2008): true positives bluish green ``(0, 158, 115)``, false positives
  vermillion ``(213, 94, 0)``, false negatives blue ``(0, 114, 178)``, the prediction yellow
  ``(240, 228, 66)`` and the ground-truth outline white ``(255, 255, 255)``. The property
  checked by the tests: after simulating protanopia, deuteranopia and tritanopia (the
  Machado, Oliveira & Fernandes 2009 matrices at severity 1, applied in linear sRGB), every
  pair of these five colours is at least 30 CIELAB ΔE*76 apart for normal vision, protanopia
  and deuteranopia, and at least 15 apart for tritanopia (the closest pair there is true
  positive/false negative, about 17). The three fill colours have similar lightness (L* about
  45-60), so they are told apart by hue, not by lightness; the outlines are much lighter.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

from segcore.analysis.checks import mask_like, probability_map
from segcore.data.images import check_same_size, to_binary_mask, to_rgb_uint8

__all__ = [
    "DIM_LEVEL",
    "DISPLAY_PERCENTILES",
    "FLAT_RANGE",
    "HEATMAP_COLORMAP",
    "PALETTE",
    "PaletteColor",
    "comparison_overlay",
    "display_stretch",
    "heatmap",
    "instance_outlines",
    "legend",
    "mask_image",
    "prediction_overlay",
]

# --------------------------------------------------------------------------------------------
# Palette
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaletteColor:
    """One named colour of :data:`PALETTE`, with what a legend should say about it.

    Attributes:
        key: the key in :data:`PALETTE`, e.g. ``"true_positive"``.
        label: a short legend text, e.g. ``"True positive"``.
        description: one sentence saying which pixels get this colour.
        rgb: the colour as ``(red, green, blue)``, each 0-255.
    """

    key: str
    label: str
    description: str
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        """The colour as ``"#RRGGBB"`` (e.g. for a CSS or Plotly legend)."""
        return "#{:02X}{:02X}{:02X}".format(*self.rgb)


PALETTE: Mapping[str, PaletteColor] = MappingProxyType(
    {
        color.key: color
        for color in (
            PaletteColor(
                "true_positive",
                "True positive",
                "Predicted nucleus that is nucleus in the ground truth (fill).",
                (0, 158, 115),
            ),
            PaletteColor(
                "false_positive",
                "False positive",
                "Predicted nucleus that is background in the ground truth (fill).",
                (213, 94, 0),
            ),
            PaletteColor(
                "false_negative",
                "False negative",
                "Ground-truth nucleus the model missed (fill).",
                (0, 114, 178),
            ),
            PaletteColor(
                "prediction",
                "Prediction",
                "Outline of the predicted nuclei; without ground truth, also their fill.",
                (240, 228, 66),
            ),
            PaletteColor(
                "truth",
                "Ground truth",
                "Outline of the ground-truth nuclei.",
                (255, 255, 255),
            ),
        )
    }
)
"""The overlay colours by key (read-only): Okabe–Ito bluish green, vermillion, blue, yellow,
plus white. See the module docstring for the colour-vision check they pass."""

HEATMAP_COLORMAP = "viridis"
"""Name of the colormap :func:`heatmap` uses (Plotly calls it ``"Viridis"``), for a colour bar."""


def legend(*, truth: bool, outline: bool = True) -> tuple[PaletteColor, ...]:
    """The palette entries an overlay uses, in legend order.

    Args:
        truth: ``True`` for :func:`comparison_overlay` (with ground truth), ``False`` for
            :func:`prediction_overlay`.
        outline: whether the overlay was drawn with outlines.

    Returns:
        The :class:`PaletteColor` entries to show.
    """
    if not truth:
        return (PALETTE["prediction"],)
    keys = ["true_positive", "false_positive", "false_negative"]
    if outline:
        keys += ["prediction", "truth"]
    return tuple(PALETTE[key] for key in keys)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def _check_opacity(opacity) -> float:
    if isinstance(opacity, bool) or not isinstance(opacity, int | float | np.number):
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}")
    value = float(opacity)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    return value


def heatmap(probabilities) -> np.ndarray:
    """Colours a probability map with the viridis colormap (dark purple 0 → yellow 1).

    Each probability ``p`` is mapped to entry ``round(255 · p)`` of OpenCV's
    ``COLORMAP_VIRIDIS``, so the picture is perceptually uniform and its lightness grows
    with ``p``.

    Args:
        probabilities: ``(H, W)`` or ``(H, W, 1)`` real array with values in ``[0, 1]``.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.

    Raises:
        InvalidImageError: the array has another shape, is empty, is not real, or holds
            values outside ``[0, 1]`` or NaN.
    """
    prob = probability_map(probabilities)
    levels = np.rint(prob * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS)
    return np.ascontiguousarray(bgr[..., ::-1])


def mask_image(mask) -> np.ndarray:
    """Renders a binary mask as white nuclei on black.

    Args:
        mask: ``(H, W)`` mask (or an ``(H, W, C)`` rendering); nonzero pixels are nucleus.

    Returns:
        ``uint8`` RGB ``(H, W, 3)`` holding 255 on nuclei and 0 elsewhere.

    Raises:
        InvalidImageError: the mask has another shape or is empty.
    """
    binary = to_binary_mask(mask, name="mask")
    return np.repeat((binary * np.uint8(255))[..., None], 3, axis=2)


DISPLAY_PERCENTILES = (0.5, 99.5)
"""The percentiles of an image's values that :func:`display_stretch` maps to 0 and 255."""

DIM_LEVEL = 128
"""An image whose upper percentile (:data:`DISPLAY_PERCENTILES`) is below this is *dim*."""

FLAT_RANGE = 48
"""An image whose percentiles are less than this apart is *flat* (low dynamic range). The
built-in H&E samples span about 200 (from 10-30 to 230-250)."""

_STRETCH_PIXELS = 1_000_000  # percentiles are taken on about this many pixels, evenly spread


def display_stretch(image) -> tuple[np.ndarray, str | None]:
    """The image as the pictures should show it, and a note when it was changed.

    A *dim* image (:data:`DIM_LEVEL`) or a *flat* one (:data:`FLAT_RANGE`) would show black or
    grey: it is stretched linearly so that its percentiles :data:`DISPLAY_PERCENTILES` become 0
    and 255, with the same mapping for the three channels so colours keep their balance. Any
    other image (every ordinary H&E scan) is returned unchanged, not copied. Only for display:
    the model and the measurements use the image as it is.

    Args:
        image: an image (see :func:`~segcore.data.images.to_rgb_uint8`).

    Returns:
        ``(picture, note)``: ``uint8`` RGB ``(H, W, 3)`` and a caption saying what was done, or
        ``None`` when nothing was.
    """
    rgb = to_rgb_uint8(image)
    pixels = rgb.reshape(-1, 3)
    low, high = np.percentile(
        pixels[:: max(1, len(pixels) // _STRETCH_PIXELS)], DISPLAY_PERCENTILES
    )
    if high <= low or (high >= DIM_LEVEL and high - low >= FLAT_RANGE):
        return rgb, None
    levels = (np.arange(256, dtype=np.float64) - low) * (255.0 / (high - low))
    picture = cv2.LUT(rgb, np.clip(np.round(levels), 0, 255).astype(np.uint8))
    kind = "dim" if high < DIM_LEVEL else "low in contrast"
    note = (
        f"The image is {kind} (its values span {low:.0f}–{high:.0f} of 0–255), so its pictures "
        "are shown contrast-stretched; the model sees the image as it is."
    )
    return picture, note


def _blend(image: np.ndarray, layer: np.ndarray, opacity: float) -> np.ndarray:
    """``(1 - opacity) · image + opacity · layer``, rounded; pixels where the two agree are
    returned unchanged, and ``opacity`` 0 or 1 gives ``image`` or ``layer`` exactly."""
    if opacity == 0.0:
        return image.copy()
    if opacity == 1.0:
        return layer
    return cv2.addWeighted(image, 1.0 - opacity, layer, opacity, 0.0)


def _draw_outline(picture: np.ndarray, mask: np.ndarray, color: PaletteColor) -> None:
    """Draws the 1-pixel outlines (outer and hole boundaries) of ``mask``'s components in
    place, on the mask's own boundary pixels."""
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    if contours:
        cv2.drawContours(picture, contours, -1, color.rgb, thickness=1, lineType=cv2.LINE_8)


def comparison_overlay(
    image, truth, pred, *, opacity: float = 0.5, outline: bool = True
) -> np.ndarray:
    """Shows a prediction against its ground truth over the image.

    True-positive, false-positive and false-negative pixels are filled with the
    :data:`PALETTE` colours ``true_positive``, ``false_positive`` and ``false_negative``,
    alpha-blended with the image (``(1 - opacity) · image + opacity · colour``, rounded);
    true-negative pixels keep the image's colour. With ``outline``, the 1-pixel outlines of the
    ground-truth nuclei (``truth`` colour) and then of the predicted nuclei (``prediction``
    colour, drawn on top where the two meet) are drawn opaquely over the result, on each
    mask's own boundary pixels, holes included.

    Args:
        image: the image, ``uint8`` RGB ``(H, W, 3)`` (other layouts are converted with
            :func:`~segcore.data.images.to_rgb_uint8`).
        truth: ground-truth mask ``(H, W)``; nonzero pixels are nucleus.
        pred: predicted binary mask ``(H, W)``; nonzero pixels are nucleus (threshold
            probabilities first, e.g. with
            :meth:`~segcore.analysis.explorer.ThresholdExplorer.mask_at`).
        opacity: weight of the fill colours in ``[0, 1]``; 0 leaves the image unchanged under
            the outlines, 1 paints the fills opaquely.
        outline: draw the outlines.

    Returns:
        A new ``uint8`` RGB ``(H, W, 3)`` array.

    Raises:
        InvalidImageError: an input has a bad shape, or the masks' size differs from the
            image's.
        ValueError: ``opacity`` is not a number in ``[0, 1]``.
    """
    alpha = _check_opacity(opacity)
    rgb = to_rgb_uint8(image, name="image")
    true_mask = mask_like(truth, "ground truth", rgb)
    pred_mask = mask_like(pred, "prediction", rgb)
    # code: 0 true negative, 1 false positive, 2 false negative, 3 true positive
    code = true_mask * np.uint8(2) + pred_mask
    layer = rgb.copy()
    for value, key in ((1, "false_positive"), (2, "false_negative"), (3, "true_positive")):
        layer[code == value] = PALETTE[key].rgb
    picture = _blend(rgb, layer, alpha)
    if outline:
        _draw_outline(picture, true_mask, PALETTE["truth"])
        _draw_outline(picture, pred_mask, PALETTE["prediction"])
    return picture


def prediction_overlay(image, pred, *, opacity: float = 0.5, outline: bool = True) -> np.ndarray:
    """Shows a prediction over the image when there is no ground truth.

    Predicted pixels are filled with the :data:`PALETTE` colour ``prediction``, alpha-blended
    with the image as in :func:`comparison_overlay`; with ``outline``, the 1-pixel outlines of
    the predicted nuclei are drawn opaquely in the same colour.

    Args:
        image: the image, ``uint8`` RGB ``(H, W, 3)`` (other layouts are converted).
        pred: predicted binary mask ``(H, W)``; nonzero pixels are nucleus.
        opacity: weight of the fill colour in ``[0, 1]``; 0 leaves the image unchanged under
            the outlines.
        outline: draw the outlines.

    Returns:
        A new ``uint8`` RGB ``(H, W, 3)`` array.

    Raises:
        InvalidImageError: an input has a bad shape, or the mask's size differs from the
            image's.
        ValueError: ``opacity`` is not a number in ``[0, 1]``.
    """
    alpha = _check_opacity(opacity)
    rgb = to_rgb_uint8(image, name="image")
    pred_mask = mask_like(pred, "prediction", rgb)
    layer = rgb.copy()
    layer[pred_mask != 0] = PALETTE["prediction"].rgb
    picture = _blend(rgb, layer, alpha)
    if outline:
        _draw_outline(picture, pred_mask, PALETTE["prediction"])
    return picture


def instance_outlines(image, labels, *, color: str = "prediction") -> np.ndarray:
    """The image with each nucleus of ``labels`` outlined (1 pixel, inside the nucleus), so
    touching nuclei show the line between them.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)`` (other layouts are converted).
        labels: ``(H, W)`` integer instance labels, 0 = background.
        color: the :data:`PALETTE` key of the outline colour, defaults to ``"prediction"``.

    Returns:
        A new ``uint8`` RGB ``(H, W, 3)`` array.

    Raises:
        InvalidImageError: bad shapes, or the labels' size differs from the image's.
    """
    rgb = to_rgb_uint8(image, name="image").copy()
    labels = np.asarray(labels)
    check_same_size(rgb, labels, name="nucleus labels")
    rgb[find_boundaries(labels, mode="inner")] = PALETTE[color].rgb
    return rgb
