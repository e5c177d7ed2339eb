"""The threshold sweep: per-image confusion counts at every threshold of a grid, in one pass.

:func:`threshold_sweep` histograms each image's probabilities once and reads the counts at every
threshold off the cumulative histogram, so a sweep over 101 thresholds costs about as much as one
thresholding. It follows the conventions of :mod:`segcore.metrics.counts` (thresholding rule,
empty masks) and returns pooled and mean-over-images curves (:class:`SweepResult`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segcore.metrics.counts import (
    FORMULAS,
    METRIC_NAMES,
    ConfusionCounts,
    MetricName,
    as_mask_array,
    as_prob_array,
    confusion_counts,
)

DEFAULT_THRESHOLDS = np.linspace(0.0, 1.0, 101)
"""Default threshold grid of :func:`threshold_sweep`: 0.00, 0.01, …, 1.00 (``np.linspace``);
read-only."""
DEFAULT_THRESHOLDS.setflags(write=False)

_MIN_CELLS = 16
_MAX_CELLS = 2**16


def _image_list(arrays, name: str) -> list[np.ndarray]:
    """Splits one image ``(H, W)`` / ``(H, W, 1)``, a batch ``(N, H, W)`` / ``(N, H, W, 1)`` or a
    sequence of images into a list of arrays (not yet validated for dtype)."""
    if isinstance(arrays, Sequence) and not isinstance(arrays, str | bytes):
        if len(arrays) == 0:
            raise ValueError(f"{name} is an empty list; give at least one image")
        items = [np.asarray(a) for a in arrays]
        out = []
        for i, item in enumerate(items):
            if item.ndim == 3 and item.shape[2] == 1:
                item = item[..., 0]
            if item.ndim != 2:
                raise ValueError(
                    f"{name}[{i}] must be an image of shape (H, W) or (H, W, 1), got {item.shape}"
                )
            out.append(item)
        return out
    array = np.asarray(arrays)
    if array.ndim == 2:
        return [array]
    if array.ndim == 3 and array.shape[2] == 1:
        return [array[..., 0]]
    if array.ndim == 3:
        if array.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch {array.shape}; give at least one image")
        return list(array)
    if array.ndim == 4 and array.shape[3] == 1:
        if array.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch {array.shape}; give at least one image")
        return list(array[..., 0])
    raise ValueError(
        f"{name} must be an image (H, W) or (H, W, 1), a batch (N, H, W) or (N, H, W, 1), "
        f"or a list of images; got an array of shape {array.shape}"
    )


def _paired_images(y_true, other, other_name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    truths = _image_list(y_true, "y_true")
    others = _image_list(other, other_name)
    if len(truths) != len(others):
        raise ValueError(
            f"y_true has {len(truths)} image(s) but {other_name} has {len(others)}; "
            "they must pair up one to one"
        )
    for i, (truth, pred) in enumerate(zip(truths, others, strict=True)):
        if truth.shape != pred.shape:
            raise ValueError(
                f"image {i}: y_true has shape {truth.shape} but {other_name} has shape "
                f"{pred.shape}; they must be the same"
            )
        if truth.size == 0:
            raise ValueError(f"image {i} has no pixels (shape {truth.shape})")
    return truths, others


def per_image_counts(y_true, y_pred) -> list[ConfusionCounts]:
    """Confusion counts of each image of a batch of binary predictions.

    Args:
        y_true: ground-truth masks: one image ``(H, W)``, a batch ``(N, H, W)`` (a trailing
            channel axis of size 1 is dropped) or a list of ``(H, W)`` arrays, possibly of
            different sizes. Nonzero pixels are positive.
        y_pred: predicted binary masks in the same layout and shapes as ``y_true``.

    Returns:
        One :class:`ConfusionCounts` per image, in order; ``sum(counts, ConfusionCounts(0, 0,
        0, 0))`` gives the pooled counts.

    Raises:
        ValueError: the number of images or an image's shape differs between the two, an image
            has no pixels, or a mask is not numeric (or contains NaN).
    """
    truths, preds = _paired_images(y_true, y_pred, "y_pred")
    return [confusion_counts(t, p) for t, p in zip(truths, preds, strict=True)]


def _check_thresholds(thresholds) -> np.ndarray:
    if thresholds is None:
        return DEFAULT_THRESHOLDS
    array = np.asarray(thresholds)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"thresholds must be numbers, got dtype {array.dtype}")
    array = np.array(array, dtype=np.float64)  # a private copy
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all((array >= 0.0) & (array <= 1.0)):  # also rejects NaN
        bad = array[~((array >= 0.0) & (array <= 1.0))]
        raise ValueError(f"thresholds must all be in [0, 1]; got {bad[:5].tolist()}")
    if array.size > 1 and not np.all(np.diff(array) > 0):
        raise ValueError("thresholds must be sorted in strictly ascending order (no duplicates)")
    array.setflags(write=False)
    return array


def _cell_table(thresholds: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Builds the lookup used to bin probabilities against ``thresholds`` without a search.

    ``[0, 1]`` is cut into ``M`` equal cells (``M`` a power of two, so ``prob * M`` is exact and
    ``floor(prob * M)`` is the exact cell of ``prob``). ``M`` is chosen so that each open cell
    ``(c/M, (c+1)/M)`` holds at most one threshold. Then, for ``c = floor(prob * M)``, the number
    of thresholds ``<= prob`` is ``base[c] + (prob >= candidate[c])``, where ``base[c]`` counts
    the thresholds ``<= c/M`` and ``candidate[c]`` is the next threshold (``inf`` if none).

    Returns:
        ``(M, base, candidate)`` with arrays of length ``M + 1``, or ``None`` when the
        thresholds are too close together for ``M <= 2**16`` (callers then use a binary search).
    """
    cells = _MIN_CELLS
    if thresholds.size > 1:
        min_gap = float(np.min(np.diff(thresholds)))
        cells = max(cells, 2 ** math.ceil(math.log2(1.0 / min_gap)))
    while cells <= _MAX_CELLS:
        edges = np.arange(cells + 1, dtype=np.float64) / cells  # exact
        base = np.searchsorted(thresholds, edges, side="right")
        below_next = np.searchsorted(thresholds, edges[1:], side="left")
        if np.all(below_next - base[:-1] <= 1):
            candidate = np.append(thresholds, np.inf)[base]
            return cells, base.astype(np.intp), candidate
        cells *= 2
    return None


