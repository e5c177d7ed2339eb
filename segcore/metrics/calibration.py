"""Calibration of pixel probabilities: the reliability diagram, the expected calibration error
(ECE), and temperature (or Platt) scaling fitted on logit histograms, in pure NumPy.

A model is *calibrated* when, of the pixels it gives probability ``p``, a fraction ``p`` are
nucleus. The **reliability diagram** cuts ``[0, 1]`` into :data:`DEFAULT_BINS` (10) equal-width
bins of the predicted probability and shows, per bin, the mean predicted probability
(*confidence*), the observed fraction of true nucleus pixels (*observed*) and the number of
pixels. The **expected calibration error** is the pixel-weighted mean gap over the bins::

    ECE = sum_b (n_b / N) * |confidence_b - observed_b|

(the probability of the positive class, nucleus, is binned — as
``sklearn.calibration.calibration_curve(strategy="uniform")`` does — not the probability of the
predicted class).

Bins follow the thresholding rule of :mod:`segcore.metrics.counts`: bin ``k`` holds the pixels
with ``edges[k] <= prob < edges[k + 1]`` (the last bin includes 1.0), ``edges =
np.linspace(0, 1, n_bins + 1)`` compared in float64, so the pixels of bins ``k, k + 1, ...`` are
exactly those that ``prob >= edges[k]`` marks positive.

**Pooling image by image**: :class:`Reliability` holds per-bin sums (pixels, positives,
probabilities); one image's are made with :func:`reliability` and ``+`` merges them, so a whole
set is pooled without keeping its probability maps. Counts are exact; the probability sums equal
those of one call on all pixels up to float64 rounding.

**Temperature scaling** divides the logit ``z = log(p / (1 - p))`` by one temperature ``T``:
``p' = sigmoid(z / T)`` (``T > 1`` softens, ``T < 1`` sharpens; the 0.5 point and the order of
pixels stay). :class:`LogitHistogram` keeps, per label, a histogram of the logits (bins of
:data:`LOGIT_STEP`, clipped to ±\\ :data:`LOGIT_LIMIT`: a float32 sigmoid saturates at 1.0 near
16.6) with the sum of the logits in each bin, mergeable like :class:`Reliability`; the negative
log-likelihood and the reliability diagram of any ``sigmoid(a·z + b)`` are computed from it, each
bin's pixels taken at its mean logit (an approximation well under 0.001 of ECE, see
``benchmarks/bench_calibration.py``), and :meth:`LogitHistogram.fit_temperature` picks the
``T`` of least NLL on a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.metrics.counts import as_mask_array, as_prob_array

DEFAULT_BINS = 10
"""Equal-width probability bins of the reliability diagram and the ECE."""
LOGIT_LIMIT = 16.0
"""Logits are clipped to ``[-LOGIT_LIMIT, LOGIT_LIMIT]`` in :class:`LogitHistogram`."""
LOGIT_STEP = 1.0 / 64.0
"""Width of a :class:`LogitHistogram` bin, in logit units."""
DEFAULT_TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(5.0), 646))
"""The grid of :meth:`LogitHistogram.fit_temperature`: 0.2 to 5, 0.5 % apart; read-only."""
DEFAULT_TEMPERATURES.setflags(write=False)


def bin_edges(n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The ``n_bins + 1`` edges ``np.linspace(0, 1, n_bins + 1)`` of equal-width bins.

    Raises:
        ValueError: ``n_bins`` is not a positive integer.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return np.linspace(0.0, 1.0, int(n_bins) + 1)


def probability_bins(prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The bin of each probability in ``[0, 1]``: ``k`` with ``edges[k] <= prob < edges[k + 1]``
    (float64 comparison; 1.0 goes to the last bin), as a flat ``intp`` array.

    Without a search: ``[0, 1]`` is cut into ``M >= n_bins`` cells (a power of two, so
    ``floor(prob * M)`` is exact), each holding at most one edge inside; the bin is the number
    of inner edges up to the cell's start plus one if ``prob`` reaches the cell's next edge.
    """
    inner = bin_edges(n_bins)[1:-1]
    cells = max(16, 1 << (int(n_bins) - 1).bit_length())
    starts = np.arange(cells + 1, dtype=np.float64) / cells  # exact
    base = np.searchsorted(inner, starts, side="right")
    candidate = np.append(inner, np.inf)[base]
    q = np.asarray(prob).ravel()
    cell = (q * cells).astype(np.intp)  # exact floor: q >= 0, cells a power of two
    index = base[cell]
    index += q >= candidate[cell]
    return index


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (no warning)."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass(frozen=True, eq=False)
class Reliability:
    """Per-bin sums of a reliability diagram; ``a + b`` pools two disjoint pixel sets.

    Attributes:
        counts: pixels per bin, int64 ``(B,)``.
        positives: true nucleus pixels per bin, int64 ``(B,)``.
        prob_sums: the sum of the predicted probabilities per bin, float64 ``(B,)``.
    """

    counts: np.ndarray
    positives: np.ndarray
    prob_sums: np.ndarray

    @classmethod
    def empty(cls, n_bins: int = DEFAULT_BINS) -> Reliability:
        """No pixels yet, on ``n_bins`` bins (the start of a sum)."""
        size = bin_edges(n_bins).size - 1
        zeros = np.zeros(size, np.int64)
        return cls(zeros, zeros.copy(), np.zeros(size, np.float64))

    def __add__(self, other: Reliability) -> Reliability:
        if not isinstance(other, Reliability):
            return NotImplemented
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot pool {self.n_bins} bins with {other.n_bins} bins")
        return Reliability(
            self.counts + other.counts,
            self.positives + other.positives,
            self.prob_sums + other.prob_sums,
        )

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.counts.size)

    @property
    def edges(self) -> np.ndarray:
        """The bin edges, ``(B + 1,)``."""
        return bin_edges(self.n_bins)

    @property
    def n_pixels(self) -> int:
        """Pixels counted."""
        return int(self.counts.sum())

    @property
    def confidence(self) -> np.ndarray:
        """Mean predicted probability per bin (NaN for an empty bin)."""
        return _ratio(self.prob_sums, self.counts)

    @property
    def observed(self) -> np.ndarray:
        """Fraction of true nucleus pixels per bin (NaN for an empty bin)."""
        return _ratio(self.positives.astype(np.float64), self.counts)

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b n_b |confidence_b - observed_b| / N`` (0.0 when
        there are no pixels)."""
        total = self.n_pixels
        if total == 0:
            return 0.0
        gaps = np.abs(self.prob_sums - self.positives)  # n_b * |confidence_b - observed_b|
        return float(gaps.sum() / total)

    @property
    def max_gap(self) -> float:
        """The largest ``|confidence - observed|`` over non-empty bins (0.0 when none)."""
        filled = self.counts > 0
        if not filled.any():
            return 0.0
        return float(np.max(np.abs(self.confidence[filled] - self.observed[filled])))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``n_bins``, ``edges``, ``counts``, ``positives``,
        ``confidence`` and ``observed`` (None for empty bins), ``ece`` and ``max_gap``."""

        def floats(values: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "n_bins": self.n_bins,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "positives": self.positives.tolist(),
            "confidence": floats(self.confidence),
            "observed": floats(self.observed),
            "ece": self.ece,
            "max_gap": self.max_gap,
        }


