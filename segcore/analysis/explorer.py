"""The threshold explorer: one image's metrics at any threshold, without running the model again.

:class:`ThresholdExplorer` holds one image's probabilities (and optional ground truth) and
answers "what are the metrics at this threshold?" from one sweep over
:data:`EXPLORER_THRESHOLDS` made when it is built; :class:`ThresholdCurve` is that sweep as
Dice, Jaccard, precision and recall curves with the best threshold marked.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.analysis.checks import mask_like, probability_map
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.inference.resolution import DEFAULT_MODEL_PIXEL_SIZE
from segcore.metrics.counts import (
    ConfusionCounts,
    MetricName,
    binarize,
    check_threshold,
    confusion_counts,
)
from segcore.metrics.labels import ground_truth_instances
from segcore.metrics.sweep import SweepResult, threshold_sweep

__all__ = ["EXPLORER_THRESHOLDS", "NO_TRUTH_REASON", "ThresholdCurve", "ThresholdExplorer"]

EXPLORER_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
"""Grid swept by :class:`ThresholdExplorer`: 0.00, 0.01, …, 1.00, each the float closest to
its decimal (``0.35`` is the literal ``0.35``, which ``np.linspace`` misses by one ulp for ten
of the values); read-only."""
EXPLORER_THRESHOLDS.setflags(write=False)

_NUCLEI_CACHE_SIZE = 256
_LABELS_CACHE_SIZE = 4  # label images are H×W int32: keep only the last few …
_LABELS_CACHE_BYTES = 128 * 2**20  # … and of a large image fewer (always the last one)
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
    :data:`EXPLORER_THRESHOLDS` and reads the ground truth's nuclei
    (:func:`~segcore.metrics.labels.ground_truth_instances`). Afterwards a threshold on that
    grid costs a table look-up plus one binarisation; any other threshold in ``[0, 1]`` is
    counted directly, so every result is exact: it equals
    ``confusion_counts(truth, binarize(probabilities, t))``. Predicted nuclei are the
    instances of :func:`~segcore.inference.instances.label_instances` (touching nuclei split),
    cached per threshold and setting.

    The object is safe to share between threads and can be pickled (caches are dropped).

    Args:
        probabilities: ``(H, W)`` or ``(H, W, 1)`` probability map in ``[0, 1]``.
        truth: optional ground truth of the same H×W: instance labels, a binary mask or an
            RGB rendering (any nonzero pixel is nucleus).
        pixel_size: µm per pixel of the image (converts the µm instance settings), default
            0.25.
        instances: the default :class:`~segcore.inference.instances.InstanceConfig` (the
            model's), defaults to ``InstanceConfig()``.

    Raises:
        InvalidImageError: the probability map has a bad shape or values outside ``[0, 1]``,
            or the mask's size differs from it.
    """

    def __init__(
        self,
        probabilities,
        truth=None,
        *,
        pixel_size: float = DEFAULT_MODEL_PIXEL_SIZE,
        instances: InstanceConfig | None = None,
    ) -> None:
        prob = np.array(probability_map(probabilities))  # a private copy
        prob.setflags(write=False)
        self._prob = prob
        self.pixel_size = float(pixel_size)
        self.instances = instances or InstanceConfig()
        self._truth: np.ndarray | None = None
        self._truth_labels: np.ndarray | None = None
        self.truth_note: str | None = None
        self._sweep: SweepResult | None = None
        if truth is not None:
            labels, self.truth_note = ground_truth_instances(truth, name="ground truth")
            mask = mask_like(labels, "ground truth", prob)
            for array in (mask, labels):
                array.setflags(write=False)
            self._truth, self._truth_labels = mask, labels
            self._sweep = threshold_sweep(mask, prob, EXPLORER_THRESHOLDS)
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = threading.Lock()
        self._nuclei: OrderedDict[tuple, int] = OrderedDict()
        self._labels: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._last_mask: tuple[float, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_nuclei", "_labels", "_last_mask"):
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
    def nbytes(self) -> int:
        """About how many bytes the explorer holds: the probabilities, the ground truth and the
        caches filled so far (the last mask, the last few label images); the sweep's few
        kilobytes are left out."""
        with self._lock:
            cached = list(self._labels.values())
            if self._last_mask is not None:
                cached.append(self._last_mask[1])
        arrays = [self._prob, self._truth, self._truth_labels, *cached]
        return sum(a.nbytes for a in arrays if a is not None)

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
    def truth_labels(self) -> np.ndarray | None:
        """The ground truth's nuclei as ``int32`` labels ``1..N`` (read-only), or ``None``."""
        return self._truth_labels

    @property
    def nuclei_true(self) -> int | None:
        """Ground-truth nuclei (instance labels; connected components of a binary mask, see
        :attr:`truth_note`), or ``None`` without ground truth."""
        return None if self._truth_labels is None else int(self._truth_labels.max())

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

    def labels_at(self, threshold: float, instances: InstanceConfig | None = None) -> np.ndarray:
        """The predicted nuclei at ``threshold``: read-only ``int32`` labels ``1..N`` of
        :func:`~segcore.inference.instances.label_instances` with ``instances`` (default: the
        explorer's setting); the last few are cached.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        key = (float(check_threshold(threshold)), instances or self.instances)
        with self._lock:
            if key in self._labels:
                self._labels.move_to_end(key)
                return self._labels[key]
        labels = label_instances(self._prob, key[0], key[1], pixel_size=self.pixel_size)
        labels.setflags(write=False)
        with self._lock:
            self._labels[key] = labels
            while len(self._labels) > 1 and (
                len(self._labels) > _LABELS_CACHE_SIZE
                or labels.nbytes * len(self._labels) > _LABELS_CACHE_BYTES
            ):
                self._labels.popitem(last=False)
            self._nuclei[key] = int(labels.max())
            while len(self._nuclei) > _NUCLEI_CACHE_SIZE:
                self._nuclei.popitem(last=False)
        return labels

    def nuclei_at(self, threshold: float, instances: InstanceConfig | None = None) -> int:
        """Predicted nuclei at ``threshold``: the count of :meth:`labels_at`, cached per
        threshold and setting.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        key = (float(check_threshold(threshold)), instances or self.instances)
        with self._lock:
            if key in self._nuclei:
                self._nuclei.move_to_end(key)
                return self._nuclei[key]
        return int(self.labels_at(*key).max())

    def known_nuclei_at(
        self, threshold: float, instances: InstanceConfig | None = None
    ) -> int | None:
        """:meth:`nuclei_at` if it is already known (cached), else ``None`` — never splits."""
        key = (float(check_threshold(threshold)), instances or self.instances)
        with self._lock:
            return self._nuclei.get(key)

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

    def metrics_at(
        self, threshold: float, instances: InstanceConfig | None = None
    ) -> dict[str, Any]:
        """Metrics of the prediction at ``threshold``, as plain Python numbers.

        Args:
            threshold: a number in ``[0, 1]``.
            instances: how the mask becomes nuclei for ``nuclei_pred`` (default: the
                explorer's setting).

        Returns:
            With ground truth: ``threshold``, ``dice``, ``jaccard``, ``precision``,
            ``recall`` (floats; zero divisions as in :mod:`segcore.metrics`), ``tp``,
            ``fp``, ``fn``, ``tn``, ``nuclei_pred`` and ``nuclei_true`` (ints). Without:
            ``threshold``, ``nuclei_pred`` and ``reason`` (:data:`NO_TRUTH_REASON`).

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        value = float(check_threshold(threshold))
        return {
            **self.pixel_metrics_at(value),
            "nuclei_pred": self.nuclei_at(value, instances),
        }

    def pixel_metrics_at(self, threshold: float) -> dict[str, Any]:
        """:meth:`metrics_at` without ``nuclei_pred``: the pixel figures only, which need no
        nucleus split (a look-up in the sweep), so a page can show them before the count.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        value = float(check_threshold(threshold))
        counts = self.counts_at(value)
        if counts is None:
            return {"threshold": value, "reason": NO_TRUTH_REASON}
        return {"threshold": value, **counts.as_dict(), "nuclei_true": self.nuclei_true}

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
