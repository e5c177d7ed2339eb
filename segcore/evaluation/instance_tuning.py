"""Choosing how the mask becomes nuclei: a grid of :class:`InstanceConfig` on validation tiles.

:func:`tune_instances` predicts each sample once, then splits the prediction with every
``(min_area_um2, split_depth_um)`` pair of a grid
(:func:`segcore.inference.instances.label_instances`) and scores it against the ground truth's
instances (:func:`segcore.metrics.instances.instance_scores`). The chosen setting maximises
the mean over images of ``(PQ + AJI) / 2`` — the two instance figures the project reports —
and ties go to the first grid point. Run it on validation tiles only
(``python -m segcore tune-instances --split val``), never on a test or evaluation set.
:func:`combine_tunings` chooses one setting for several sources (``--source``: other labs'
validation parts), each source weighing the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.data.datasets import SampleSet
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, DatasetError
from segcore.evaluation.evaluate import load_instance_truth
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.inference.resolution import grid_pixel_size, predict_at_pixel_size
from segcore.metrics.counts import check_threshold
from segcore.metrics.instances import instance_scores

MIN_AREAS_UM2 = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0)
"""Default grid of :attr:`InstanceConfig.min_area_um2` (µm²)."""

SPLIT_DEPTHS_UM = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
"""Default grid of :attr:`InstanceConfig.split_depth_um` (µm)."""


@dataclass(frozen=True)
class InstanceTuning:
    """The outcome of :func:`tune_instances`.

    Attributes:
        config: the chosen setting (best mean ``(PQ + AJI) / 2``).
        table: one row per grid point, in grid order: ``min_area_um2``, ``split_depth_um``,
            ``mean_pq``, ``mean_aji``, ``score`` (their mean) and ``median_count_error``.
        n_images: how many samples were scored.
    """

    config: InstanceConfig
    table: list[dict[str, float]]
    n_images: int

    @property
    def best(self) -> dict[str, float]:
        """The table's row of the chosen setting."""
        return next(
            row
            for row in self.table
            if row["min_area_um2"] == self.config.min_area_um2
            and row["split_depth_um"] == self.config.split_depth_um
        )


def _truths_and_probabilities(
    model: Any,
    samples: SampleSet,
    preprocess: PreprocessConfig,
    pixel_size: float | None,
    model_pixel_size: float | None,
    progress: Callable[[int, int, str], None] | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for index in range(len(samples)):
        image, labels, _ = load_instance_truth(samples, index)
        probs = predict_at_pixel_size(
            model, image, preprocess, pixel_size=pixel_size, model_pixel_size=model_pixel_size
        )
        pairs.append((labels, probs))
        if progress is not None:
            progress(index + 1, len(samples), samples.ids[index])
    return pairs


def _row(pairs, threshold: float, config: InstanceConfig, pixel_size: float) -> dict[str, float]:
    scores = [
        instance_scores(labels, label_instances(probs, threshold, config, pixel_size=pixel_size))
        for labels, probs in pairs
    ]
    mean_pq = math.fsum(s.pq for s in scores) / len(scores)
    mean_aji = math.fsum(s.aji for s in scores) / len(scores)
    errors = [abs(s.n_pred - s.n_true) / s.n_true for s in scores if s.n_true]
    return {
        "min_area_um2": config.min_area_um2,
        "split_depth_um": config.split_depth_um,
        "mean_pq": mean_pq,
        "mean_aji": mean_aji,
        "score": (mean_pq + mean_aji) / 2,
        "median_count_error": float(np.median(errors)) if errors else float("nan"),
    }


def tune_instances(
    model: Any,
    samples: SampleSet,
    preprocess: PreprocessConfig,
    *,
    threshold: float,
    pixel_size: float | None = None,
    model_pixel_size: float | None = None,
    min_areas_um2: Sequence[float] = MIN_AREAS_UM2,
    split_depths_um: Sequence[float] = SPLIT_DEPTHS_UM,
    progress: Callable[[int, int, str], None] | None = None,
) -> InstanceTuning:
    """Chooses the :class:`InstanceConfig` of best mean ``(PQ + AJI) / 2`` on ``samples``.

    Args:
        model: a ``keras.Model`` or callable on batches (as for
            :func:`segcore.evaluation.evaluate.evaluate`).
        samples: validation samples; instance ground truth where they have it.
        preprocess: the model's preprocessing.
        threshold: the model's threshold (the mask that is split).
        pixel_size: µm per pixel of the samples, ``None`` for the model's.
        model_pixel_size: µm per pixel of the model, ``None`` for 0.25.
        min_areas_um2: the grid of minimum areas.
        split_depths_um: the grid of split depths.
        progress: ``progress(done, total, sample_id)`` after each prediction.

    Raises:
        DatasetError: ``samples`` is empty.
        ConfigError: a bad threshold or grid value.
    """
    threshold = check_threshold(threshold)
    grid = [
        InstanceConfig(min_area_um2=float(area), split_depth_um=float(depth))
        for area, depth in itertools.product(min_areas_um2, split_depths_um)
    ]
    if not grid:
        raise ConfigError("tune_instances: the grid is empty")
    if len(samples) == 0:
        raise DatasetError("tune_instances: the sample set is empty")
    pairs = _truths_and_probabilities(
        model, samples, preprocess, pixel_size, model_pixel_size, progress
    )
    size = grid_pixel_size(pixel_size, model_pixel_size)
    table = [_row(pairs, threshold, config, size) for config in grid]
    best = max(range(len(grid)), key=lambda i: (table[i]["score"], -i))
    return InstanceTuning(config=grid[best], table=table, n_images=len(samples))


def combine_tunings(tunings: Mapping[str, InstanceTuning]) -> InstanceTuning:
    """One setting for several sources tuned on the same grid: per grid point, the mean over
    sources of their ``mean_pq``, ``mean_aji``, ``score`` and ``median_count_error`` (each
    source weighs the same, whatever its number of images); the best mean score is chosen
    (ties: the first grid point). Each row also holds ``score_<source>``.

    Raises:
        ConfigError: no tunings, or tunings on different grids.
    """
    if not tunings:
        raise ConfigError("combine_tunings needs at least one tuning")
    tables = list(tunings.values())
    keys = [[(r["min_area_um2"], r["split_depth_um"]) for r in t.table] for t in tables]
    if any(k != keys[0] for k in keys[1:]):
        raise ConfigError("combine_tunings: the sources were tuned on different grids")
    table = []
    for index, (area, depth) in enumerate(keys[0]):
        rows = [t.table[index] for t in tables]
        row = {"min_area_um2": area, "split_depth_um": depth}
        for name in ("mean_pq", "mean_aji", "score", "median_count_error"):
            row[name] = math.fsum(r[name] for r in rows) / len(rows)
        row.update({f"score_{n}": t.table[index]["score"] for n, t in tunings.items()})
        table.append(row)
    best = max(range(len(table)), key=lambda i: (table[i]["score"], -i))
    config = InstanceConfig(min_area_um2=keys[0][best][0], split_depth_um=keys[0][best][1])
    return InstanceTuning(config=config, table=table, n_images=sum(t.n_images for t in tables))
