"""Validation across sources: one threshold chosen on many labs' validation parts at once.

A *source* is one lab's or one set's validation images (MoNuSeg's carved val split, the
``val`` part that ``split.json`` fixes in each of ``../shared/data``'s evaluation sets). Each
source is swept over a grid of thresholds (pooled counts, :func:`sweep_source`); a rule then
picks the one threshold the sources share (:func:`choose_threshold`):

``mean``
    the best mean over sources of their pooled Dice — every source weighs the same, whatever
    its number of pixels (the rule the default is chosen by);
``worst``
    the best worst-source pooled Dice.

The trainer uses this to keep the best checkpoint (``TrainConfig.validation_sources``); the
``choose-threshold`` command uses it to set a bundle's threshold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.data.datasets import SampleSet, dataset_pixel_size, load_samples, open_dataset
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, DatasetError
from segcore.evaluation.evaluate import combine_sweeps
from segcore.inference.predict import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from segcore.inference.resolution import predict_at_pixel_size
from segcore.metrics.sweep import SweepResult, threshold_sweep

log = logging.getLogger(__name__)

SourceRule = Literal["mean", "worst"]
SOURCE_RULES: tuple[str, ...] = ("mean", "worst")


@dataclass(frozen=True)
class Source:
    """One source of validation images.

    Attributes:
        name: how tables and logs call it (the dataset folder's name).
        samples: its validation images.
        pixel_size: µm per pixel its ``dataset.json`` declares, or None (native).
    """

    name: str
    samples: SampleSet
    pixel_size: float | None = None


def carved_validation_source(
    root: str | os.PathLike, seed: int, pixel_size: float | None = None
) -> Source:
    """The ``val`` split of a training dataset folder (carved by ``seed`` when it has none of
    its own: ``--seed 1`` gives the default's 4 MoNuSeg validation tiles), named by the folder;
    its pixel size is ``pixel_size``, else the one its ``dataset.json`` declares."""
    return Source(
        Path(root).name,
        open_dataset(root, seed=seed).split("val"),
        pixel_size or dataset_pixel_size(root),
    )


def open_validation_sources(paths: Sequence[str | os.PathLike], split: str = "val") -> list[Source]:
    """The ``split`` part of each dataset folder, as sources named by the folder.

    Raises:
        DatasetError: a folder cannot be opened or its ``split`` part is empty; two folders
            share a name.
    """
    sources = []
    for path in paths:
        root = Path(path)
        samples = open_dataset(root).split(split)
        if not len(samples):
            raise DatasetError(f"{root}: its {split} part is empty (a split.json fixes it)")
        sources.append(Source(root.name, samples, dataset_pixel_size(root)))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise DatasetError(f"validation sources must have distinct folder names, got {names}")
    return sources


def sweep_source(
    model: Any,
    source: Source,
    preprocess: PreprocessConfig,
    *,
    model_pixel_size: float | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    thresholds=None,
) -> SweepResult:
    """Predicts every image of ``source`` at full size and sweeps the thresholds (pixel counts
    only: no nuclei, so it is cheap enough to run after every epoch)."""
    sweeps = []
    for image, truth in load_samples(source.samples):
        probs = predict_at_pixel_size(
            model,
            image,
            preprocess,
            pixel_size=source.pixel_size,
            model_pixel_size=model_pixel_size,
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
        )
        sweeps.append(threshold_sweep((truth > 0).astype(np.uint8), probs, thresholds))
    return combine_sweeps(sweeps)


@dataclass(frozen=True)
class SourceChoice:
    """The threshold the sources share and what each gets there.

    Attributes:
        rule: ``"mean"`` or ``"worst"`` (module docstring).
        threshold: the chosen grid threshold.
        score: the rule's value there (mean or worst pooled Dice over sources).
        dice: each source's pooled Dice at ``threshold``.
        own_best: each source's own best ``(threshold, pooled Dice)``, for comparison.
    """

    rule: str
    threshold: float
    score: float
    dice: dict[str, float]
    own_best: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "score": self.score,
            "dice": dict(self.dice),
            "own_best": {k: {"threshold": t, "dice": d} for k, (t, d) in self.own_best.items()},
        }


def choose_threshold(sweeps: Mapping[str, SweepResult], rule: str = "mean") -> SourceChoice:
    """The grid threshold that maximises ``rule`` over the sources' pooled Dice curves (ties:
    the one closest to 0.5, then the lower).

    Raises:
        ConfigError: an unknown rule, no sources, or sweeps on different grids.
    """
    if rule not in SOURCE_RULES:
        raise ConfigError(f"unknown source rule {rule!r}; use one of {SOURCE_RULES}")
    if not sweeps:
        raise ConfigError("choose_threshold needs at least one source")
    grids = [s.thresholds for s in sweeps.values()]
    grid = grids[0]
    if any(not np.array_equal(g, grid) for g in grids[1:]):
        raise ConfigError("choose_threshold: the sources were swept on different grids")
    curves = np.stack([s.pooled.get("dice") for s in sweeps.values()])
    combined = curves.mean(axis=0) if rule == "mean" else curves.min(axis=0)
    best = max(range(len(grid)), key=lambda i: (combined[i], -abs(grid[i] - 0.5), -grid[i]))
    own = {}
    for name, sweep in sweeps.items():
        t = sweep.best_threshold("dice", pooled=True)
        own[name] = (float(t), float(sweep.pooled.get("dice")[sweep.index_of(t)]))
    return SourceChoice(
        rule=rule,
        threshold=round(float(grid[best]), 6),
        score=float(combined[best]),
        dice={name: float(curves[k, best]) for k, name in enumerate(sweeps)},
        own_best=own,
    )


def score_sources(
    model: Any,
    sources: Sequence[Source],
    preprocess: PreprocessConfig,
    *,
    rule: str = "mean",
    **sweep_args: Any,
) -> tuple[SourceChoice, dict[str, SweepResult]]:
    """Sweeps every source (:func:`sweep_source`) and chooses the shared threshold."""
    sweeps = {}
    for source in sources:
        sweeps[source.name] = sweep_source(model, source, preprocess, **sweep_args)
    choice = choose_threshold(sweeps, rule)
    log.info(
        "sources (%s rule): Dice %.4f at %.2f (%s)",
        rule,
        choice.score,
        choice.threshold,
        ", ".join(f"{k} {v:.3f}" for k, v in choice.dice.items()),
    )
    return choice, sweeps