def _threshold_histogram(
    truth: np.ndarray, prob: np.ndarray, thresholds: np.ndarray, table
) -> np.ndarray:
    """Returns ``hist`` of shape ``(2, T + 1)``: ``hist[label, k]`` is the number of pixels of
    that label (0 negative, 1 positive) for which exactly ``k`` thresholds are ``<= prob``."""
    n_thr = thresholds.size
    q = prob.ravel()
    positive = truth.ravel() != 0
    if table is None:
        k = np.searchsorted(thresholds, q, side="right")
        k += positive * (n_thr + 1)
        return np.bincount(k, minlength=2 * (n_thr + 1)).reshape(2, n_thr + 1)
    cells, base, candidate = table
    cell = (q * cells).astype(np.intp)  # exact floor: q >= 0 and cells is a power of two
    index = cell * 2
    index += q >= candidate[cell]
    index += positive * (2 * (cells + 1))
    fine = np.bincount(index, minlength=4 * (cells + 1)).reshape(2, (cells + 1) * 2)
    # Fold (cell, above-candidate flag) into k = base[cell] + flag.
    k = np.minimum(np.stack([base, base + 1], axis=1).ravel(), n_thr)
    hist = np.zeros((2, n_thr + 1), dtype=np.int64)
    np.add.at(hist[0], k, fine[0])
    np.add.at(hist[1], k, fine[1])
    return hist