def _pairs(y_true, probs) -> list[tuple[np.ndarray, np.ndarray]]:
    """One ``(truth, prob)`` pair, or the pairs of two equal-length sequences of images."""
    if isinstance(y_true, Sequence) and isinstance(probs, Sequence):
        if len(y_true) != len(probs):
            raise ValueError(f"y_true has {len(y_true)} images but probs has {len(probs)}")
        return list(zip(y_true, probs, strict=True))
    return [(y_true, probs)]


def _checked(truth, prob) -> tuple[np.ndarray, np.ndarray]:
    truth = as_mask_array(truth, "y_true")
    prob = as_prob_array(prob, "probs")
    if truth.shape != prob.shape:
        raise ValueError(f"y_true has shape {truth.shape} but probs has shape {prob.shape}")
    return truth.ravel() != 0, prob.ravel()


def reliability(y_true, probs, n_bins: int = DEFAULT_BINS) -> Reliability:
    """The reliability diagram's per-bin sums of one image, or of a sequence of images pooled.

    Args:
        y_true: a ground-truth mask (nonzero is nucleus), or a list of them.
        probs: the predicted probabilities in ``[0, 1]``, the same shape (or list of shapes).
        n_bins: equal-width bins, default :data:`DEFAULT_BINS` (10).

    Raises:
        ValueError: shapes or lengths differ, or the probabilities are not in ``[0, 1]``.
    """
    total = Reliability.empty(n_bins)
    for truth, prob in _pairs(y_true, probs):
        positive, prob = _checked(truth, prob)
        index = probability_bins(prob, n_bins)
        both = np.bincount(index + positive * n_bins, minlength=2 * n_bins)
        sums = np.bincount(index, weights=prob, minlength=n_bins)
        total = total + Reliability(
            both[:n_bins] + both[n_bins:], both[n_bins:].astype(np.int64), sums
        )
    return total


def expected_calibration_error(y_true, probs, n_bins: int = DEFAULT_BINS) -> float:
    """The ECE of ``probs`` against ``y_true`` on ``n_bins`` equal-width bins (pooled over a
    list of images); see :func:`reliability`."""
    return reliability(y_true, probs, n_bins).ece


