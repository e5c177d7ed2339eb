"""The Keras callback of a run: progress in ``status.json``, metrics, checkpoints, previews,
and stopping after the current batch when asked.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np

from segcore.atomic import write_bytes_atomic
from segcore.errors import SegcoreError
from segcore.training.checkpoints import BEST_FILE, save_model_atomic, write_checkpoint
from segcore.training.config import TrainConfig
from segcore.training.runs import RunDir

log = logging.getLogger(__name__)

BEST_METRIC = "val_pooled_dice"
"""The epoch metric that picks the best weights (pooled hard Dice on validation tiles)."""

SOURCES_METRIC = "val_sources_dice"
"""The epoch metric that picks them when the run has ``validation_sources``: the source rule's
pooled Dice over the run's validation images and every source's, at their shared threshold
(:func:`segcore.evaluation.sources.score_sources`)."""


class StopTraining(SegcoreError):
    """Raised by the callback when a stop was requested (never escapes ``train``)."""


def preview_png(images: np.ndarray, masks: np.ndarray, probs: np.ndarray) -> bytes:
    """Rows of image | ground truth | prediction (probability as gray, 0.5 contour in red)."""
    import cv2

    from segcore.data.images import encode_png

    rows = []
    for image, mask, prob in zip(images, masks, probs, strict=True):
        rgb = np.clip(image * 255.0, 0, 255).astype(np.uint8)
        truth = np.repeat((mask[..., :1] * 255).astype(np.uint8), 3, axis=2)
        pred = np.repeat((np.clip(prob[..., :1], 0, 1) * 255).astype(np.uint8), 3, axis=2)
        contours, _ = cv2.findContours(
            (prob[..., 0] >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        pred = cv2.drawContours(np.ascontiguousarray(pred), contours, -1, (255, 0, 0), 1)
        gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.hstack([rgb, gap, truth, gap, pred]))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    return encode_png(np.vstack(rows[:-1]))


def make_callback(
    run: RunDir,
    config: TrainConfig,
    *,
    history,
    best,
    preview,
    stop_flag,
    clock,
    sources=None,
    blend=None,
):
    """The callback for one ``fit``.

    Args:
        run: the run folder.
        config: the run's config.
        history: the list of per-epoch metric rows; completed epochs are appended.
        best: ``{"epoch", "val_dice"}`` of the best epoch so far, or None.
        preview: ``(images, masks)`` of validation tiles drawn after every epoch, or None.
        stop_flag: ``{"requested": bool}``, set by a SIGTERM handler.
        clock: ``{"start", "steps_per_epoch", "initial_epoch"}`` for the ETA.
        sources: ``(sources, model_pixel_size)`` — the run's validation images and its
            ``validation_sources`` as :class:`segcore.evaluation.sources.Source` — scored after
            every epoch into :data:`SOURCES_METRIC` (which then picks the best epoch, recorded
            with its threshold), or None.
        blend: a :class:`~segcore.training.blending.StartBlend` (``start_blend``): the
            sources then score each epoch's weights blended with the start's, as the bundle
            would keep them (the checkpoints stay unblended), or None.

    Returns:
        A ``keras.callbacks.Callback`` with ``best``, ``epoch`` and ``stopped_at`` (the batch
        after which a stop took effect, or None) readable after ``fit``.
    """
    import keras

    class RunCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = best
            self.stopped_at: int | None = None
            self.epoch = 0
            self._last_status = 0.0
            self._epoch_start = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self._epoch_start = time.monotonic()
            run.write_status(epoch=epoch, batch=0)

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if stop_flag["requested"] or run.stop_requested():
                stop_flag["requested"] = True
                self.stopped_at = batch + 1
                # Raising (rather than model.stop_training) skips the validation pass Keras
                # would still run for the interrupted epoch.
                raise StopTraining(f"stop requested after batch {batch + 1}")
            if now - self._last_status >= 1.0:
                self._last_status = now
                steps = clock["steps_per_epoch"]
                done = (self.epoch - clock["initial_epoch"]) * steps + batch + 1
                remaining = (config.epochs - self.epoch) * steps - batch - 1
                rate = (now - clock["start"]) / max(1, done)
                run.write_status(batch=batch + 1, eta_s=round(rate * remaining, 1))

        def on_epoch_end(self, epoch, logs=None):
            if self.stopped_at is not None:
                return  # an interrupted epoch is not a completed one
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row["epoch_time_s"] = round(time.monotonic() - self._epoch_start, 2)
            threshold = None
            if sources is not None:
                run.write_status(phase="scoring validation sources")
                with blend.applied(self.model) if blend else contextlib.nullcontext():
                    choice = score_epoch_sources(self.model, config, *sources)
                threshold = choice.threshold
                row[SOURCES_METRIC] = choice.score
                row["val_sources_threshold"] = choice.threshold
                row.update({f"val_dice_{name}": dice for name, dice in choice.dice.items()})
            history.append(row)
            score = row.get(SOURCES_METRIC if sources is not None else BEST_METRIC)
            if score is not None and (self.best is None or score > self.best["val_dice"]):
                self.best = {"epoch": epoch + 1, "val_dice": score}
                if threshold is not None:
                    self.best.update(metric=SOURCES_METRIC, threshold=threshold)
                save_model_atomic(self.model, run.checkpoints_dir / BEST_FILE)
            write_checkpoint(run, self.model, epoch=epoch + 1, best=self.best, history=history)
            if preview is not None:
                probs = self.model.predict(preview[0], verbose=0)
                write_bytes_atomic(
                    run.preview_path(epoch + 1), preview_png(preview[0], preview[1], probs)
                )
            run.write_status(epoch=epoch + 1, batch=0, best=self.best, phase=None)
            log.info(
                "epoch %d/%d: %s",
                epoch + 1,
                config.epochs,
                ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"),
            )

    return RunCallback()


def score_epoch_sources(model, config: TrainConfig, sources, model_pixel_size):
    """:func:`segcore.evaluation.sources.score_sources` with the run's tiling and rule."""
    from segcore.evaluation.sources import score_sources

    choice, _ = score_sources(
        model,
        sources,
        config.preprocess_config(),
        rule=config.source_rule,
        model_pixel_size=model_pixel_size,
        tile_size=config.image_size,
        overlap=config.image_size // 4,
        batch_size=config.batch_size,
    )
    return choice
