"""Training: one entry point for the CLI, Python and the app's background jobs.

:func:`train` runs a :class:`TrainConfig` in a run directory (:mod:`segcore.training.runs`):

* data from :func:`segcore.data.datasets.open_dataset` (or the synthetic set), random crops with
  augmentation (:mod:`segcore.training.pipeline`), validation on tiles of the val split;
* DeepLabV3+ (:func:`segcore.network.model.build_deeplabv3plus`), Adam with cosine decay, binary
  cross-entropy (or BCE + Dice), compiled metrics Dice, Jaccard, accuracy and the pooled hard
  Dice used to choose the best epoch;
* after every epoch, in this order: ``checkpoints/epoch-NNN.keras`` (model + optimizer),
  ``metrics.csv``, ``checkpoints/state.json`` pointing at that checkpoint, the preview image and
  ``status.json``. All writes are atomic and ``state.json`` is written last, so a process killed
  at any moment (even ``kill -9``) resumes with ``--resume`` from the last completed epoch, with
  its optimizer state and metrics history;
* a stop request (``stop.request`` or SIGTERM) ends the run after the current batch: it saves a
  checkpoint of that moment and the state ``stopped``; a resumed run restarts the interrupted
  epoch from those weights;
* an exception marks the run ``failed`` with the reason, a hint and the traceback;
* at the end, the best epoch's weights are evaluated on the full-size validation images, the
  threshold that maximises validation Dice is chosen, and a bundle (:mod:`segcore.bundles.store`)
  is
  written to ``<run>/bundle``.

Only one training runs per device at a time (:class:`segcore.training.locks.DeviceLock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.atomic import write_bytes_atomic, write_json_atomic
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, SegcoreError
from segcore.network.config import ModelConfig
from segcore.training.runs import RunDir, default_runs_dir, new_run_id, process_start_time, utc_now

log = logging.getLogger(__name__)

LossName = Literal["bce", "bce+dice"]
SYNTHETIC = "synthetic"
BEST_METRIC = "val_pooled_dice"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as the run's ``config.json``).

    Args:
        data: a dataset folder of any layout :func:`segcore.data.datasets.open_dataset` reads, or
            ``"synthetic"`` for the embedded synthetic set (generated on first use).
        epochs: number of epochs, defaults to 40.
        batch_size: crops per batch, defaults to 8.
        image_size: side of the square training crops, a multiple of 16, defaults to 256.
        lr: initial learning rate of Adam, defaults to 1e-3.
        lr_schedule: ``"cosine"`` (decay to ``lr * 0.01`` over the run) or ``"constant"``.
        loss: ``"bce"`` (binary cross-entropy, the default) or ``"bce+dice"``.
        augment: random flips, 90° rotations, scale and colour jitter, defaults to True.
        backbone_weights: ``"imagenet"``, ``None`` (random) or a ResNet50 ``.h5`` path.
        crops_per_epoch: random crops per epoch; ``None`` covers every training image once.
        seed: seed of splits, crops, augmentation and weight initialisation.
        val_fraction: share of samples carved into val when the dataset has no val split.
        test_fraction: share carved into test when the dataset has no test split.
        synthetic_count: tiles of the synthetic set (``data="synthetic"``).
        preprocess: a :class:`~segcore.data.preprocessing.PreprocessConfig` as a dict.
        model: a :class:`~segcore.network.model.ModelConfig` as a dict (``backbone_weights`` here is
            ignored; the field above is used).
        preview_tiles: validation tiles shown in ``previews/epoch_NNN.png``.
        init_from: a bundle ref (see :func:`segcore.bundles.loading.load_bundle`) whose weights
            start the model instead of ``backbone_weights`` (fine-tuning); its architecture must be
            this config's ``model``. ``None`` (the default) starts from ``backbone_weights``.
        name: the bundle's name.
        licence: licence recorded in the bundle's card (that of the training data).
        run_dir: where the run lives; ``None`` makes ``runs/<new run id>``.
    """

    data: str = SYNTHETIC
    epochs: int = 40
    batch_size: int = 8
    image_size: int = 256
    lr: float = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    loss: LossName = "bce"
    augment: bool = True
    backbone_weights: str | None = None
    crops_per_epoch: int | None = None
    seed: int = 0
    val_fraction: float = 0.12
    test_fraction: float = 0.09
    synthetic_count: int = 760
    preprocess: dict = field(default_factory=lambda: PreprocessConfig().to_dict())
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())
    preview_tiles: int = 4
    init_from: str | None = None
    name: str = "segcore-deeplabv3plus"
    licence: str = "unspecified"
    run_dir: str | None = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if self.image_size < 32 or self.image_size % 16:
            raise ConfigError(f"image_size must be a multiple of 16 (≥ 32), got {self.image_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.loss not in ("bce", "bce+dice"):
            raise ConfigError(f"loss must be 'bce' or 'bce+dice', got {self.loss!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if self.crops_per_epoch is not None and self.crops_per_epoch < 1:
            raise ConfigError("crops_per_epoch must be at least 1 (or null)")
        if isinstance(self.backbone_weights, str) and self.backbone_weights.lower() == "none":
            object.__setattr__(self, "backbone_weights", None)
        # Validate the nested configs now, not an hour into the run.
        self.preprocess_config()
        self.model_config()

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing as a :class:`PreprocessConfig`."""
        return PreprocessConfig.from_dict(self.preprocess)

    def model_config(self) -> ModelConfig:
        """The architecture as a :class:`ModelConfig`, with this run's backbone weights."""
        return ModelConfig.from_dict({**self.model, "backbone_weights": self.backbone_weights})

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from a dict; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Reads a JSON config file.

        Raises:
            ConfigError: the file is missing, not JSON, or has unknown or invalid values.
        """
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON config ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a JSON object")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


class StopTraining(SegcoreError):
    """Raised internally when a stop was requested (never escapes :func:`train`)."""


# --------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_state(run: RunDir) -> dict[str, Any] | None:
    try:
        return json.loads((run.checkpoints_dir / "state.json").read_text())
    except FileNotFoundError:
        return None


def _save_model_atomic(model, path: Path) -> None:
    """Saves a compiled model (with optimizer state) to ``path`` via a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _write_checkpoint(
    run: RunDir, model, *, epoch: int, best: dict | None, history: list[dict], stopped_at=None
) -> None:
    """Checkpoint after ``epoch`` completed epochs; ``state.json`` is written last."""
    name = f"epoch-{epoch:03d}" + (f"-stop{stopped_at}" if stopped_at is not None else "")
    path = run.checkpoints_dir / f"{name}.keras"
    _save_model_atomic(model, path)
    run.write_metrics(history)
    previous = _checkpoint_state(run)
    write_json_atomic(
        run.checkpoints_dir / "state.json",
        {
            "epoch": epoch,
            "checkpoint": path.name,
            "best": best,
            "stopped_at_batch": stopped_at,
            "saved_at": utc_now(),
        },
    )
    if previous and previous.get("checkpoint") not in (None, path.name):
        (run.checkpoints_dir / previous["checkpoint"]).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Previews


def _preview_png(images: np.ndarray, masks: np.ndarray, probs: np.ndarray) -> bytes:
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


# --------------------------------------------------------------------------------------------
# The run


def _hint_for(exc: BaseException) -> str | None:
    text = f"{type(exc).__name__}: {exc}"
    if "ResourceExhausted" in text or "out of memory" in text.lower() or "OOM" in text:
        return "out of memory: lower --batch-size (or --image-size) and resume or start again"
    if isinstance(exc, SegcoreError):
        return "fix the input named above and start again"
    return None


def _open_data(config: TrainConfig):
    from segcore.data.datasets import open_dataset
    from segcore.data.synthetic import DEFAULT_SYNTHETIC_DIR, ensure_synthetic_dataset

    if config.data == SYNTHETIC:
        root = ensure_synthetic_dataset(
            DEFAULT_SYNTHETIC_DIR, count=config.synthetic_count, size=256, seed=0
        )
    else:
        root = Path(config.data)
    return open_dataset(
        root,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )


def _compile(model, config: TrainConfig, total_steps: int):
    import keras

    from segcore.network.keras_metrics import PooledDice, bce_dice_loss, dice_coef, jaccard_coef

    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=max(1, total_steps), alpha=0.01
        )
    else:
        lr = config.lr
    loss = "binary_crossentropy" if config.loss == "bce" else bce_dice_loss
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=loss,
        metrics=[
            dice_coef,
            jaccard_coef,
            keras.metrics.BinaryAccuracy(name="accuracy"),
            PooledDice(name="pooled_dice"),
        ],
    )