def logits(prob) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, clipped to ``[-LOGIT_LIMIT, LOGIT_LIMIT]``."""
    p = np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-p)
    return np.clip(z, -LOGIT_LIMIT, LOGIT_LIMIT)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z


_LOGIT_BINS = round(2 * LOGIT_LIMIT / LOGIT_STEP) + 1


@dataclass(frozen=True, eq=False)
class LogitHistogram:
    """Per-label histograms of logits; ``a + b`` pools. Row 0: background, row 1: nucleus.

    Attributes:
        counts: pixels per (label, logit bin), int64 ``(2, K)``.
        sums: the sum of those pixels' (clipped) logits, float64 ``(2, K)``.
    """

    counts: np.ndarray
    sums: np.ndarray

    @classmethod
    def empty(cls) -> LogitHistogram:
        """No pixels yet."""
        return cls(np.zeros((2, _LOGIT_BINS), np.int64), np.zeros((2, _LOGIT_BINS)))

    @classmethod
    def of(cls, y_true, probs) -> LogitHistogram:
        """The histogram of one image, or of a sequence of images pooled."""
        total = cls.empty()
        for truth, prob in _pairs(y_true, probs):
            positive, prob = _checked(truth, prob)
            z = logits(prob)
            index = np.rint((z + LOGIT_LIMIT) / LOGIT_STEP).astype(np.intp)
            index += positive * _LOGIT_BINS
            counts = np.bincount(index, minlength=2 * _LOGIT_BINS).reshape(2, -1)
            sums = np.bincount(index, weights=z, minlength=2 * _LOGIT_BINS).reshape(2, -1)
            total = total + cls(counts, sums)
        return total

    def __add__(self, other: LogitHistogram) -> LogitHistogram:
        if not isinstance(other, LogitHistogram):
            return NotImplemented
        return LogitHistogram(self.counts + other.counts, self.sums + other.sums)

    @property
    def n_pixels(self) -> int:
        """Pixels counted."""
        return int(self.counts.sum())

    def _filled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(label, mean logit, count)`` of the non-empty bins, as flat arrays."""
        label, where = np.nonzero(self.counts)
        count = self.counts[label, where]
        return label, self.sums[label, where] / count, count

    def nll(self, scale: float = 1.0, bias: float = 0.0) -> float:
        """Mean negative log-likelihood (nats per pixel) of ``sigmoid(scale * z + bias)``;
        ``scale = 1 / T`` for temperature scaling.

        Raises:
            ValueError: the histogram is empty.
        """
        label, z, count = self._filled()
        if count.size == 0:
            raise ValueError("the histogram holds no pixels")
        signed = np.where(label == 1, -1.0, 1.0) * (scale * z + bias)
        return float(np.dot(count, np.logaddexp(0.0, signed)) / count.sum())

    def reliability(
        self, scale: float = 1.0, bias: float = 0.0, n_bins: int = DEFAULT_BINS
    ) -> Reliability:
        """The reliability diagram of ``sigmoid(scale * z + bias)`` (each logit bin's pixels
        at its mean logit)."""
        label, z, count = self._filled()
        prob = _sigmoid(scale * z + bias)
        index = probability_bins(prob, n_bins)
        counts = np.bincount(index, weights=count, minlength=n_bins)
        positives = np.bincount(index, weights=count * (label == 1), minlength=n_bins)
        sums = np.bincount(index, weights=count * prob, minlength=n_bins)
        return Reliability(
            np.rint(counts).astype(np.int64), np.rint(positives).astype(np.int64), sums
        )

    def fit_temperature(self, temperatures=None) -> float:
        """The temperature ``T`` of least :meth:`nll` (with ``scale = 1 / T``) on a grid,
        default :data:`DEFAULT_TEMPERATURES` (0.2 to 5); ties go to the first."""
        grid = DEFAULT_TEMPERATURES if temperatures is None else np.asarray(temperatures, float)
        if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0):
            raise ValueError("temperatures must be a non-empty 1-D sequence of positive numbers")
        losses = [self.nll(1.0 / t) for t in grid]
        return float(grid[int(np.argmin(losses))])

    def fit_platt(self, iterations: int = 100) -> tuple[float, float]:
        """``(scale, bias)`` of least :meth:`nll` (Platt scaling: a logistic regression on the
        logit), by Newton's method from ``(1, 0)`` with step halving.

        Raises:
            ValueError: the histogram is empty.
        """
        label, z, count = self._filled()
        if count.size == 0:
            raise ValueError("the histogram holds no pixels")
        weight = count / count.sum()
        features = np.stack([z, np.ones_like(z)], axis=1)
        sign = np.where(label == 1, -1.0, 1.0)

        def loss(params: np.ndarray) -> float:
            return float(np.dot(weight, np.logaddexp(0.0, sign * (features @ params))))

        params, current = np.array([1.0, 0.0]), loss(np.array([1.0, 0.0]))
        for _ in range(iterations):
            prob = _sigmoid(features @ params)
            gradient = features.T @ (weight * (prob - label))
            curvature = weight * prob * (1.0 - prob)
            hessian = features.T @ (curvature[:, None] * features) + 1e-12 * np.eye(2)
            step = np.linalg.solve(hessian, gradient)
            for _ in range(30):  # halve the step until the loss does not grow
                trial = params - step
                if loss(trial) <= current:
                    break
                step = step / 2
            else:
                break
            params, current = trial, loss(trial)
            if np.max(np.abs(step)) < 1e-9:
                break
        return float(params[0]), float(params[1])
