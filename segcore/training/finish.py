"""The end of a run. A completed one: evaluate the best weights on full-size validation images,
choose the threshold of best pooled Dice, score a fine-tuning's starting model beside the new one
(:mod:`segcore.training.comparison`), and write the bundle with its card to ``<run>/bundle``.
A failed one: its status records the reason, a hint and the traceback (:func:`record_failure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np

from segcore.atomic import is_disk_full
from segcore.bundles.card import VALIDATION, ModelCard, SplitFigures
from segcore.bundles.loading import Bundle
from segcore.bundles.refs import resolve_bundle_ref
from segcore.bundles.store import read_card, save_bundle
from segcore.data.datasets import DatasetSplits, SampleSet, dataset_pixel_size
from segcore.errors import SegcoreError
from segcore.evaluation.evaluate import evaluate
from segcore.timestamps import utc_now
from segcore.training.callback import score_epoch_sources
from segcore.training.checkpoints import BEST_FILE
from segcore.training.comparison import compare_models
from segcore.training.config import TrainConfig
from segcore.training.locks import TrainingBusyError
from segcore.training.runs import ACTIVE_STATES, RunDir, RunError

log = logging.getLogger(__name__)


def source_card(ref: str | None) -> dict[str, Any] | None:
    """Name and hash of the bundle a fine-tuning started from (the ref may later change), and
    the nuclei settings its fine-tuned bundle keeps; None without ``ref``."""
    if not ref:
        return None
    card = read_card(resolve_bundle_ref(ref))
    return {
        "ref": ref,
        "name": card.name,
        "model_sha256": card.model_sha256,
        "instances": dict(card.instances),
    }


def make_card(
    config: TrainConfig,
    splits: DatasetSplits,
    figures: SplitFigures,
    outcome: dict[str, Any],
    *,
    validation_split: str,
    comparison: dict[str, Any] | None = None,
) -> ModelCard:
    """The card of a run's bundle: the recipe, the data (and the pixel size its
    ``dataset.json`` declares), the outcome and the validation figures. A fine-tuned bundle
    keeps the nuclei settings of the bundle it started from.

    Args:
        config: the run's config.
        splits: the dataset's splits.
        figures: the validation figures at the chosen threshold.
        outcome: ``epochs_completed``, ``best_epoch``, ``kept_epoch``, ``time_s``,
            ``device``, ``command``, ``history_last`` (and ``replay`` when the run asked for
            replay tiles), recorded under ``training``.
        validation_split: which split validated (``"val"``, or train when there is none).
        comparison: the starting model and this one on the validation images
            (:func:`~segcore.training.comparison.compare_models`), for a fine-tuning.
    """
    start = source_card(config.init_from)  # the starting card, read once
    return ModelCard(
        name=config.name,
        architecture=config.model_config().to_dict(),
        input_size=config.image_size,
        pixel_size=dataset_pixel_size(splits.root),
        preprocess=config.preprocess,
        threshold=figures.threshold,
        instances=start.pop("instances") if start else {},
        dataset={**splits.summary(), "data": config.data, "validation_split": validation_split},
        training={
            **{k: v for k, v in config.to_dict().items() if k not in ("preprocess", "model")},
            **outcome,
            "init_from_card": start,
        },
        metrics={VALIDATION: figures},
        comparison=comparison or {},
        licence=config.licence,
    )


def finish_run(
    run: RunDir,
    config: TrainConfig,
    model,
    splits: DatasetSplits,
    val_source: SampleSet,
    outcome: dict[str, Any],
    *,
    sources=None,
    blend=None,
) -> None:
    """Evaluates the best weights (``best.keras``, else ``model``; ``model`` itself with
    ``final_weights`` ``"last"``) — blended with the starting bundle's when ``blend`` (a
    :class:`~segcore.training.blending.StartBlend`, ``start_blend``) is given — writes the
    bundle and the ``completed`` status. ``outcome`` is as for :func:`make_card`.

    The bundle's threshold is the one of best pooled Dice on the validation images, or, with
    ``sources`` (as for :func:`segcore.training.callback.make_callback`), the one the sources
    share under ``config.source_rule`` (the card then records every source's Dice there);
    with ``threshold_rule`` ``"start"``, the starting bundle's (the nearest of the sweep's
    thresholds, 0.00–1.00 by 0.01).
    A run that started from a bundle (``init_from``) also scores that bundle on the same
    images (:func:`~segcore.training.comparison.compare_models`): the card's and the
    status's ``comparison``."""
    import keras

    best_path = run.checkpoints_dir / BEST_FILE
    if config.final_weights == "best" and best_path.exists():
        model = keras.saving.load_model(best_path, safe_mode=True)
    if blend is not None:
        blend.apply(model)
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
    threshold = float(result.best_threshold)
    if sources is not None:
        run.write_status(phase="scoring validation sources")
        choice = score_epoch_sources(model, config, *sources)
        threshold = choice.threshold
        outcome = {
            **outcome,
            "validation_sources": {
                "sources": [source.name for source in sources[0]],
                "note": "validation parts only (split.json); never trained on",
                **choice.to_dict(),
            },
        }
    if config.threshold_rule == "start":  # on the sweep's grid, where the figures are read
        start = read_card(resolve_bundle_ref(config.init_from)).threshold
        threshold = float(result.sweep.thresholds[np.argmin(abs(result.sweep.thresholds - start))])
    figures = SplitFigures.from_evaluation(
        result,
        split=VALIDATION,
        threshold=threshold,
        data=config.data,
        command=outcome.get("command") or "",
    )
    validation_split = "val" if val_source is splits.val else "train (no val split)"
    comparison = None
    if config.init_from:
        run.write_status(phase="scoring the starting model")
        try:
            comparison = compare_models(
                config, model, figures.threshold, val_source, split=validation_split
            )
        except SegcoreError as exc:  # the starting bundle went away: the run still completes
            log.warning("no before/after comparison: %s", exc)
    card = make_card(
        config, splits, figures, outcome, validation_split=validation_split, comparison=comparison
    )
    bundle = save_bundle(model, run.bundle_dir, card)
    runtime = None
    if config.prepare_runtime:
        run.write_status(phase="preparing the fast runtime")
        runtime = prepare_fast_runtime(Bundle(path=bundle, card=read_card(bundle), model=model))
    run.write_status(
        state="completed",
        phase=None,
        bundle=str(bundle),
        runtime=runtime,
        threshold=figures.threshold,
        val_dice=figures.pooled["dice"],
        comparison=comparison,
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


def prepare_fast_runtime(bundle: Bundle) -> dict[str, Any]:
    """Converts ``bundle`` to the fast CPU runtimes and gates them, as ``runtimes --prepare``
    does (the record lands in the bundle's runtime cache, where the app looks first). Returns
    what the run's status records: ``{"auto": runtime, "seconds": s}``, or ``{"skipped":
    reason}`` — a failure here is logged and never fails the run, whose bundle is complete."""
    from segcore.bundles.runtime_cache import bundle_runtime_cache
    from segcore.inference.runtimes import selection

    if not selection.auto_candidates():
        return {"skipped": "no fast runtime can run here (OpenVINO is not installed)"}
    start = time.monotonic()
    try:
        record = bundle_runtime_cache(bundle).run_gate(log.info)
    except Exception as exc:  # the bundle stands; the app converts on first use instead
        log.warning("the fast runtime was not prepared: %s", exc)
        return {"skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
    chosen = selection.choose(record)
    log.info("prepared the fast runtime: auto picks %s", chosen)
    return {"auto": chosen, "seconds": round(time.monotonic() - start, 1)}


def hint_for(exc: BaseException) -> str | None:
    """What to try after ``exc`` ended a run, or None."""
    text = f"{type(exc).__name__}: {exc}"
    if "ResourceExhausted" in text or "out of memory" in text.lower() or "OOM" in text:
        return "out of memory: lower --batch-size (or --image-size) and resume or start again"
    if isinstance(exc, SegcoreError):
        return "fix the input named above and start again"
    return None


def record_failure(run: RunDir, exc: BaseException) -> None:
    """Marks the run ``failed`` (``stopped`` for Ctrl-C) with reason, hint and traceback.

    A full disk is recorded as such, after deleting ``.reserve`` to make room. Nothing is
    written for a run folder that was not made, nor for a run refused because the device is
    busy (its folder stays as it was) unless a launcher queued it for this very process.
    """
    if not run.status_path.is_file():
        return
    if isinstance(exc, TrainingBusyError):
        status = run.read_status_raw()
        if status.get("state") in ACTIVE_STATES and status.get("pid") == os.getpid():
            run.write_final_status(
                state="failed", reason=str(exc), hint="wait or stop that run", ended_at=utc_now()
            )
        return
    state = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
    reason, hint = f"{type(exc).__name__}: {exc}", hint_for(exc)
    if is_disk_full(exc):
        run.release_reserve()
        reason = f"disk full: {reason}"
        hint = f"free space on the disk of {run.path}, then {resume_hint(run)}"
    run.write_final_status(
        state=state,
        reason=reason[:2000],
        hint=hint,
        traceback=traceback.format_exc()[-20000:],
        eta_s=None,
        ended_at=utc_now(),
    )
    log.error("run %s %s: %s", run.run_id, state, exc)


@contextlib.contextmanager
def recording_failure(run: RunDir) -> Iterator[None]:
    """Within the block, an exception marks ``run`` failed (:func:`record_failure`) and goes on;
    a full disk goes on as a :class:`~segcore.training.runs.RunError` that says how to resume.
    ``.reserve`` is deleted at the end either way.

    Args:
        run: the run (or slide job) folder.

    Yields:
        None.
    """
    try:
        yield
    except BaseException as exc:
        record_failure(run, exc)
        if is_disk_full(exc) and not isinstance(exc, RunError):
            message = f"{run.path}: disk full ({exc}); free space, then {resume_hint(run)}"
            raise RunError(message) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            run.release_reserve()


def resume_hint(run: RunDir) -> str:
    """How to resume ``run`` from the command line."""
    return f"resume with: {run.resume_command()}"
