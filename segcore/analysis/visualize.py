"""Pictures, per-image threshold exploration and downloads for the Predict page (NumPy + OpenCV).

This module imports neither Streamlit nor TensorFlow: pages call one function here and render
what it returns. Inputs follow :mod:`segcore.data.images`: images are ``uint8`` RGB ``(H, W, 3)``
(other layouts are converted with :func:`~segcore.data.images.to_rgb_uint8`), masks are ``(H, W)``
arrays whose nonzero pixels are nucleus, probabilities are ``(H, W)`` reals in ``[0, 1]``.
Every picture returned is a new ``uint8`` RGB ``(H, W, 3)`` array.

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

:class:`ThresholdExplorer` holds one image's probabilities (and optional ground truth) and
answers "what are the metrics at this threshold?" without running the model again.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from segcore.data.images import encode_png, to_binary_mask, to_rgb_uint8
from segcore.errors import InvalidImageError
from segcore.evaluation.evaluate import count_nuclei
from segcore.metrics.counts import (
    ConfusionCounts,
    MetricName,
    binarize,
    check_threshold,
    confusion_counts,
)
from segcore.metrics.sweep import SweepResult, threshold_sweep

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


def _probability_map(probabilities, name: str = "probabilities") -> np.ndarray:
    """Returns ``probabilities`` as a 2-D float32/float64 array checked to lie in ``[0, 1]``."""
    array = np.asarray(probabilities)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise InvalidImageError(
            f"{name}: expected a non-empty probability map of shape (H, W), got {array.shape}"
        )
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InvalidImageError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32 if array.dtype == np.float16 else np.float64)
    low, high = array.min(), array.max()
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise InvalidImageError(
            f"{name}: values must be probabilities in [0, 1] (after a sigmoid), got min "
            f"{float(low):g} and max {float(high):g}"
        )
    return array


def _mask_of_size(mask, name: str, shape: tuple[int, int]) -> np.ndarray:
    """Returns ``mask`` as ``uint8`` 0/1 ``(H, W)``, checked to have the given H×W."""
    binary = to_binary_mask(mask, name=name)
    if binary.shape != shape:
        raise InvalidImageError(
            f"{name}: the mask is {binary.shape[1]}×{binary.shape[0]} but the image is "
            f"{shape[1]}×{shape[0]}; they must have the same size"
        )
    return np.ascontiguousarray(binary)


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
    prob = _probability_map(probabilities)
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
            probabilities first, e.g. with :meth:`ThresholdExplorer.mask_at`).
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
    true_mask = _mask_of_size(truth, "ground truth", rgb.shape[:2])
    pred_mask = _mask_of_size(pred, "prediction", rgb.shape[:2])
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
    pred_mask = _mask_of_size(pred, "prediction", rgb.shape[:2])
    layer = rgb.copy()
    layer[pred_mask != 0] = PALETTE["prediction"].rgb
    picture = _blend(rgb, layer, alpha)
    if outline:
        _draw_outline(picture, pred_mask, PALETTE["prediction"])
    return picture


# --------------------------------------------------------------------------------------------
# Threshold exploration
# --------------------------------------------------------------------------------------------

EXPLORER_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
"""Grid swept by :class:`ThresholdExplorer`: 0.00, 0.01, …, 1.00, each the float closest to
its decimal (``0.35`` is the literal ``0.35``, which ``np.linspace`` misses by one ulp for ten
of the values); read-only."""
EXPLORER_THRESHOLDS.setflags(write=False)

_NUCLEI_CACHE_SIZE = 256
NO_TRUTH_REASON = (
    "no ground-truth mask was given, so Dice, Jaccard, precision, recall and the pixel counts "
    "cannot be computed; only the predicted nuclei are counted"
)
"""The ``reason`` :meth:`ThresholdExplorer.metrics_at` gives without ground truth."""


@dataclass(frozen=True, eq=False)
class ThresholdCurve:
    """Metrics of one image at every threshold of :data:`EXPLORER_THRESHOLDS`.

    Attributes:
        thresholds: float64 ``(101,)``, 0.00 to 1.00.
        dice: Dice at each threshold, float64 ``(101,)``.
        jaccard: Jaccard at each threshold.
        precision: precision at each threshold.
        recall: recall at each threshold.
        best_threshold: the threshold of highest Dice (ties: closest to 0.5, then the lower).
            Jaccard is an increasing function of Dice, so it peaks there too.
        best_dice: Dice at ``best_threshold``.
        best_jaccard: Jaccard at ``best_threshold``.
    """

    thresholds: np.ndarray
    dice: np.ndarray
    jaccard: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    best_threshold: float
    best_dice: float
    best_jaccard: float


class ThresholdExplorer:
    """Metrics of one predicted image at any threshold, without running the model again.

    Built once per image from its probability map (and ground truth, when there is one):
    the constructor runs one :func:`~segcore.metrics.sweep.threshold_sweep` over
    :data:`EXPLORER_THRESHOLDS` and counts the ground-truth nuclei. Afterwards a threshold
    on that grid costs a table look-up plus one binarisation and connected-component count
    (cached per threshold); any other threshold in ``[0, 1]`` is counted directly, so every
    result is exact: it equals ``confusion_counts(truth, binarize(probabilities, t))``.

    The object is safe to share between threads and can be pickled (caches are dropped).

    Args:
        probabilities: ``(H, W)`` or ``(H, W, 1)`` probability map in ``[0, 1]``.
        truth: optional ground-truth mask of the same H×W; nonzero pixels are nucleus.

    Raises:
        InvalidImageError: the probability map has a bad shape or values outside ``[0, 1]``,
            or the mask's size differs from it.
    """

    def __init__(self, probabilities, truth=None) -> None:
        prob = np.array(_probability_map(probabilities))  # a private copy
        prob.setflags(write=False)
        self._prob = prob
        self._truth: np.ndarray | None = None
        self._sweep: SweepResult | None = None
        self._nuclei_true: int | None = None
        if truth is not None:
            mask = _mask_of_size(truth, "ground truth", prob.shape)
            mask.setflags(write=False)
            self._truth = mask
            self._sweep = threshold_sweep(mask, prob, EXPLORER_THRESHOLDS)
            self._nuclei_true = count_nuclei(mask)
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = threading.Lock()
        self._nuclei: OrderedDict[float, int] = OrderedDict()
        self._last_mask: tuple[float, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_nuclei", "_last_mask"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self._prob.shape

    @property
    def probabilities(self) -> np.ndarray:
        """The probability map (read-only)."""
        return self._prob

    @property
    def truth(self) -> np.ndarray | None:
        """The ground truth as ``uint8`` 0/1 (read-only), or ``None``."""
        return self._truth

    @property
    def has_truth(self) -> bool:
        """Whether a ground-truth mask was given."""
        return self._truth is not None

    @property
    def reason(self) -> str | None:
        """Why only the nucleus count is available (:data:`NO_TRUTH_REASON`), or ``None``
        when there is ground truth."""
        return None if self.has_truth else NO_TRUTH_REASON

    @property
    def sweep(self) -> SweepResult | None:
        """The sweep over :data:`EXPLORER_THRESHOLDS`, or ``None`` without ground truth."""
        return self._sweep

    @property
    def nuclei_true(self) -> int | None:
        """Ground-truth nuclei (8-connected components), or ``None`` without ground truth."""
        return self._nuclei_true

    def mask_at(self, threshold: float) -> np.ndarray:
        """The binary prediction at ``threshold`` (rule ``prob >= threshold``).

        The last mask is cached, so calling this and :meth:`metrics_at` with the same
        threshold binarises once.

        Args:
            threshold: a number in ``[0, 1]``.

        Returns:
            A read-only ``uint8`` 0/1 ``(H, W)`` array (copy it to modify it).

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        key = float(check_threshold(threshold))
        with self._lock:
            last = self._last_mask
        if last is not None and last[0] == key:
            return last[1]
        mask = binarize(self._prob, key)
        mask.setflags(write=False)
        with self._lock:
            self._last_mask = (key, mask)
        return mask

    def nuclei_at(self, threshold: float) -> int:
        """Predicted nuclei at ``threshold``: 8-connected components of :meth:`mask_at`
        (as :func:`segcore.evaluation.evaluate.count_nuclei`), cached per threshold.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        key = float(check_threshold(threshold))
        with self._lock:
            if key in self._nuclei:
                self._nuclei.move_to_end(key)
                return self._nuclei[key]
        count = count_nuclei(self.mask_at(key))
        with self._lock:
            self._nuclei[key] = count
            while len(self._nuclei) > _NUCLEI_CACHE_SIZE:
                self._nuclei.popitem(last=False)
        return count

    def counts_at(self, threshold: float) -> ConfusionCounts | None:
        """Pixel counts at ``threshold``, or ``None`` without ground truth.

        Read from the sweep when ``threshold`` is exactly a value of
        :data:`EXPLORER_THRESHOLDS`, else counted from :meth:`mask_at`; both are exact.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        value = check_threshold(threshold)
        if self._sweep is None:
            return None
        i = round(float(value) * 100)
        if EXPLORER_THRESHOLDS[i] == value:
            s = self._sweep
            return ConfusionCounts(int(s.tp[i]), int(s.fp[i]), int(s.fn[i]), int(s.tn[i]))
        return confusion_counts(self._truth, self.mask_at(float(value)))

    def metrics_at(self, threshold: float) -> dict[str, Any]:
        """Metrics of the prediction at ``threshold``, as plain Python numbers.

        Args:
            threshold: a number in ``[0, 1]``.

        Returns:
            With ground truth: ``threshold``, ``dice``, ``jaccard``, ``precision``,
            ``recall`` (floats; zero divisions as in :mod:`segcore.metrics`), ``tp``,
            ``fp``, ``fn``, ``tn``, ``nuclei_pred`` and ``nuclei_true`` (ints). Without:
            ``threshold``, ``nuclei_pred`` and ``reason`` (:data:`NO_TRUTH_REASON`).

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        value = float(check_threshold(threshold))
        nuclei_pred = self.nuclei_at(value)
        counts = self.counts_at(value)
        if counts is None:
            return {"threshold": value, "nuclei_pred": nuclei_pred, "reason": NO_TRUTH_REASON}
        return {
            "threshold": value,
            **counts.as_dict(),
            "nuclei_pred": nuclei_pred,
            "nuclei_true": self._nuclei_true,
        }

    def curve(self) -> ThresholdCurve | None:
        """Dice, Jaccard, precision and recall over :data:`EXPLORER_THRESHOLDS`, with the best
        threshold marked; ``None`` without ground truth."""
        if self._sweep is None:
            return None
        curves = self._sweep.pooled  # one image: pooled == that image's curves
        best = self._sweep.best_threshold("dice")
        i = self._sweep.index_of(best)
        return ThresholdCurve(
            thresholds=self._sweep.thresholds,
            dice=curves.dice,
            jaccard=curves.jaccard,
            precision=curves.precision,
            recall=curves.recall,
            best_threshold=best,
            best_dice=float(curves.dice[i]),
            best_jaccard=float(curves.jaccard[i]),
        )

    def best_threshold(self, metric: MetricName = "dice") -> float | None:
        """The grid threshold maximising ``metric`` (ties: closest to 0.5, then the lower),
        or ``None`` without ground truth.

        Raises:
            ValueError: for a metric other than ``"dice"``, ``"jaccard"``, ``"precision"``
                or ``"recall"``.
        """
        if self._sweep is None:
            return None
        return self._sweep.best_threshold(metric)


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf"
    return value


def metrics_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Writes rows of metrics as a UTF-8 CSV file with a header line.

    The columns are the keys of all rows in order of first appearance; a row without a key
    leaves that cell empty, and so does ``None``. Numbers are written with ``str`` (floats
    round-trip exactly); lines end with CRLF as in RFC 4180, with no byte-order mark. Values
    are written as they are: a text cell starting with ``=`` is not escaped against
    spreadsheet formula injection.

    Args:
        rows: one mapping per row, e.g. results of :meth:`ThresholdExplorer.metrics_at`.

    Returns:
        The file's bytes.

    Raises:
        ValueError: ``rows`` is empty.
    """
    if not rows:
        raise ValueError("metrics_csv needs at least one row")
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(value) for key, value in row.items()})
    return buffer.getvalue().encode("utf-8")


