"""Before and after a fine-tuning: the model a run started from and the run's model, scored
on the run's own validation images, each at its own threshold, with the same nuclei settings.

:func:`compare_models` gives the ``comparison`` of the new bundle's card
(:attr:`segcore.bundles.card.ModelCard.comparison`) and of the run's ``status.json``, which the
Train and Models pages show side by side. :func:`check_init_from` refuses, before a run is made,
a starting bundle whose input size or architecture the run's settings do not share.

The starting bundle is read through its card alone for the check (no TensorFlow); the
comparison loads its Keras model.
"""

from __future__ import annotations

import logging
from typing import Any

from segcore.bundles.refs import resolve_bundle_ref
from segcore.bundles.store import read_card
from segcore.data.datasets import SampleSet
from segcore.errors import ConfigError
from segcore.inference.instances import InstanceConfig
from segcore.training.config import TrainConfig

log = logging.getLogger(__name__)

_ARCHITECTURE_IGNORED = ("backbone_weights",)
"""ModelConfig fields that do not change the weights' shapes (how the backbone was initialised)."""


def check_init_from(config: TrainConfig) -> None:
    """Refuses a run whose ``init_from`` bundle cannot start it: missing or unreadable, trained
    on tiles of another size than ``config.image_size``, or of another architecture.

    Raises:
        BundleError: the bundle cannot be found or its card read.
        ConfigError: its input size or architecture differs from the run's (the message names
            the bundle and says what to change).
    """
    if not config.init_from:
        return
    ref = config.init_from
    card = read_card(resolve_bundle_ref(ref))
    if card.input_size != config.image_size:
        raise ConfigError(
            f"init_from {ref!r}: {card.name} was trained on {card.input_size}² tiles but this "
            f"run's image size is {config.image_size}; fine-tune it at image size "
            f"{card.input_size}"
        )
    if card.architecture:
        mine, theirs = config.model_config().to_dict(), card.architecture
        differ = sorted(
            key
            for key in (set(mine) & set(theirs)) - set(_ARCHITECTURE_IGNORED)
            if mine[key] != theirs[key]
        )
        if differ:
            detail = ", ".join(f"{k} {theirs[k]!r} (run: {mine[k]!r})" for k in differ)
            raise ConfigError(
                f"init_from {ref!r}: {card.name} has another architecture ({detail}); "
                "fine-tune it with the architecture it was made with"
            )


def _figures(result, threshold: float) -> dict[str, Any]:
    return {
        "threshold": round(float(threshold), 4),
        "dice": round(float(result.pooled["dice"]), 4),
        "pq": _rounded(result.instances.get("pq")),
        "best_threshold": round(float(result.best_threshold), 4),
    }


def _rounded(value) -> float | None:
    return None if value is None else round(float(value), 4)


def compare_models(
    config: TrainConfig,
    model,
    threshold: float,
    samples: SampleSet,
    *,
    split: str,
    instances: InstanceConfig | None = None,
) -> dict[str, Any]:
    """The starting bundle (``config.init_from``) and ``model`` on ``samples``.

    Each model is evaluated at its own threshold (the starting card's; ``threshold`` for the
    new one) with its own preprocessing, at the samples' size, tiled as in training, and its
    nuclei made with ``instances`` (the starting card's settings, which the new bundle keeps).

    Args:
        config: the run's config; ``init_from`` names the starting bundle.
        model: the run's model (the best weights).
        threshold: the new model's threshold.
        samples: the run's validation images.
        split: what ``samples`` are, for the record (``"val"``).
        instances: how masks become nuclei for both models; defaults to the starting card's.

    Returns:
        ``{"split", "images", "data", "before": {...}, "after": {...}, "gain": {...}}`` where
        ``before``/``after`` hold ``model`` (name), ``threshold``, ``dice`` (pooled), ``pq``
        and ``best_threshold``, and ``gain`` the differences after − before.

    Raises:
        ConfigError: ``config`` has no ``init_from``.
        BundleError: the starting bundle cannot be loaded.
    """
    from segcore.bundles.loading import load_bundle
    from segcore.evaluation.evaluate import evaluate

    if not config.init_from:
        raise ConfigError("compare_models needs a run that started from a bundle (init_from)")
    start = load_bundle(config.init_from)
    settings = instances if instances is not None else start.instances
    tiling = {
        "tile_size": config.image_size,
        "overlap": config.image_size // 4,
        "batch_size": config.batch_size,
        "instances": settings,
    }
    before = evaluate(start.model, samples, start.preprocess, threshold=start.threshold, **tiling)
    after = evaluate(model, samples, config.preprocess_config(), threshold=threshold, **tiling)
    figures = {
        "before": {
            "model": start.card.name,
            "ref": config.init_from,
            **_figures(before, start.threshold),
        },
        "after": {"model": config.name, **_figures(after, threshold)},
    }
    gain = {"dice": round(figures["after"]["dice"] - figures["before"]["dice"], 4)}
    if figures["after"]["pq"] is not None and figures["before"]["pq"] is not None:
        gain["pq"] = round(figures["after"]["pq"] - figures["before"]["pq"], 4)
    log.info(
        "before/after on %d %s images: Dice %.4f -> %.4f, PQ %s -> %s",
        len(samples),
        split,
        figures["before"]["dice"],
        figures["after"]["dice"],
        figures["before"]["pq"],
        figures["after"]["pq"],
    )
    return {"split": split, "images": len(samples), "data": config.data, **figures, "gain": gain}