def _make_callback(run: RunDir, config: TrainConfig, *, history, best, preview, stop_flag, clock):
    """The Keras callback that writes progress, metrics, previews and checkpoints."""
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
            logs = dict(logs or {})
            row = {"epoch": epoch + 1}
            row.update({k: float(v) for k, v in logs.items()})
            row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row["epoch_time_s"] = round(time.monotonic() - self._epoch_start, 2)
            history.append(row)
            score = row.get(BEST_METRIC)
            if score is not None and (self.best is None or score > self.best["val_dice"]):
                self.best = {"epoch": epoch + 1, "val_dice": score}
                _save_model_atomic(self.model, run.checkpoints_dir / "best.keras")
            _write_checkpoint(run, self.model, epoch=epoch + 1, best=self.best, history=history)
            if preview is not None:
                probs = self.model.predict(preview[0], verbose=0)
                write_bytes_atomic(
                    run.preview_path(epoch + 1), _preview_png(preview[0], preview[1], probs)
                )
            run.write_status(epoch=epoch + 1, batch=0, best=self.best)
            log.info(
                "epoch %d/%d: %s",
                epoch + 1,
                config.epochs,
                ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"),
            )

    return RunCallback()


def _log_to_run(run: RunDir) -> logging.Handler | None:
    """Adds a train.log handler unless stderr already goes there (background jobs)."""
    run.path.mkdir(parents=True, exist_ok=True)
    try:
        if run.log_path.exists() and os.path.samestat(
            os.fstat(sys.stderr.fileno()), os.stat(run.log_path)
        ):
            return None
    except (OSError, ValueError, AttributeError):
        pass
    handler = logging.FileHandler(run.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("segcore")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the progress lines
    return handler


def _gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _init_from_bundle(model, ref: str) -> None:
    """Copies a bundle's weights into ``model`` (same architecture), for fine-tuning.

    Raises:
        BundleError: the bundle cannot be loaded.
        ConfigError: its architecture differs from the model's.
    """
    from segcore.bundles.loading import load_bundle

    source = load_bundle(ref)
    try:
        model.set_weights(source.model.get_weights())
    except ValueError as exc:
        raise ConfigError(
            f"init_from {ref!r}: its architecture ({source.card.architecture}) does not match "
            f"this run's model config ({exc})"
        ) from exc
    log.info("initialised the model from bundle %s (%s)", ref, source.card.name)


def _source_card(ref: str | None) -> dict[str, Any] | None:
    """Name and hash of the bundle a fine-tuning started from (the ref may later change)."""
    if not ref:
        return None
    from segcore.bundles.refs import resolve_bundle_ref
    from segcore.bundles.store import read_card

    card = read_card(resolve_bundle_ref(ref))
    return {"ref": ref, "name": card.name, "model_sha256": card.model_sha256}


def prepare_run(config: TrainConfig, runs_dir: str | os.PathLike | None = None) -> RunDir:
    """Creates the run folder with ``config.json`` and a ``queued`` status; returns it.

    The folder is ``config.run_dir``, else ``<runs_dir>/<new run id>`` (``runs_dir`` defaults to
    :func:`segcore.training.runs.default_runs_dir`).
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    run_dir = config.run_dir or str(runs_dir / new_run_id())
    config = replace(config, run_dir=str(run_dir))
    run = RunDir(run_dir)
    if run.exists() and run.read_status_raw().get("state") not in (None, "queued"):
        raise ConfigError(
            f"{run.path}: a run already lives here; resume it with --resume or pick another "
            "--run-dir"
        )
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config.to_dict())
    if not run.status_path.exists():
        run.write_status(state="queued", epoch=0, epochs=config.epochs)
    return run


def train(
    config: TrainConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    runs_dir: str | os.PathLike | None = None,
    command: str | None = None,
    verbose: int | str = "auto",
) -> RunDir:
    """Runs (or resumes) a training run; returns its :class:`~segcore.training.runs.RunDir`.

    Args:
        config: the run's configuration; not needed with ``resume`` (read from the run).
        run_dir: the run folder; defaults to ``config.run_dir`` or a new ``runs/<id>``.
        resume: continue the run in ``run_dir`` from its last checkpoint.
        runs_dir: parent folder of new runs and home of the device locks; defaults to
            :func:`segcore.training.runs.default_runs_dir` (``$SEGCORE_RUNS_DIR`` or ``runs/``).
        command: the command line to record in the bundle's card.
        verbose: Keras ``fit`` verbosity (``"auto"``: a progress bar on a terminal, one line
            per epoch otherwise).

    Raises:
        ConfigError: invalid config or a resume without checkpoint.
        TrainingBusyError: another training holds this device.
        Any other exception is re-raised after the run is marked ``failed``.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if resume:
        if run_dir is None:
            raise ConfigError("--resume needs the run folder")
        run = RunDir(run_dir)
        config = TrainConfig.from_dict(run.read_config())
    else:
        if config is None:
            raise ConfigError("a TrainConfig is needed to start a run")
        if run_dir is not None:
            config = replace(config, run_dir=str(run_dir))
        run = prepare_run(config, runs_dir)
        config = TrainConfig.from_dict(run.read_config())

    handler = _log_to_run(run)
    stop_flag = {"requested": False}
    previous_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        stop_flag["requested"] = True
        log.warning("SIGTERM received: stopping after the current batch")

    lock = None
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test thread)
        previous_handler = None
    try:
        from segcore.training import devices
        from segcore.training.locks import lock_for

        # The same key the web server uses (no TensorFlow needed), so both see one lock.
        lock = lock_for(runs_dir, devices.default_lock_key())
        lock.acquire(run.run_id, os.getpid())
        pid = os.getpid()
        run.clear_stop_request()
        run.write_status(
            state="running",
            pid=pid,
            pid_started=process_start_time(pid),
            started_at=utc_now(),
            ended_at=None,
            reason=None,
            hint=None,
            traceback=None,
            epochs=config.epochs,
        )
        _run(run, config, resume=resume, stop_flag=stop_flag, command=command, verbose=verbose)
    except BaseException as exc:
        if isinstance(exc, SegcoreError) and type(exc).__name__ == "TrainingBusyError":
            run.write_status(
                state="failed",
                reason=str(exc),
                hint="wait or stop that run",
                ended_at=utc_now(),
                pid=os.getpid(),
            )
            raise
        state = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.write_status(
            state=state,
            reason=f"{type(exc).__name__}: {exc}"[:2000],
            hint=_hint_for(exc),
            traceback=traceback.format_exc()[-20000:],
            eta_s=None,
            ended_at=utc_now(),
        )
        log.error("run %s %s: %s", run.run_id, state, exc)
        raise
    finally:
        if lock is not None:
            lock.release(run.run_id)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if handler is not None:
            logging.getLogger("segcore").removeHandler(handler)
            handler.close()
    return run