def _counts_from_histogram(hist: np.ndarray) -> np.ndarray:
    """Turns ``(..., 2, T + 1)`` histograms into ``(..., T, 4)`` counts (tp, fp, fn, tn)."""
    below = np.cumsum(hist, axis=-1)[..., :-1]  # pixels with k <= j: negative at threshold j
    totals = hist.sum(axis=-1, keepdims=True)
    tn = below[..., 0, :]
    fn = below[..., 1, :]
    fp = totals[..., 0, :] - tn
    tp = totals[..., 1, :] - fn
    return np.stack([tp, fp, fn, tn], axis=-1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class MetricCurves:
    """Dice, Jaccard, precision and recall at each threshold of a sweep (float64 arrays).

    Each array has the shape of the counts it was computed from: ``(T,)`` for pooled and mean
    curves, ``(N, T)`` for per-image curves.
    """

    dice: np.ndarray
    jaccard: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def get(self, metric: MetricName) -> np.ndarray:
        """Returns the curve of ``metric`` (``"dice"``, ``"jaccard"``, ``"precision"`` or
        ``"recall"``).

        Raises:
            ValueError: for another name.
        """
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRIC_NAMES)}")
        return getattr(self, metric)

    @classmethod
    def from_counts(cls, tp, fp, fn) -> MetricCurves:
        """Applies the module's formulas and zero-division conventions element-wise.

        Args:
            tp: true-positive counts (any shape).
            fp: false-positive counts (same shape).
            fn: false-negative counts (same shape).

        Returns:
            Read-only float64 curves of that shape.
        """
        curves = {}
        for name in METRIC_NAMES:
            values = FORMULAS[name](tp, fp, fn)
            values.setflags(write=False)
            curves[name] = values
        return cls(**curves)


