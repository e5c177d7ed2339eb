"""Instance-level metrics for nuclei, in pure NumPy/SciPy: matching, F1, PQ and AJI.

Conventions:

* **Label images** are non-negative integer arrays of one shape (any number of dimensions):
  0 is background, every other value is one nucleus. Labels need not be consecutive, and a
  label's pixels need not be connected (they still form one nucleus). Floats are accepted when
  every value is a whole number; :func:`~segcore.metrics.labels.ground_truth_instances` turns
  binary masks and colour renderings into label images.
* **Overlaps** are counted sparsely (only the pairs of nuclei that share a pixel), so images of
  any size with tens of thousands of nuclei cost one sort of their foreground pixels.
* **IoU** of a true nucleus ``g`` and a predicted nucleus ``p``: ``|g ∩ p| / |g ∪ p|``.
* **Matching** (:func:`match_instances`): a pair may match when its IoU is *strictly* greater
  than the threshold (the rule of Kirillov et al. 2019, "Panoptic Segmentation"). Above 0.5 a
  nucleus can have at most one such partner, so the matching is unique. Below 0.5 the pairs form
  the one-to-one matching with the most pairs, ties broken by the largest sum of IoU
  (``scipy.optimize.linear_sum_assignment``, as in StarDist's ``matching``).
* **Detection and panoptic quality** at IoU > 0.5 (:func:`instance_scores`), with ``tp``
  matched pairs, ``fp = n_pred - tp`` and ``fn = n_true - tp``:

  ==========  ============================  ================================================
  figure      formula                       when the denominator is 0
  ==========  ============================  ================================================
  precision   tp / (tp + fp)                nothing predicted: 1.0 if the truth is empty
                                            too, else 0.0
  recall      tp / (tp + fn)                empty truth: 1.0 if nothing is predicted
                                            either, else 0.0
  f1 (= dq)   2·tp / (2·tp + fp + fn)       both empty: 1.0
  sq          sum of matched IoU / tp       no match: 1.0 if both are empty, else 0.0
  pq          dq · sq                       (follows from dq and sq)
  aji         C / U (see below)             both empty: 1.0; exactly one empty: 0.0
  ==========  ============================  ================================================

* **AJI** (aggregated Jaccard index, Kumar et al. 2017, as computed by HoVer-Net's
  ``get_fast_aji``): each true nucleus that overlaps some prediction is paired with the
  predicted nucleus of highest IoU (a predicted nucleus may serve several true ones); a tie goes
  to the larger intersection, then to the lower predicted label. ``C`` sums the intersections
  and ``U`` the unions of these pairs; the areas of true nuclei that overlap no prediction and
  of predicted nuclei paired with none are added to ``U``.
* **Sets of images** (:func:`combine_instance_scores`): *pooled* figures sum the counts (and
  IoU, ``C`` and ``U``) over the images, then apply the formulas; *mean* figures average the
  per-image values with equal weight (``math.fsum``), as HoVer-Net reports PQ and AJI.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, sparse
from scipy.sparse import csgraph

from segcore.errors import ConfigError, InvalidImageError
from segcore.metrics.labels import consecutive_labels, integer_labels

MATCH_IOU = 0.5
"""IoU a pair must exceed to count as detected in :func:`instance_scores`."""


# --------------------------------------------------------------------------------------------
# Overlaps and matching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Overlaps:
    """Every pair of nuclei sharing a pixel, sorted by true then predicted label (1-based)."""

    true_ids: np.ndarray  # original label of true nucleus k at index k - 1
    pred_ids: np.ndarray
    true_area: np.ndarray  # pixels per label, index 0 = background
    pred_area: np.ndarray
    t: np.ndarray  # true label of each pair (consecutive numbering)
    p: np.ndarray
    inter: np.ndarray
    union: np.ndarray
    iou: np.ndarray


def _overlaps(true_labels, pred_labels) -> _Overlaps:
    truth = integer_labels(np.asarray(true_labels), "true_labels")
    pred = integer_labels(np.asarray(pred_labels), "pred_labels")
    if truth.shape != pred.shape:
        raise InvalidImageError(
            f"true_labels and pred_labels must have the same shape, got {truth.shape} "
            f"and {pred.shape}"
        )
    truth, true_ids = consecutive_labels(truth)
    pred, pred_ids = consecutive_labels(pred)
    n_t, n_p = len(true_ids), len(pred_ids)
    t, p = truth.ravel(), pred.ravel()
    both = (t > 0) & (p > 0)
    keys = t[both].astype(np.int64) * (n_p + 1) + p[both]
    if (n_t + 1) * (n_p + 1) <= t.size:
        hist = np.bincount(keys, minlength=1)
        keys = np.flatnonzero(hist)
        inter = hist[keys]
    else:
        keys, inter = np.unique(keys, return_counts=True)
    true_area = np.bincount(t, minlength=n_t + 1)
    pred_area = np.bincount(p, minlength=n_p + 1)
    pair_t, pair_p = keys // (n_p + 1), keys % (n_p + 1)
    union = true_area[pair_t] + pred_area[pair_p] - inter
    return _Overlaps(
        true_ids, pred_ids, true_area, pred_area, pair_t, pair_p, inter, union, inter / union
    )


@dataclass(frozen=True, eq=False)
class InstanceMatch:
    """A one-to-one matching of true and predicted nuclei.

    Attributes:
        true_ids: original label of the true nucleus of each matched pair, int64 ``(tp,)``.
        pred_ids: original label of its predicted nucleus, int64 ``(tp,)``.
        ious: IoU of each pair, float64 ``(tp,)``; every one exceeds ``iou_threshold``.
        n_true: number of true nuclei.
        n_pred: number of predicted nuclei.
        iou_threshold: the threshold a pair's IoU had to exceed.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    ious: np.ndarray
    n_true: int
    n_pred: int
    iou_threshold: float

    @property
    def tp(self) -> int:
        """Matched pairs."""
        return len(self.ious)

    @property
    def fp(self) -> int:
        """Predicted nuclei left unmatched."""
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        """True nuclei left unmatched."""
        return self.n_true - self.tp