def _run(run: RunDir, config: TrainConfig, *, resume, stop_flag, command, verbose) -> None:
    import keras

    import segcore.network.keras_metrics
    import segcore.network.layers  # noqa: F401 - registers the custom layers for loading
    from segcore.training import devices
    from segcore.training.pipeline import AugmentConfig, make_eval_dataset, make_training_dataset

    start_time = time.monotonic()
    devices.configure_gpus()
    n_gpus = _gpu_count()
    strategy_name = devices.choose_strategy_name(n_gpus, os.environ.get("TF_CONFIG"))
    strategy = devices.make_strategy(strategy_name)
    precision = devices.choose_precision(n_gpus)
    devices.apply_precision(precision)
    device = devices.device_summary()
    run.write_status(device=device, strategy=strategy_name, precision=precision)
    log.info("run %s on %s (%s, %s)", run.run_id, device, strategy_name, precision)

    splits = _open_data(config)
    preprocess = config.preprocess_config()
    state = _checkpoint_state(run) if resume else None
    if resume and state is None:
        raise ConfigError(f"{run.path}: nothing to resume (no checkpoint yet); start it again")
    initial_epoch = state["epoch"] if state else 0
    keras.utils.set_random_seed(config.seed + initial_epoch)

    train_data = make_training_dataset(
        splits.train,
        preprocess,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augment=AugmentConfig() if config.augment else None,
        crops_per_epoch=config.crops_per_epoch,
        seed=config.seed,
        first_epoch=initial_epoch,
    )
    val_source = splits.val if len(splits.val) else splits.train
    val_data = make_eval_dataset(
        val_source, preprocess, image_size=config.image_size, batch_size=config.batch_size
    )
    preview = None
    if config.preview_tiles > 0:
        x, y = next(iter(val_data.unbatch().batch(config.preview_tiles)))
        preview = (x.numpy(), y.numpy())
    run.write_status(steps_per_epoch=train_data.steps_per_epoch)

    history = [r for r in run.read_metrics() if r["epoch"] <= initial_epoch] if resume else []
    best = state.get("best") if state else None
    with strategy.scope():
        if state:
            model = keras.saving.load_model(
                run.checkpoints_dir / state["checkpoint"], safe_mode=True
            )
            log.info("resumed from %s (epoch %d)", state["checkpoint"], initial_epoch)
        else:
            from segcore.network.model import build_deeplabv3plus

            arch = config.model_config()
            model = build_deeplabv3plus(
                backbone_weights=arch.backbone_weights,
                aspp_filters=arch.aspp_filters,
                aspp_rates=arch.aspp_rates,
                low_level_filters=arch.low_level_filters,
                decoder_filters=arch.decoder_filters,
            )
            if config.init_from:
                _init_from_bundle(model, config.init_from)
            _compile(model, config, config.epochs * train_data.steps_per_epoch)

    clock = {
        "start": time.monotonic(),
        "steps_per_epoch": train_data.steps_per_epoch,
        "initial_epoch": initial_epoch,
    }
    callback = _make_callback(
        run, config, history=history, best=best, preview=preview, stop_flag=stop_flag, clock=clock
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if initial_epoch < config.epochs:
        with contextlib.suppress(StopTraining):  # raised by the callback on a stop request
            model.fit(
                train_data.dataset,
                validation_data=val_data,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=[callback],
                shuffle=False,  # the pipeline draws random crops itself
                verbose=verbose,
            )
    if callback.stopped_at is not None:
        _write_checkpoint(
            run,
            model,
            epoch=callback.epoch,
            best=callback.best,
            history=history,
            stopped_at=callback.stopped_at,
        )
        run.write_status(
            state="stopped",
            reason=f"stop requested; stopped in epoch {callback.epoch + 1} after batch "
            f"{callback.stopped_at}",
            hint=f"resume with: python -m segcore train --resume {run.path}",
            eta_s=None,
            ended_at=utc_now(),
        )
        log.info("run %s stopped", run.run_id)
        return
    _finish(
        run,
        config,
        model,
        splits,
        val_source,
        callback.best,
        history,
        device,
        time.monotonic() - start_time,
        command,
    )


def _finish(run, config, model, splits, val_source, best, history, device, elapsed, command):
    """Evaluates the best weights on full-size validation images and writes the bundle."""
    import keras

    from segcore.bundles.card import VALIDATION, ModelCard, SplitFigures
    from segcore.bundles.store import save_bundle
    from segcore.evaluation.evaluate import evaluate

    best_path = run.checkpoints_dir / "best.keras"
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
    threshold = float(result.best_threshold)
    figures = SplitFigures.from_evaluation(
        result, split=VALIDATION, threshold=threshold, data=config.data, command=command
    )
    card = ModelCard(
        name=config.name,
        architecture=config.model_config().to_dict(),
        input_size=config.image_size,
        preprocess=config.preprocess,
        threshold=threshold,
        dataset={
            **splits.summary(),
            "data": config.data,
            "validation_split": "val" if val_source is splits.val else "train (no val split)",
        },
        training={
            **{k: v for k, v in config.to_dict().items() if k not in ("preprocess", "model")},
            "epochs_completed": len(history),
            "best_epoch": best["epoch"] if best else None,
            "time_s": round(elapsed, 1),
            "device": device,
            "command": command,
            "init_from_card": _source_card(config.init_from),
            "history_last": history[-1] if history else None,
        },
        metrics={VALIDATION: figures},
        licence=config.licence,
    )
    bundle = save_bundle(model, run.bundle_dir, card)
    run.write_status(
        state="completed",
        phase=None,
        bundle=str(bundle),
        threshold=threshold,
        val_dice=figures.pooled["dice"],
        eta_s=None,
        ended_at=utc_now(),
    )
    log.info(
        "run %s completed: bundle %s (val Dice %.4f at threshold %.2f)",
        run.run_id,
        bundle,
        figures.pooled["dice"],
        threshold,
    )


def command_line(argv: list[str] | None = None) -> str:
    """The ``python -m segcore ...`` command line (recorded in bundle cards), shell-quoted.

    Args:
        argv: the arguments after ``python -m segcore``; defaults to ``sys.argv[1:]``.
    """
    return "python -m segcore " + shlex.join(sys.argv[1:] if argv is None else argv)
