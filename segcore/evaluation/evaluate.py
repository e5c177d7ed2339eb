"""Evaluating a model on a set of samples at full image size (library code; no CLI here).

:func:`evaluate` predicts every sample with :func:`segcore.inference.predict.predict_probabilities`
(so images of any size are tiled exactly as in production) and scores it with
:mod:`segcore.metrics`:

* at one ``threshold``: Dice, Jaccard, precision and recall per image, pooled (counts summed
  over all pixels of all images) and averaged over images;
* nuclei as objects at that threshold: the prediction split into nuclei
  (:func:`segcore.inference.instances.label_instances` with the model's
  :class:`~segcore.inference.instances.InstanceConfig`) against the ground truth's instances
  (:func:`segcore.metrics.labels.ground_truth_instances`: instance labels where the masks have
  them, else connected components, with a note): true and predicted counts, detection F1 at
  IoU > 0.5, panoptic quality and AJI per image, and for the set
  (:func:`segcore.metrics.instances.combine_instance_scores`);
* over a grid of thresholds: the pooled and mean-over-images curves of the same four metrics,
  and the threshold of best pooled Dice;
* calibration: the reliability diagram of the probabilities and the expected calibration error
  (:mod:`segcore.metrics.calibration`: 10 equal-width bins, pixels pooled over all images).

Only one probability map is in memory at a time: each image's sweep counts
(:func:`segcore.metrics.sweep.threshold_sweep`, ``(T, 4)`` integers) are kept and combined at
the end, giving exactly the sweep that one call on all images at once would give; likewise
each image's per-bin calibration sums (:class:`~segcore.metrics.calibration.Reliability`) are
added up.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.data.datasets import SampleSet
from segcore.data.images import check_same_size
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, DatasetError
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.inference.predict import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
)
from segcore.inference.resolution import (
    check_pixel_size,
    grid_pixel_size,
    predict_at_pixel_size,
)
from segcore.metrics.calibration import Reliability, reliability
from segcore.metrics.counts import (
    METRIC_NAMES,
    ConfusionCounts,
    binarize,
    check_threshold,
    confusion_counts,
)
from segcore.metrics.instances import InstanceScores, combine_instance_scores, instance_scores
from segcore.metrics.labels import ground_truth_instances
from segcore.metrics.sweep import SweepResult, sweep_from_image_counts, threshold_sweep

log = logging.getLogger(__name__)

EvaluationProgress = Callable[[int, int, str], None]
"""``progress(done, total, sample_id)``: called after each sample."""

COUNT_NAMES = ("tp", "fp", "fn", "tn")


def load_instance_truth(
    samples: SampleSet, index: int
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Sample ``index`` with its ground truth as nuclei: ``(image, int32 labels, note)``.

    The ground truth is read as stored (:meth:`~segcore.data.datasets.SampleSet.load_truth`),
    checked against the image's size and turned into instance labels
    (:func:`~segcore.metrics.labels.ground_truth_instances`); ``note`` says how, or is None.

    Raises:
        InvalidImageError: the sample cannot be loaded, or its image and mask differ in size.
    """
    image, truth = samples.load_truth(index)
    check_same_size(image, truth, name=samples.describe(index))
    labels, note = ground_truth_instances(truth, name=samples.describe(index))
    return image, labels, note


def _mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


