"""Segmentation metrics on binary masks and probability maps, in pure NumPy.

This module does not import TensorFlow or Keras (the web app uses it without them); the soft,
differentiable versions used for training live in :mod:`segcore.network.keras_metrics`.

Conventions:

* **Masks** are arrays of any dtype; a nonzero pixel is positive (nucleus), so 0/1, 0/255 and
  boolean masks all work. Floats are *not* thresholded at 0.5: turn probabilities into a mask
  with :func:`binarize` first.
* **Probabilities** are real arrays in ``[0, 1]``; NaN or values outside that range raise
  :class:`ValueError`.
* **Thresholding rule**: a pixel is predicted positive at threshold ``t`` when ``prob >= t``,
  compared in float64 (float32 probabilities are widened exactly, so ``prob >= np.float64(t)``).
  :func:`binarize` and :func:`~segcore.metrics.sweep.threshold_sweep` use the same rule, so their
  results agree exactly.
* **Empty masks** ("empty" means no positive pixel, not zero size). Every metric is defined for
  every input, with these zero-division conventions:

  ==========  =========================  ==================================================
  metric      formula                    when the denominator is 0
  ==========  =========================  ==================================================
  Dice        2·TP / (2·TP + FP + FN)    both masks empty: 1.0 (perfect agreement)
  Jaccard     TP / (TP + FP + FN)        both masks empty: 1.0 (perfect agreement)
  precision   TP / (TP + FP)             nothing predicted: 1.0 if the truth is empty too
                                         (TP + FN = 0), else 0.0
  recall      TP / (TP + FN)             empty truth: 1.0 if nothing is predicted either
                                         (FP = 0), else 0.0
  accuracy    (TP + TN) / all pixels     no pixels at all: 1.0
  ==========  =========================  ==================================================

  When exactly one of the two masks is empty, Dice and Jaccard are 0.0 (no division by zero
  happens), and so is whichever of precision and recall is defined.

* **Pooled vs. mean over images**: :func:`~segcore.metrics.sweep.threshold_sweep` returns both.
  *Pooled* metrics sum
  TP/FP/FN/TN over all pixels of all images, then apply the formula (large images and images
  with many nuclei weigh more). *Mean over images* applies the formula per image, then averages
  the per-image values with equal weight (computed with :func:`math.fsum`, so the result does
  not depend on the order of the images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from segcore.errors import ConfigError

MetricName = Literal["dice", "jaccard", "precision", "recall"]
METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "precision", "recall")
"""Metrics of a threshold sweep, in the order of :class:`~segcore.metrics.sweep.MetricCurves`."""


# --------------------------------------------------------------------------------------------
# Metric formulas on counts (shared by the scalar and the vectorised code, so they agree exactly)
# --------------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, if_zero: np.ndarray | float) -> np.ndarray:
    """Returns ``num / den`` in float64 where ``den > 0``, else ``if_zero``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.empty(np.broadcast_shapes(num.shape, den.shape), dtype=np.float64)
    out[...] = if_zero
    np.divide(num, den, out=out, where=den > 0)
    return out


def _dice_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


def _jaccard_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    return _ratio(tp, tp + fp + fn, 1.0)


def _precision_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    # tp + fp == 0 implies tp == 0, so "the truth is empty too" is fn == 0.
    return _ratio(tp, tp + fp, np.where(fn == 0, 1.0, 0.0))


def _recall_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    return _ratio(tp, tp + fn, np.where(fp == 0, 1.0, 0.0))


FORMULAS = {
    "dice": _dice_from_counts,
    "jaccard": _jaccard_from_counts,
    "precision": _precision_from_counts,
    "recall": _recall_from_counts,
}


# --------------------------------------------------------------------------------------------
# Confusion counts on binary masks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionCounts:
    """Pixel counts of a binary segmentation against its ground truth.

    Counts can be added (``a + b``) to pool several images. The metric properties follow the
    zero-division conventions of the module docstring and return Python floats.

    Attributes:
        tp: true positives (positive in both masks).
        fp: false positives (predicted positive, truly negative).
        fn: false negatives (predicted negative, truly positive).
        tn: true negatives (negative in both masks).
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def __post_init__(self) -> None:
        for field in ("tp", "fp", "fn", "tn"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"ConfusionCounts.{field} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"ConfusionCounts.{field} must be >= 0, got {value}")
            object.__setattr__(self, field, int(value))

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def total(self) -> int:
        """Number of pixels counted (``tp + fp + fn + tn``)."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def dice(self) -> float:
        """Dice (F1): ``2·tp / (2·tp + fp + fn)``; 1.0 when both masks are empty."""
        return float(_dice_from_counts(self.tp, self.fp, self.fn))

    @property
    def jaccard(self) -> float:
        """Jaccard (IoU): ``tp / (tp + fp + fn)``; 1.0 when both masks are empty."""
        return float(_jaccard_from_counts(self.tp, self.fp, self.fn))

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; with nothing predicted, 1.0 if ``tp + fn == 0`` else 0.0."""
        return float(_precision_from_counts(self.tp, self.fp, self.fn))

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; with an empty ground truth, 1.0 if ``fp == 0`` else 0.0."""
        return float(_recall_from_counts(self.tp, self.fp, self.fn))

    @property
    def accuracy(self) -> float:
        """``(tp + tn) / total``; 1.0 when no pixel was counted."""
        return float(_ratio(self.tp + self.tn, self.total, 1.0))

    def as_dict(self) -> dict[str, float | int]:
        """Dice, Jaccard, precision, recall and the four counts, as a flat dict."""
        return {
            "dice": self.dice,
            "jaccard": self.jaccard,
            "precision": self.precision,
            "recall": self.recall,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }

    def metric(self, name: MetricName) -> float:
        """Returns the metric called ``name`` (``"dice"``, ``"jaccard"``, ``"precision"``,
        ``"recall"`` or ``"accuracy"``).

        Raises:
            ValueError: for another name.
        """
        if name not in (*METRIC_NAMES, "accuracy"):
            raise ValueError(
                f"unknown metric {name!r}; expected one of {[*METRIC_NAMES, 'accuracy']}"
            )
        return getattr(self, name)