def _fsum_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0, correctly rounded (``math.fsum``), so independent of the order."""
    n = values.shape[0]
    return np.array([math.fsum(column) / n for column in values.T], dtype=np.float64)


def sweep_from_image_counts(thresholds: np.ndarray, image_counts: np.ndarray) -> SweepResult:
    """Builds a :class:`SweepResult` from per-image counts ``(N, T, 4)`` (tp, fp, fn, tn).

    Pooled curves come from the counts summed over images; the mean over images is correctly
    rounded (``math.fsum``), so it does not depend on the order of the images.
    """
    image_counts = np.ascontiguousarray(image_counts, dtype=np.int64)
    pooled_counts = image_counts.sum(axis=0)  # (T, 4)
    tp, fp, fn, tn = (np.ascontiguousarray(pooled_counts[:, j]) for j in range(4))
    per_image = MetricCurves.from_counts(
        image_counts[..., 0], image_counts[..., 1], image_counts[..., 2]
    )
    mean = {}
    for name in METRIC_NAMES:
        values = _fsum_mean(per_image.get(name))
        values.setflags(write=False)
        mean[name] = values
    for array in (tp, fp, fn, tn, image_counts):
        array.setflags(write=False)
    return SweepResult(
        thresholds=thresholds,
        pooled=MetricCurves.from_counts(tp, fp, fn),
        per_image_mean=MetricCurves(**mean),
        per_image=per_image,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        image_counts=image_counts,
    )


@dataclass(frozen=True, eq=False)
class SweepResult:
    """The outcome of :func:`threshold_sweep`. All arrays are read-only.

    Attributes:
        thresholds: the grid, float64 ``(T,)``, ascending.
        pooled: metrics of the counts summed over all pixels of all images, ``(T,)`` each.
        per_image_mean: per-image metrics averaged over images with equal weight, ``(T,)``.
        per_image: the per-image metrics, ``(N, T)`` each.
        tp: pooled true positives at each threshold, int64 ``(T,)``.
        fp: pooled false positives, int64 ``(T,)``.
        fn: pooled false negatives, int64 ``(T,)``.
        tn: pooled true negatives, int64 ``(T,)``.
        image_counts: per-image counts, int64 ``(N, T, 4)``; the last axis is
            ``(tp, fp, fn, tn)``.
    """

    thresholds: np.ndarray
    pooled: MetricCurves
    per_image_mean: MetricCurves
    per_image: MetricCurves
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    image_counts: np.ndarray

    @property
    def n_images(self) -> int:
        """Number of images swept."""
        return int(self.image_counts.shape[0])

    def curves(self, pooled: bool = True) -> MetricCurves:
        """Returns :attr:`pooled` if ``pooled`` else :attr:`per_image_mean`."""
        return self.pooled if pooled else self.per_image_mean

    def best_threshold(self, metric: MetricName = "dice", pooled: bool = True) -> float:
        """The grid threshold that maximises ``metric``.

        Ties (equal maximal values) go to the threshold closest to 0.5, then to the lower one.

        Args:
            metric: ``"dice"``, ``"jaccard"``, ``"precision"`` or ``"recall"``.
            pooled: maximise the pooled curve (default) or the mean-over-images curve.

        Returns:
            The threshold, a Python float taken from :attr:`thresholds`.

        Raises:
            ValueError: for an unknown metric.
        """
        values = self.curves(pooled).get(metric)
        best = np.flatnonzero(values == values.max())
        distance = np.abs(self.thresholds[best] - 0.5)
        return float(self.thresholds[best[np.argmin(distance)]])  # argmin: first = lower

    def index_of(self, threshold: float) -> int:
        """Index of ``threshold`` in the grid (matched within 1e-9).

        Raises:
            ValueError: the threshold is not on the grid.
        """
        i = int(np.argmin(np.abs(self.thresholds - float(threshold))))
        if abs(self.thresholds[i] - float(threshold)) > 1e-9:
            raise ValueError(
                f"threshold {threshold!r} is not on the sweep's grid "
                f"({self.thresholds.size} values from {self.thresholds[0]:g} to "
                f"{self.thresholds[-1]:g}); the closest is {self.thresholds[i]:g}"
            )
        return i

    def counts_at(self, threshold: float, image: int | None = None) -> ConfusionCounts:
        """Counts at one grid threshold, pooled (``image=None``) or for one image.

        Args:
            threshold: a value of :attr:`thresholds` (matched within 1e-9).
            image: index of the image, or ``None`` for the pooled counts.

        Returns:
            The counts as a :class:`ConfusionCounts`.

        Raises:
            ValueError: the threshold is not on the grid.
            IndexError: ``image`` is out of range.
        """
        i = self.index_of(threshold)
        if image is None:
            return ConfusionCounts(
                int(self.tp[i]), int(self.fp[i]), int(self.fn[i]), int(self.tn[i])
            )
        tp, fp, fn, tn = (int(v) for v in self.image_counts[image, i])
        return ConfusionCounts(tp, fp, fn, tn)


def threshold_sweep(y_true, probs, thresholds=None) -> SweepResult:
    """Dice, Jaccard, precision and recall at every threshold of a grid, in one pass.

    A pixel is predicted positive at threshold ``t`` when ``prob >= t`` (compared in float64),
    so every count equals exactly that of ``confusion_counts(y_true, probs >= t)`` for
    ``t`` taken from the (float64) grid, probabilities lying exactly on a threshold included.
    Instead of one pass per threshold, each pixel is binned once by the number of thresholds
    ``<= prob`` (via an exact power-of-two cell lookup, falling back to a binary search for
    grids finer than 2**-16); cumulative sums of the per-label histograms then give TP, FP,
    FN and TN at every threshold.

    Args:
        y_true: ground-truth masks: one image ``(H, W)``, a batch ``(N, H, W)``, or a list of
            ``(H, W)`` arrays that may differ in size. A trailing channel axis of size 1 is
            dropped. Nonzero pixels are positive.
        probs: probabilities in ``[0, 1]`` in the same layout and shapes as ``y_true``.
        thresholds: ascending grid of distinct values in ``[0, 1]``; default
            :data:`DEFAULT_THRESHOLDS` (``np.linspace(0, 1, 101)``).

    Returns:
        A :class:`SweepResult` with pooled, mean-over-images and per-image curves, and the
        counts. Zero divisions follow the module conventions (e.g. an image whose mask and
        prediction are both empty has Dice 1.0 at that threshold).

    Raises:
        ValueError: the thresholds are not a non-empty, strictly ascending sequence in
            ``[0, 1]``; ``probs`` contains NaN or values outside ``[0, 1]``; the number of
            images or an image's shape differs between ``y_true`` and ``probs``; or an image
            has no pixels.
    """
    grid = _check_thresholds(thresholds)
    truths, prob_list = _paired_images(y_true, probs, "probs")
    table = _cell_table(grid)
    hists = np.empty((len(truths), 2, grid.size + 1), dtype=np.int64)
    for i, (truth, prob) in enumerate(zip(truths, prob_list, strict=True)):
        label = "probs" if len(truths) == 1 else f"probs[{i}]"
        truth = as_mask_array(truth, "y_true" if len(truths) == 1 else f"y_true[{i}]")
        hists[i] = _threshold_histogram(truth, as_prob_array(prob, label), grid, table)

    return sweep_from_image_counts(grid, _counts_from_histogram(hists))  # counts (N, T, 4)