def _optimal_pairs(t: np.ndarray, p: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Indices of the candidate pairs forming the one-to-one matching with the most pairs,
    ties broken by the largest sum of IoU; solved per connected group of candidates."""
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    n_t = int(ti.max()) + 1
    graph = sparse.coo_matrix(
        (np.ones(len(t)), (ti, n_t + pi)), shape=(n_t + int(pi.max()) + 1,) * 2
    )
    _, group = csgraph.connected_components(graph, directed=False)
    group = group[ti]
    single = np.bincount(group)[group] == 1
    chosen = [np.flatnonzero(single)]  # a lone candidate pair always matches
    shared = np.flatnonzero(~single)
    order = shared[np.argsort(group[shared], kind="stable")]
    starts = np.flatnonzero(np.diff(group[order]) != 0) + 1
    for edges in np.split(order, starts) if len(order) else []:
        rows, r = np.unique(ti[edges], return_inverse=True)
        cols, c = np.unique(pi[edges], return_inverse=True)
        # Each pair scores 1 plus its IoU scaled so the IoU sum (< 1) only breaks ties.
        gain = np.zeros((len(rows), len(cols)))
        gain[r, c] = 1.0 + iou[edges] / (2 * min(len(rows), len(cols)))
        edge_at = np.full(gain.shape, -1)
        edge_at[r, c] = edges
        rr, cc = optimize.linear_sum_assignment(gain, maximize=True)
        picked = edge_at[rr, cc]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _match(ov: _Overlaps, iou_threshold: float) -> InstanceMatch:
    candidates = np.flatnonzero(ov.iou > iou_threshold)
    if iou_threshold < 0.5 and len(candidates):
        candidates = candidates[
            _optimal_pairs(ov.t[candidates], ov.p[candidates], ov.iou[candidates])
        ]
    return InstanceMatch(
        true_ids=ov.true_ids[ov.t[candidates] - 1].astype(np.int64),
        pred_ids=ov.pred_ids[ov.p[candidates] - 1].astype(np.int64),
        ious=ov.iou[candidates],
        n_true=len(ov.true_ids),
        n_pred=len(ov.pred_ids),
        iou_threshold=iou_threshold,
    )


def match_instances(true_labels, pred_labels, iou_threshold: float = MATCH_IOU) -> InstanceMatch:
    """Matches true and predicted nuclei one to one on their IoU.

    A pair may match when its IoU is strictly greater than ``iou_threshold``. From 0.5 up
    such pairs never share a nucleus, so they all match; below 0.5 the matching with the most
    pairs is chosen, ties broken by the largest sum of IoU.

    Args:
        true_labels: ground-truth label image (0 = background).
        pred_labels: predicted label image of the same shape.
        iou_threshold: a number in ``[0, 1)``.

    Returns:
        The matched pairs, sorted by true label, and the numbers of nuclei.

    Raises:
        ConfigError: ``iou_threshold`` is not a number in ``[0, 1)``.
        InvalidImageError: the shapes differ, or a label image is empty, negative or not
            integer-valued.
    """
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, int | float | np.number):
        raise ConfigError(f"iou_threshold must be a number in [0, 1), got {iou_threshold!r}")
    if not 0.0 <= float(iou_threshold) < 1.0:
        raise ConfigError(f"iou_threshold must be in [0, 1), got {iou_threshold!r}")
    return _match(_overlaps(true_labels, pred_labels), float(iou_threshold))


# --------------------------------------------------------------------------------------------
# AJI and the per-image scores
# --------------------------------------------------------------------------------------------


def _aji_sums(ov: _Overlaps) -> tuple[int, int]:
    """``C`` and ``U`` of the aggregated Jaccard index (see the module docstring)."""
    # Per true nucleus: highest IoU, then largest intersection, then lowest predicted label.
    order = np.lexsort((ov.p, -ov.inter, -ov.iou, ov.t))
    t_sorted = ov.t[order]
    best = order[np.r_[True, t_sorted[1:] != t_sorted[:-1]]] if len(order) else order
    used_pred = np.unique(ov.p[best])
    intersection = int(ov.inter[best].sum())
    union = int(ov.union[best].sum())
    union += int(ov.true_area[1:].sum() - ov.true_area[ov.t[best]].sum())
    union += int(ov.pred_area[1:].sum() - ov.pred_area[used_pred].sum())
    return intersection, union


def aggregated_jaccard_index(true_labels, pred_labels) -> float:
    """Aggregated Jaccard index (AJI) of a predicted label image, Kumar et al. 2017.

    Defined as HoVer-Net's ``get_fast_aji`` (see the module docstring): ``C / U``, with each
    true nucleus paired with the predicted nucleus of highest IoU.

    Args:
        true_labels: ground-truth label image (0 = background).
        pred_labels: predicted label image of the same shape.

    Returns:
        AJI in ``[0, 1]``: 1.0 when both images hold no nucleus, 0.0 when exactly one does.

    Raises:
        InvalidImageError: as for :func:`match_instances`.
    """
    intersection, union = _aji_sums(_overlaps(true_labels, pred_labels))
    return _divide(intersection, union, 1.0)


def _divide(num: float, den: float, if_zero: float) -> float:
    return float(num / den) if den > 0 else float(if_zero)


@dataclass(frozen=True)
class InstanceScores:
    """Instance figures of one image (or pooled counts; see :func:`combine_instance_scores`).

    Detection counts at IoU > 0.5; zero-division rules as in the module docstring.

    Attributes:
        n_true: true nuclei.
        n_pred: predicted nuclei.
        tp: matched pairs (IoU > 0.5).
        fp: unmatched predicted nuclei, ``n_pred - tp``.
        fn: unmatched true nuclei, ``n_true - tp``.
        precision: ``tp / (tp + fp)``.
        recall: ``tp / (tp + fn)``.
        f1: ``2·tp / (2·tp + fp + fn)``.
        sq: segmentation quality, mean IoU of the matched pairs (``sum_iou / tp``).
        dq: detection quality, equal to ``f1``.
        pq: panoptic quality, ``dq · sq``.
        aji: aggregated Jaccard index, ``aji_intersection / aji_union``.
        sum_iou: sum of the matched pairs' IoU (to pool ``sq``).
        aji_intersection: AJI's ``C`` in pixels (to pool ``aji``).
        aji_union: AJI's ``U`` in pixels.
    """

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    sq: float
    dq: float
    pq: float
    aji: float
    sum_iou: float
    aji_intersection: int
    aji_union: int

    @classmethod
    def from_sums(
        cls, n_true: int, n_pred: int, tp: int, sum_iou: float, aji_c: int, aji_u: int
    ) -> InstanceScores:
        """Derives every figure from the counts and sums, with the zero-division rules."""
        fp, fn = n_pred - tp, n_true - tp
        both_empty = n_true == 0 and n_pred == 0
        f1 = _divide(2 * tp, 2 * tp + fp + fn, 1.0)
        sq = _divide(sum_iou, tp, 1.0 if both_empty else 0.0)
        return cls(
            n_true=n_true,
            n_pred=n_pred,
            tp=tp,
            fp=fp,
            fn=fn,
            precision=_divide(tp, tp + fp, 1.0 if fn == 0 else 0.0),
            recall=_divide(tp, tp + fn, 1.0 if fp == 0 else 0.0),
            f1=f1,
            sq=sq,
            dq=f1,
            pq=f1 * sq,
            aji=_divide(aji_c, aji_u, 1.0),
            sum_iou=float(sum_iou),
            aji_intersection=int(aji_c),
            aji_union=int(aji_u),
        )

    def as_dict(self) -> dict[str, float | int]:
        """Every field, as a flat dict."""
        return asdict(self)


def instance_scores(true_labels, pred_labels) -> InstanceScores:
    """Detection (IoU > 0.5), panoptic quality and AJI of a predicted label image.

    Args:
        true_labels: ground-truth label image (0 = background); see
            :func:`~segcore.metrics.labels.ground_truth_instances` for masks and colour renderings.
        pred_labels: predicted label image of the same shape.

    Returns:
        The figures of :class:`InstanceScores`.

    Raises:
        InvalidImageError: as for :func:`match_instances`.
    """
    ov = _overlaps(true_labels, pred_labels)
    match = _match(ov, MATCH_IOU)
    aji_c, aji_u = _aji_sums(ov)
    return InstanceScores.from_sums(
        match.n_true, match.n_pred, match.tp, math.fsum(match.ious), aji_c, aji_u
    )


def combine_instance_scores(scores: list[InstanceScores]) -> dict[str, float | int | None]:
    """Set-level figures of several images' :class:`InstanceScores`.

    Args:
        scores: one entry per image, at least one.

    Returns:
        A flat dict: ``n_images``; the *pooled* figures under the names of
        :meth:`InstanceScores.as_dict` (counts, ``sum_iou``, ``aji_intersection`` and
        ``aji_union`` summed over images, then ``precision``, ``recall``, ``f1``/``dq``,
        ``sq = sum_iou / tp``, ``pq = dq · sq`` and ``aji = ΣC / ΣU`` with the zero-division
        rules of one image); ``mean_dq``, ``mean_sq``, ``mean_pq`` and ``mean_aji``, the
        averages of the per-image values; and ``median_count_error``, the median over images
        with ``n_true > 0`` of ``|n_pred - n_true| / n_true`` (``None`` when there is none).

    Raises:
        ValueError: ``scores`` is empty.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("combine_instance_scores needs the scores of at least one image")
    pooled = InstanceScores.from_sums(
        sum(s.n_true for s in scores),
        sum(s.n_pred for s in scores),
        sum(s.tp for s in scores),
        math.fsum(s.sum_iou for s in scores),
        sum(s.aji_intersection for s in scores),
        sum(s.aji_union for s in scores),
    )
    result: dict[str, float | int | None] = {"n_images": len(scores), **pooled.as_dict()}
    for name in ("dq", "sq", "pq", "aji"):
        result[f"mean_{name}"] = math.fsum(getattr(s, name) for s in scores) / len(scores)
    errors = [abs(s.n_pred - s.n_true) / s.n_true for s in scores if s.n_true > 0]
    result["median_count_error"] = float(np.median(errors)) if errors else None
    return result