def as_mask_array(mask, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be a numeric or boolean array, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def confusion_counts(y_true, y_pred) -> ConfusionCounts:
    """Counts TP, FP, FN and TN of a binary prediction against a binary ground truth.

    Args:
        y_true: ground-truth mask, any shape and dtype; nonzero pixels are positive.
        y_pred: predicted mask of the same shape; nonzero pixels are positive. Probabilities
            are not thresholded here: use :func:`binarize` first.

    Returns:
        The counts, as Python ints.

    Raises:
        ValueError: the shapes differ (both are named), the masks have no pixels, a mask is
            not numeric or boolean, or a float mask contains NaN.
    """
    truth = as_mask_array(y_true, "y_true")
    pred = as_mask_array(y_pred, "y_pred")
    if truth.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true {truth.shape} "
            f"and y_pred {pred.shape}"
        )
    if truth.size == 0:
        raise ValueError(f"the masks have no pixels (shape {truth.shape})")
    truth = truth != 0
    pred = pred != 0
    tp = int(np.count_nonzero(truth & pred))
    n_true = int(np.count_nonzero(truth))
    n_pred = int(np.count_nonzero(pred))
    fp = n_pred - tp
    fn = n_true - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=truth.size - tp - fp - fn)


def dice(y_true, y_pred) -> float:
    """Dice coefficient (F1 score) of two binary masks.

    Args:
        y_true: ground-truth mask; nonzero pixels are positive.
        y_pred: predicted mask of the same shape; nonzero pixels are positive.

    Returns:
        ``2·TP / (2·TP + FP + FN)``; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: as for :func:`confusion_counts`.
    """
    return confusion_counts(y_true, y_pred).dice


def jaccard(y_true, y_pred) -> float:
    """Jaccard index (intersection over union) of two binary masks.

    Args:
        y_true: ground-truth mask; nonzero pixels are positive.
        y_pred: predicted mask of the same shape; nonzero pixels are positive.

    Returns:
        ``TP / (TP + FP + FN)``; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: as for :func:`confusion_counts`.
    """
    return confusion_counts(y_true, y_pred).jaccard


def precision(y_true, y_pred) -> float:
    """Precision of a binary prediction.

    Args:
        y_true: ground-truth mask; nonzero pixels are positive.
        y_pred: predicted mask of the same shape; nonzero pixels are positive.

    Returns:
        ``TP / (TP + FP)``. When nothing is predicted: 1.0 if the ground truth is empty too
        (``TP + FN == 0``), else 0.0.

    Raises:
        ValueError: as for :func:`confusion_counts`.
    """
    return confusion_counts(y_true, y_pred).precision


def recall(y_true, y_pred) -> float:
    """Recall (sensitivity) of a binary prediction.

    Args:
        y_true: ground-truth mask; nonzero pixels are positive.
        y_pred: predicted mask of the same shape; nonzero pixels are positive.

    Returns:
        ``TP / (TP + FN)``. When the ground truth is empty: 1.0 if nothing is predicted
        either (``FP == 0``), else 0.0.

    Raises:
        ValueError: as for :func:`confusion_counts`.
    """
    return confusion_counts(y_true, y_pred).recall


# --------------------------------------------------------------------------------------------
# Probabilities
# --------------------------------------------------------------------------------------------


def check_threshold(threshold) -> np.float64:
    """Returns ``threshold`` as float64.

    Raises:
        ConfigError: (a ``ValueError``) unless ``threshold`` is a number in [0, 1].
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    value = np.float64(threshold)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
    return value


def as_prob_array(prob, name: str) -> np.ndarray:
    """Returns ``prob`` as a float32 or float64 array, checked to lie in ``[0, 1]``."""
    array = np.asarray(prob)
    if array.dtype == bool:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if array.dtype == np.float16:
        array = array.astype(np.float32)  # exact
    elif array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.size:
        low, high = array.min(), array.max()
        if not (low >= 0.0 and high <= 1.0):
            if np.isnan(array).any():
                raise ValueError(f"{name} contains NaN; probabilities must be in [0, 1]")
            raise ValueError(
                f"{name} has values outside [0, 1] (min {float(low):g}, max {float(high):g}); "
                "pass probabilities (e.g. after a sigmoid), not logits"
            )
    return array


def binarize(prob, threshold: float = 0.5) -> np.ndarray:
    """Turns a probability map into a ``uint8`` 0/1 mask with the rule ``prob >= threshold``.

    The comparison is made in float64 (``prob >= np.float64(threshold)``), the same rule as
    :func:`~segcore.metrics.sweep.threshold_sweep`, so a sweep's counts at ``t`` equal those of
    ``binarize(prob, t)``.

    Args:
        prob: probabilities in ``[0, 1]``, any shape.
        threshold: a number in ``[0, 1]``; ``0`` marks every pixel positive.

    Returns:
        A ``uint8`` array of ``prob``'s shape holding 0 and 1.

    Raises:
        ValueError: ``threshold`` is not a number in ``[0, 1]``, or ``prob`` contains NaN or
            values outside ``[0, 1]``.
    """
    value = check_threshold(threshold)
    return (as_prob_array(prob, "prob") >= value).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Per-image counts and the threshold sweep
# --------------------------------------------------------------------------------------------