def png_bytes(array) -> bytes:
    """Encodes a picture as PNG bytes (via :func:`segcore.data.images.encode_png`).

    Args:
        array: ``uint8`` RGB ``(H, W, 3)`` or ``uint8`` greyscale ``(H, W)``. A 0/1 mask
            encodes as a nearly black image: use :func:`mask_png` for masks.

    Returns:
        The PNG file's bytes.

    Raises:
        InvalidImageError: another dtype or shape, or an empty array.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.size == 0:
        raise InvalidImageError(
            f"png_bytes expects a non-empty uint8 array, got dtype {array.dtype} and shape "
            f"{array.shape}"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise InvalidImageError(
            f"png_bytes expects an RGB (H, W, 3) or greyscale (H, W) array, got {array.shape}"
        )
    return encode_png(array)


def mask_png(mask) -> bytes:
    """Encodes a binary mask as a single-channel PNG holding 0 and 255.

    :func:`segcore.data.images.read_mask` reads the file back as the same 0/1 mask.

    Args:
        mask: ``(H, W)`` mask; nonzero pixels are nucleus.

    Returns:
        The PNG file's bytes.

    Raises:
        InvalidImageError: the mask has a bad shape or is empty.
    """
    return encode_png(to_binary_mask(mask, name="mask") * np.uint8(255))
