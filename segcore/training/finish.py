"""The end of a completed run: evaluate the best weights on full-size validation images, choose
the threshold of best pooled Dice, and write the bundle with its card to ``<run>/bundle``.
"""

from __future__ import annotations

import logging
from typing import Any

from segcore.bundles.card import VALIDATION, ModelCard, SplitFigures
from segcore.bundles.refs import resolve_bundle_ref
from segcore.bundles.store import read_card, save_bundle
from segcore.data.datasets import DatasetSplits, SampleSet, dataset_pixel_size
from segcore.evaluation.evaluate import evaluate
from segcore.timestamps import utc_now
from segcore.training.checkpoints import BEST_FILE
from segcore.training.config import TrainConfig
from segcore.training.runs import RunDir

log = logging.getLogger(__name__)


def source_card(ref: str | None) -> dict[str, Any] | None:
    """Name and hash of the bundle a fine-tuning started from (the ref may later change)."""
    if not ref:
        return None
    card = read_card(resolve_bundle_ref(ref))
    return {"ref": ref, "name": card.name, "model_sha256": card.model_sha256}


def make_card(
    config: TrainConfig,
    splits: DatasetSplits,
    figures: SplitFigures,
    outcome: dict[str, Any],
    *,
    validation_split: str,
) -> ModelCard:
    """The card of a run's bundle: the recipe, the data (and the pixel size its
    ``dataset.json`` declares), the outcome and the validation figures.

    Args:
        config: the run's config.
        splits: the dataset's splits.
        figures: the validation figures at the chosen threshold.
        outcome: ``epochs_completed``, ``best_epoch``, ``time_s``, ``device``, ``command``,
            ``history_last``, recorded under ``training``.
        validation_split: which split validated (``"val"``, or train when there is none).
    """
    return ModelCard(
        name=config.name,
        architecture=config.model_config().to_dict(),
        input_size=config.image_size,
        pixel_size=dataset_pixel_size(splits.root),
        preprocess=config.preprocess,
        threshold=figures.threshold,
        dataset={**splits.summary(), "data": config.data, "validation_split": validation_split},
        training={
            **{k: v for k, v in config.to_dict().items() if k not in ("preprocess", "model")},
            **outcome,
            "init_from_card": source_card(config.init_from),
        },
        metrics={VALIDATION: figures},
        licence=config.licence,
    )


def finish_run(
    run: RunDir,
    config: TrainConfig,
    model,
    splits: DatasetSplits,
    val_source: SampleSet,
    outcome: dict[str, Any],
) -> None:
    """Evaluates the best weights (``best.keras``, else ``model``), writes the bundle and the
    ``completed`` status. ``outcome`` is as for :func:`make_card`."""
    import keras

    best_path = run.checkpoints_dir / BEST_FILE
    if best_path.exists():
        model = keras.saving.load_model(best_path, safe_mode=True)
    run.write_status(batch=0, eta_s=None, phase="evaluating validation images")
    result = evaluate(
        model,
        val_source,
        config.preprocess_config(),
        threshold=0.5,
        tile_size=config.image_size,
        overlap=config.image_size // 4,
        batch_size=config.batch_size,
    )
    figures = SplitFigures.from_evaluation(
        result,
        split=VALIDATION,
        threshold=float(result.best_threshold),
        data=config.data,
        command=outcome.get("command") or "",
    )
    validation_split = "val" if val_source is splits.val else "train (no val split)"
    card = make_card(config, splits, figures, outcome, validation_split=validation_split)
    bundle = save_bundle(model, run.bundle_dir, card)
    run.write_status(
        state="completed",
        phase=None,
        bundle=str(bundle),
        threshold=figures.threshold,
        val_dice=figures.pooled["dice"],
        eta_s=None,
        ended_at=utc_now(),
    )
    log.info(
        "run %s completed: bundle %s (val Dice %.4f at threshold %.2f)",
        run.run_id,
        bundle,
        figures.pooled["dice"],
        figures.threshold,
    )
