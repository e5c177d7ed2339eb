"""Training: one entry point for the CLI, Python and the app's background jobs.

:func:`train` runs a :class:`~segcore.training.config.TrainConfig` in a run directory
(:mod:`segcore.training.runs`):

* data from :func:`segcore.data.datasets.open_dataset` (or the synthetic set), random crops with
  augmentation (:mod:`segcore.training.pipeline`), validation on tiles of the val split;
* DeepLabV3+ (:func:`segcore.network.model.build_deeplabv3plus`), Adam with cosine decay, binary
  cross-entropy (or BCE + Dice), compiled metrics Dice, Jaccard, accuracy and the pooled hard
  Dice used to choose the best epoch;
* after every epoch (:mod:`segcore.training.callback`), in this order:
  ``checkpoints/epoch-NNN.keras`` (model + optimizer), ``metrics.csv``,
  ``checkpoints/state.json`` pointing at that checkpoint (:mod:`segcore.training.checkpoints`),
  the preview image and ``status.json``. All writes are atomic and ``state.json`` is written
  last, so a process killed at any moment (even ``kill -9``) resumes with ``--resume`` from the
  last completed epoch, with its optimizer state and metrics history;
* a stop request (``stop.request`` or SIGTERM) ends the run after the current batch: it saves a
  checkpoint of that moment and the state ``stopped``; a resumed run restarts the interrupted
  epoch from those weights;
* an exception marks the run ``failed`` with the reason, a hint and the traceback
  (:func:`segcore.training.finish.record_failure`). A full disk reads ``disk full``: failed
  writes remove their partial files, and ``.reserve`` makes room for that status;
* a dataset folder is opened and checked (it holds training samples) first, then the device
  lock is taken before the run folder is made, so a run refused because its dataset is missing
  or empty, because the device is busy, or because its folder cannot be written, leaves
  nothing behind;
* at the end (:mod:`segcore.training.finish`), the best epoch's weights are evaluated on the
  full-size validation images, the threshold that maximises validation Dice is chosen, and a
  bundle (:mod:`segcore.bundles.store`) is written to ``<run>/bundle``.

Only one training runs per device at a time (:class:`segcore.training.locks.DeviceLock`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from segcore.data.datasets import DatasetSplits, dataset_pixel_size, open_dataset
from segcore.data.synthetic_set import DEFAULT_SYNTHETIC_DIR, SYNTHETIC, ensure_synthetic_dataset
from segcore.errors import ConfigError
from segcore.timestamps import utc_now
from segcore.training import devices
from segcore.training.blending import StartBlend
from segcore.training.callback import StopTraining, make_callback
from segcore.training.checkpoints import (
    checkpoint_state,
    discard_partial_files,
    write_checkpoint,
)
from segcore.training.comparison import check_init_from
from segcore.training.config import TrainConfig
from segcore.training.finish import finish_run, recording_failure
from segcore.training.locks import lock_for
from segcore.training.models import model_for_run
from segcore.training.replay import Replay, check_start_carve, resolve_replay
from segcore.training.runs import (
    RunDir,
    default_runs_dir,
    new_run_id,
    process_start_time,
)

log = logging.getLogger(__name__)


def _open_data(config: TrainConfig) -> DatasetSplits:
    if config.data != SYNTHETIC:
        return config.open_folder()
    root = ensure_synthetic_dataset(
        DEFAULT_SYNTHETIC_DIR, count=config.synthetic_count, size=256, seed=0
    )
    return open_dataset(
        root,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )


def _log_to_run(run: RunDir) -> logging.Handler | None:
    """Adds a train.log handler unless stderr already goes there (background jobs).

    Raises:
        RunError: the run folder cannot be written.
    """
    try:
        if run.log_path.exists() and os.path.samestat(
            os.fstat(sys.stderr.fileno()), os.stat(run.log_path)
        ):
            return None
    except (OSError, ValueError, AttributeError):
        pass
    try:
        handler = logging.FileHandler(run.log_path, encoding="utf-8")
    except OSError as exc:
        raise run.cannot_write(exc) from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("segcore")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the progress lines
    return handler


def _new_run(config: TrainConfig, runs_dir: Path) -> tuple[TrainConfig, RunDir]:
    """The folder of a new run, not created yet: ``config.run_dir``, else ``<runs_dir>/<new
    run id>``; and the config naming it.

    Raises:
        ConfigError: a run (other than a queued one) already lives there.
    """
    config = replace(config, run_dir=str(config.run_dir or runs_dir / new_run_id()))
    run = RunDir(config.run_dir)
    if run.exists() and run.read_status_raw().get("state") not in (None, "queued"):
        raise ConfigError(
            f"{run.path}: a run already lives here; resume it with --resume or pick another "
            "--run-dir"
        )
    return config, run


def prepare_run(config: TrainConfig, runs_dir: str | os.PathLike | None = None) -> RunDir:
    """Creates the run folder with ``config.json`` and a ``queued`` status; returns it.

    The folder is ``config.run_dir``, else ``<runs_dir>/<new run id>`` (``runs_dir`` defaults to
    :func:`segcore.training.runs.default_runs_dir`).

    Raises:
        ConfigError: a run already lives there.
        RunError: the folder cannot be written (nothing is left behind).
    """
    config, run = _new_run(config, Path(runs_dir) if runs_dir is not None else default_runs_dir())
    run.create(config.to_dict())
    return run


@contextlib.contextmanager
def _sigterm_requests_stop(stop_flag: dict):
    """Within the block, SIGTERM sets ``stop_flag["requested"]`` (main thread only)."""

    def on_sigterm(signum, frame):
        stop_flag["requested"] = True
        log.warning("SIGTERM received: stopping after the current batch")

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test thread)
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _start(run: RunDir, config: TrainConfig) -> None:
    """After the lock: removes what an interrupted write left, marks the run ``running`` and
    keeps ``.reserve``.

    Raises:
        RunError: the run folder cannot be written.
    """
    try:
        run.clear_stop_request()
        discard_partial_files(run)
        pid = os.getpid()
        run.write_status(
            state="running",
            pid=pid,
            pid_started=process_start_time(pid),
            started_at=utc_now(),
            ended_at=None,
            reason=None,
            hint=None,
            traceback=None,
            phase=None,
            epochs=config.epochs,
        )
    except OSError as exc:
        raise run.cannot_write(exc) from exc
    if not run.reserve_space():
        log.warning("%s: no room for %s; the disk is nearly full", run.path, run.reserve_path)


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
        verbose: Keras ``fit`` verbosity, written to stderr (``"auto"``: Keras' progress bar
            when stderr is a terminal or in a notebook, else none: the ``segcore`` logger's
            line per epoch is the progress).

    Raises:
        ConfigError: invalid config or a resume without checkpoint.
        DatasetError: a new run's dataset folder is missing, unreadable or holds no training
            samples (nothing is written).
        TrainingBusyError: another training holds this device (nothing is written).
        RunError: the runs or run folder cannot be written (no half-made run is left), or the
            disk filled up (the run is marked ``failed``, reason ``disk full``, and resumes
            from its last checkpoint).
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
        config, run = _new_run(config, runs_dir)

    splits = None
    if not resume and not run.exists():
        check_init_from(config)  # a bundle that cannot start this run: refused, nothing made
    if not resume and config.data != SYNTHETIC and not run.exists():
        # A dataset folder is opened before the lock and the run folder, so a missing or empty
        # one is refused with nothing left behind (a queued run's folder exists already: the
        # launcher checked its dataset, and a failure now is recorded in the run).
        splits = config.open_folder()
        check_start_carve(config, splits)  # the start's own data carved another way: refused
    handler = None
    stop_flag = {"requested": False}
    # The same key the web server uses (no TensorFlow needed), so both see one lock.
    lock = lock_for(runs_dir, devices.default_lock_key())
    locked = False
    try:
        with recording_failure(run), _sigterm_requests_stop(stop_flag):
            lock.acquire(run.run_id, os.getpid())  # first: a refused run leaves nothing behind
            locked = True
            if not resume:
                run.create(config.to_dict())
            handler = _log_to_run(run)
            _start(run, config)
            _run(
                run,
                config,
                resume=resume,
                stop_flag=stop_flag,
                command=command,
                verbose=verbose,
                splits=splits,
            )
    finally:
        if locked:
            lock.release(run.run_id)
        if handler is not None:
            logging.getLogger("segcore").removeHandler(handler)
            handler.close()
    return run


def _choose_devices(run: RunDir):
    """Configures GPUs, strategy and precision; records them in the status. Returns
    ``(strategy, device summary)``."""
    import tensorflow as tf

    devices.configure_gpus()
    n_gpus = len(tf.config.list_physical_devices("GPU"))
    strategy_name = devices.choose_strategy_name(n_gpus, os.environ.get("TF_CONFIG"))
    strategy = devices.make_strategy(strategy_name)
    precision = devices.choose_precision(n_gpus)
    devices.apply_precision(precision)
    device = devices.device_summary()
    run.write_status(device=device, strategy=strategy_name, precision=precision)
    log.info("run %s on %s (%s, %s)", run.run_id, device, strategy_name, precision)
    return strategy, device


def _inputs(config: TrainConfig, splits: DatasetSplits, initial_epoch: int, replay: Replay):
    """The tf.data pipelines of a run: ``(train_data, val_source, val_data, preview)``.

    Training crops (``replay.crops_per_epoch`` of them) come from the train split and
    ``replay``'s tiles; validation uses the val split, or train when there is none;
    ``preview`` is ``(images, masks)`` of the first ``config.preview_tiles`` validation
    tiles, or None.
    """
    from segcore.training.pipeline import make_eval_dataset, make_training_dataset

    preprocess = config.preprocess_config()
    train_data = make_training_dataset(
        splits.train,
        preprocess,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augment=config.augment_config(),
        crops_per_epoch=replay.crops_per_epoch,
        seed=config.seed,
        first_epoch=initial_epoch,
        replay=replay.samples,
        replay_fraction=replay.fraction,
    )
    val_source = splits.val if len(splits.val) else splits.train
    val_data = make_eval_dataset(
        val_source, preprocess, image_size=config.image_size, batch_size=config.batch_size
    )
    preview = None
    if config.preview_tiles > 0:
        x, y = next(iter(val_data.unbatch().batch(config.preview_tiles)))
        preview = (x.numpy(), y.numpy())
    return train_data, val_source, val_data, preview


def _run(
    run: RunDir,
    config: TrainConfig,
    *,
    resume,
    stop_flag,
    command,
    verbose,
    splits: DatasetSplits | None = None,
) -> None:
    import keras

    start_time = time.monotonic()
    strategy, device = _choose_devices(run)
    if splits is None:
        splits = _open_data(config)
    state = checkpoint_state(run) if resume else None
    if resume and state is None:
        raise ConfigError(f"{run.path}: nothing to resume (no checkpoint yet); start it again")
    initial_epoch = state["epoch"] if state else 0
    keras.utils.set_random_seed(config.seed + initial_epoch)

    replay = resolve_replay(config, splits.root)
    train_data, val_source, val_data, preview = _inputs(config, splits, initial_epoch, replay)
    run.write_status(steps_per_epoch=train_data.steps_per_epoch)

    history = [r for r in run.read_metrics() if r["epoch"] <= initial_epoch] if resume else []
    with strategy.scope():
        model = model_for_run(run, config, state, config.epochs * train_data.steps_per_epoch)
    clock = {
        "start": time.monotonic(),
        "steps_per_epoch": train_data.steps_per_epoch,
        "initial_epoch": initial_epoch,
    }
    sources = _validation_sources(config, splits, val_source)
    # A new run's model holds the start's weights now: no second load of the starting bundle.
    fresh = config.start_blend and not state
    blend = StartBlend.for_config(config, model.get_weights() if fresh else None)
    callback = make_callback(
        run,
        config,
        history=history,
        best=state.get("best") if state else None,
        preview=preview,
        stop_flag=stop_flag,
        clock=clock,
        sources=sources,
        blend=blend,
    )
    if verbose == "auto":  # one progress: Keras' live bar, or the callback's line per epoch
        verbose = 1 if sys.stderr.isatty() or "ipykernel" in sys.modules else 0
    if initial_epoch < config.epochs:
        # StopTraining: raised by the callback on a stop request. Keras prints its bar on
        # stdout: it goes to stderr, with the other progress, and stdout keeps the results.
        with contextlib.suppress(StopTraining), contextlib.redirect_stdout(sys.stderr):
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
        _record_stop(run, model, callback, history)
        return
    outcome = {
        "epochs_completed": len(history),
        "best_epoch": callback.best["epoch"] if callback.best else None,
        "kept_epoch": (
            len(history)
            if config.final_weights == "last" or not callback.best
            else callback.best["epoch"]
        ),
        "time_s": round(time.monotonic() - start_time, 1),
        "device": device,
        "command": command,
        "history_last": history[-1] if history else None,
        **({"replay": replay.record} if replay.record else {}),
    }
    finish_run(run, config, model, splits, val_source, outcome, sources=sources, blend=blend)


def _validation_sources(config: TrainConfig, splits: DatasetSplits, val_source):
    """``(sources, model pixel size)`` for :func:`make_callback` when the run has
    ``validation_sources`` (its own validation images first), else None."""
    if not config.validation_sources:
        return None
    from segcore.evaluation.sources import Source, open_validation_sources

    pixel_size = dataset_pixel_size(splits.root)
    own = Source(Path(config.data).name, val_source, pixel_size)
    return [own, *open_validation_sources(config.validation_sources)], pixel_size


def _record_stop(run: RunDir, model, callback, history: list[dict]) -> None:
    """Checkpoints the moment of a stop request and marks the run ``stopped``."""
    write_checkpoint(
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