def combine_sweeps(sweeps: list[SweepResult]) -> SweepResult:
    """Merges the sweeps of disjoint image sets (on the same grid) into one.

    The result equals :func:`segcore.metrics.sweep.threshold_sweep` called once on all the
    images,
    in the same order: pooled counts are summed, per-image curves stacked, and the mean over
    images recomputed with :func:`math.fsum`.

    Args:
        sweeps: results of :func:`~segcore.metrics.sweep.threshold_sweep`, at least one, all
            on the same threshold grid.

    Returns:
        The combined :class:`~segcore.metrics.sweep.SweepResult` (read-only arrays).

    Raises:
        ValueError: ``sweeps`` is empty or the grids differ.
    """
    if not sweeps:
        raise ValueError("combine_sweeps needs at least one sweep")
    grid = sweeps[0].thresholds
    for sweep in sweeps[1:]:
        if not np.array_equal(sweep.thresholds, grid):
            raise ValueError("combine_sweeps: the sweeps use different threshold grids")
    return sweep_from_image_counts(grid, np.concatenate([s.image_counts for s in sweeps], axis=0))


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        threshold: the threshold the per-image, pooled and mean metrics were computed at.
        per_image: one dict per sample, in order: ``id``, ``dice``, ``jaccard``,
            ``precision``, ``recall``, ``tp``, ``fp``, ``fn``, ``tn``, ``nuclei_true``,
            ``nuclei_pred`` (instance counts), ``detection_f1``, ``pq`` and ``aji``.
        pooled: the pixel metrics and counts (without ``id``) from the counts summed over all
            images; the nucleus counts are summed too.
        mean: ``dice``, ``jaccard``, ``precision``, ``recall``, ``nuclei_true`` and
            ``nuclei_pred`` averaged over images with equal weight.
        sweep: the threshold sweep over all images (pooled, mean-over-images and per-image
            curves and counts).
        best_threshold: the grid threshold of best pooled Dice (ties: closest to 0.5).
        instances: the set's instance figures
            (:func:`segcore.metrics.instances.combine_instance_scores`: pooled and
            ``mean_pq``, ``mean_aji``, ``median_count_error``, ...).
        notes: how the ground truth was read, once per distinct note (e.g. binary masks whose
            touching nuclei count as one); empty when every mask holds instance labels.
        calibration: the reliability diagram of all pixels pooled (per-bin pixels, nucleus
            pixels and summed probabilities on 10 equal-width bins) with its ``ece``
            (:class:`~segcore.metrics.calibration.Reliability`); None only for a result made
            without it.
    """

    threshold: float
    per_image: list[dict[str, Any]]
    pooled: dict[str, float | int]
    mean: dict[str, float]
    sweep: SweepResult
    best_threshold: float
    instances: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    calibration: Reliability | None = None

    @property
    def n_images(self) -> int:
        """Number of images evaluated."""
        return len(self.per_image)

    def worst(self, count: int, metric: str = "dice") -> list[dict[str, Any]]:
        """The ``count`` rows of :attr:`per_image` with the lowest ``metric``, lowest first
        (ties keep the samples' order)."""
        return sorted(self.per_image, key=lambda row: row[metric])[: max(0, int(count))]

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (Python numbers and lists, no arrays).

        Keys: ``threshold``, ``n_images``, ``per_image``, ``pooled``, ``mean``,
        ``best_threshold``, ``instances``, ``notes``, ``sweep`` (``thresholds``; ``pooled``
        and ``mean``, each mapping the four metric names to lists; pooled ``tp``, ``fp``,
        ``fn``, ``tn``) and ``calibration``
        (:meth:`~segcore.metrics.calibration.Reliability.to_dict`: ``n_bins``, ``edges``,
        ``counts``, ``positives``, ``confidence``, ``observed``, ``ece``, ``max_gap``; or None).
        """
        sweep = {
            "thresholds": self.sweep.thresholds.tolist(),
            "pooled": {m: self.sweep.pooled.get(m).tolist() for m in METRIC_NAMES},
            "mean": {m: self.sweep.per_image_mean.get(m).tolist() for m in METRIC_NAMES},
            **{name: getattr(self.sweep, name).tolist() for name in COUNT_NAMES},
        }
        return {
            "threshold": float(self.threshold),
            "n_images": self.n_images,
            "per_image": [dict(row) for row in self.per_image],
            "pooled": dict(self.pooled),
            "mean": dict(self.mean),
            "best_threshold": float(self.best_threshold),
            "instances": dict(self.instances),
            "notes": list(self.notes),
            "sweep": sweep,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }


def _check_threshold_args(threshold: object, thresholds: object) -> tuple[float, np.ndarray]:
    value = check_threshold(threshold)
    try:  # validated by the metrics module's own rules before any model call
        grid = threshold_sweep(np.zeros((1, 1)), np.zeros((1, 1)), thresholds).thresholds
    except ValueError as exc:
        raise ConfigError(f"invalid thresholds: {exc}") from exc
    return float(value), grid


def evaluate(
    model: Any,
    samples: SampleSet,
    preprocess: PreprocessConfig,
    *,
    threshold: float = 0.5,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    thresholds=None,
    progress: EvaluationProgress | None = None,
    pixel_size: float | None = None,
    model_pixel_size: float | None = None,
    instances: InstanceConfig | None = None,
) -> EvaluationResult:
    """Predicts every sample at full size and scores it at one threshold and over a grid.

    Args:
        model: a ``keras.Model`` or a callable on batches, as for
            :func:`segcore.inference.predict.predict_probabilities`.
        samples: the samples; ``samples.load(i)`` gives ``(image, mask)``.
        preprocess: the preprocessing the model was trained with.
        threshold: where the per-image, pooled and mean metrics are computed (a pixel is
            positive when ``prob >= threshold``), defaults to 0.5; need not be on the grid.
        tile_size: tile side for :func:`~segcore.inference.predict.predict_probabilities`,
            default 256.
        overlap: tile overlap, default 64.
        batch_size: tiles per model call, default 8.
        thresholds: the sweep's grid, ascending in ``[0, 1]``; defaults to
            :data:`segcore.metrics.sweep.DEFAULT_THRESHOLDS` (0.00, 0.01, …, 1.00).
        progress: called as ``progress(done, total, sample_id)`` after each sample.
        pixel_size: µm per pixel of the samples; when given, each image is resampled to
            ``model_pixel_size`` for the model and the probabilities back
            (:func:`segcore.inference.resolution.predict_at_pixel_size`), so the metrics are
            computed on the samples' own grid. ``None`` (the default) predicts as they are.
        model_pixel_size: µm per pixel of the model (its card's), ``None`` for 0.25.
        instances: how the prediction becomes nuclei (the bundle's
            :attr:`~segcore.bundles.loading.Bundle.instances`), defaults to
            ``InstanceConfig()``; its µm settings use ``pixel_size`` (else the model's).

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        DatasetError: ``samples`` is empty.
        ConfigError: ``threshold``, ``thresholds`` or the tiling arguments are invalid (checked
            before the first prediction).
        InvalidImageError: a sample cannot be loaded, or its image and mask differ in size.
    """
    threshold, grid = _check_threshold_args(threshold, thresholds)
    if pixel_size is not None:
        check_pixel_size(pixel_size)
    if len(samples) == 0:
        raise DatasetError("evaluate: the sample set is empty")
    total = len(samples)
    per_image: list[dict[str, Any]] = []
    counts: list[ConfusionCounts] = []
    sweeps: list[SweepResult] = []
    objects: list[InstanceScores] = []
    calibration = Reliability.empty()
    notes: dict[str, None] = {}
    image_pixel_size = grid_pixel_size(pixel_size, model_pixel_size)
    for index in range(total):
        sample_id = samples.ids[index]
        image, true_labels, note = load_instance_truth(samples, index)
        if note:
            notes[note] = None
        mask = (true_labels > 0).astype(np.uint8)
        probs = predict_at_pixel_size(
            model,
            image,
            preprocess,
            pixel_size=pixel_size,
            model_pixel_size=model_pixel_size,
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
        )
        image_counts = confusion_counts(mask, binarize(probs, threshold))
        counts.append(image_counts)
        sweeps.append(threshold_sweep(mask, probs, grid))
        calibration = calibration + reliability(mask, probs)
        pred_labels = label_instances(probs, threshold, instances, pixel_size=image_pixel_size)
        objects.append(instance_scores(true_labels, pred_labels))
        per_image.append(
            {
                "id": sample_id,
                **image_counts.as_dict(),
                "nuclei_true": objects[-1].n_true,
                "nuclei_pred": objects[-1].n_pred,
                "detection_f1": objects[-1].f1,
                "pq": objects[-1].pq,
                "aji": objects[-1].aji,
            }
        )
        log.info(
            "evaluated %s (%d/%d): Dice %.4f, PQ %.4f",
            sample_id,
            index + 1,
            total,
            image_counts.dice,
            objects[-1].pq,
        )
        del image, mask, probs, true_labels, pred_labels
        if progress is not None:
            progress(index + 1, total, sample_id)

    pooled_counts = sum(counts, ConfusionCounts(0, 0, 0, 0))
    pooled: dict[str, float | int] = {
        **pooled_counts.as_dict(),
        "nuclei_true": sum(row["nuclei_true"] for row in per_image),
        "nuclei_pred": sum(row["nuclei_pred"] for row in per_image),
    }
    mean = {
        name: _mean(row[name] for row in per_image)
        for name in (*METRIC_NAMES, "nuclei_true", "nuclei_pred")
    }
    sweep = combine_sweeps(sweeps)
    return EvaluationResult(
        threshold=threshold,
        per_image=per_image,
        pooled=pooled,
        mean=mean,
        sweep=sweep,
        best_threshold=sweep.best_threshold("dice", pooled=True),
        instances=combine_instance_scores(objects),
        notes=tuple(notes),
        calibration=calibration,
    )
