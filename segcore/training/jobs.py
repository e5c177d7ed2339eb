"""Background training jobs: start, resume, stop and list trainings from another program.

A training runs in its own OS process (``python -m segcore train ...``), never in a thread of the
caller: a web server stays responsive, and the training survives page reloads, closed browsers
and even a restart of the server that started it (the process gets its own session). All state
lives on disk, in the run folder (:mod:`segcore.training.runs`) and the device lock
(:mod:`segcore.training.locks`),
so any process can find, watch and stop a job later.

One training per device at a time: :func:`start_training` refuses at once with
:class:`~segcore.training.locks.TrainingBusyError` naming the running job. The launcher takes
the device lock *before* spawning and hands it over to the trainer afterwards, so two launches
cannot both pass the check. The trainer finds the lock file through the environment variable
:data:`~segcore.training.locks.LOCK_ENV`.

The processes this module spawns are reaped by a daemon thread per process (no zombies in a
long-running server; :mod:`segcore.training.background`). If a trainer ends without reporting a
final state, that thread records it as ``failed`` with its exit status (or ``stopped`` if it was
asked to stop).

What the trainer must do (``python -m segcore train``, or the ``command`` given instead), which
the tests check with a fake trainer:

1. install its SIGTERM handler (set a flag; stop after the current batch) first;
2. take the lock ``segcore.training.locks.lock_for(run.path.parent, devices.lock_key(n_gpus))`` with
   ``acquire(run_id)``, ``run_id`` being the run folder's name (this waits for the hand-over);
3. then write status ``running`` with its ``pid`` and ``pid_started``; poll
   ``RunDir.stop_requested()`` and the SIGTERM flag after every batch;
4. end with status ``completed``, ``stopped`` or ``failed`` and release the lock.

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segcore.errors import ConfigError
from segcore.training import devices
from segcore.training.background import job_env, record_start_failure, spawn_job
from segcore.training.locks import LOCK_ENV, DeviceLock, TrainingBusyError, lock_path
from segcore.training.runs import (
    ACTIVE_STATES,
    RunDir,
    RunError,
    default_runs_dir,
    list_runs,
    new_run_id,
    process_alive,
    process_start_time,
    utc_now,
    wait_for_end,
)

TRAIN_COMMAND = (sys.executable, "-m", "segcore", "train")

log = logging.getLogger(__name__)


def train_arguments(run: RunDir, *, resume: bool = False) -> list[str]:
    """The arguments given to the trainer for ``run``.

    Args:
        run: the run folder.
        resume: continue the run instead of starting it.

    Returns:
        ``["--resume", <run>]`` or ``["--config", <run>/config.json, "--run-dir", <run>]``.
    """
    if resume:
        return ["--resume", str(run.path)]
    return ["--config", str(run.config_path), "--run-dir", str(run.path)]


def check_run_id(run_id: str) -> str:
    """Returns ``run_id`` if it is a plain folder name (no separator, not hidden, not empty).

    Raises:
        ConfigError: naming the id.
    """
    if not run_id or run_id.startswith(".") or Path(run_id).name != run_id:
        raise ConfigError(f"run id must be a plain folder name, got {run_id!r}")
    return run_id


def check_dataset(config: Mapping[str, Any]) -> None:
    """Refuses a training whose dataset folder would fail at once, as ``train`` does before it
    makes a run folder (:meth:`~segcore.training.config.TrainConfig.open_folder`), or whose
    starting bundle cannot start it (:func:`~segcore.training.comparison.check_init_from`) or
    was trained on the same data carved another way
    (:func:`~segcore.training.replay.check_start_carve`).

    Only a config naming a dataset folder or a starting bundle is read as a
    :class:`~segcore.training.config.TrainConfig`; otherwise (the synthetic set from scratch,
    the default) nothing is checked here, and the config is left as it is for the trainer (or
    the ``command`` given instead of it) to read.

    Raises:
        ConfigError: the config is not a valid ``TrainConfig``, or the starting bundle has
            another input size or architecture, or carved the same data another way.
        BundleError: the starting bundle cannot be read.
        DatasetError: the folder is missing, unreadable or holds no training samples.
    """
    from segcore.data.synthetic_set import SYNTHETIC
    from segcore.training.comparison import check_init_from
    from segcore.training.config import TrainConfig
    from segcore.training.replay import check_start_carve

    if not config.get("init_from") and config.get("data", SYNTHETIC) == SYNTHETIC:
        return
    train_config = TrainConfig.from_dict(dict(config))
    if train_config.init_from:
        check_init_from(train_config)
    if train_config.data != SYNTHETIC:
        check_start_carve(train_config, train_config.open_folder())


def _child_env(run: RunDir, lock: DeviceLock, env: Mapping[str, str] | None) -> dict[str, str]:
    child_env = job_env(env)
    child_env["SEGCORE_RUNS_DIR"] = str(run.path.parent)
    child_env[LOCK_ENV] = str(lock.path)
    return child_env


def _spawn(
    run: RunDir,
    lock: DeviceLock,
    *,
    resume: bool,
    command: Sequence[str] | None,
    env: Mapping[str, str] | None,
) -> subprocess.Popen:
    """Starts the trainer of ``run`` (the launcher holds ``lock``) and hands the lock over."""

    # The trainer waits in DeviceLock.acquire until the hand-over, so it cannot write
    # ``running`` before the ``queued`` status with its pid.
    def hand_over(proc: subprocess.Popen) -> None:
        if process_alive(proc.pid):
            lock.hand_over(run.run_id, proc.pid)
        else:  # ended at once; the reaper records it
            lock.release(run.run_id)

    argv = [*(command or TRAIN_COMMAND), *train_arguments(run, resume=resume)]
    return spawn_job(run, argv, env=_child_env(run, lock, env), after_spawn=hand_over)


def _launch(
    run: RunDir,
    lock: DeviceLock,
    *,
    resume: bool,
    command: Sequence[str] | None,
    env: Mapping[str, str] | None,
    prepare,
) -> RunDir:
    lock.acquire(run.run_id)  # refuses at once if another job holds the device
    try:
        prepare()
        _spawn(run, lock, resume=resume, command=command, env=env)
    except BaseException as exc:
        lock.release(run.run_id)
        record_start_failure(run, exc)
        raise
    return run


def _queued_status(lock: DeviceLock) -> dict[str, Any]:
    pid = os.getpid()  # the launcher's until the trainer is spawned
    return {
        "state": "queued",
        "pid": pid,
        "pid_started": process_start_time(pid),
        "queued_at": utc_now(),
        "ended_at": None,
        "reason": None,
        "hint": None,
        "traceback": None,
        "lock": lock.path.name,
    }


def start_training(
    config: Mapping[str, Any],
    *,
    runs_dir: str | os.PathLike | None = None,
    run_id: str | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    device_key: str | None = None,
) -> RunDir:
    """Starts a training in a background process and returns its run folder at once.

    Creates ``<runs_dir>/<run_id>/`` with ``config.json`` (``run_dir`` filled in) and a
    ``queued`` status carrying the trainer's pid, then spawns
    ``python -m segcore train --config <run>/config.json --run-dir <run>`` in its own session
    (stdin closed, output appended to ``train.log``, working directory the repository root,
    ``SEGCORE_RUNS_DIR`` set to ``runs_dir`` and :data:`~segcore.training.locks.LOCK_ENV` to the
    lock file).

    Args:
        config: the training configuration (a ``TrainConfig`` as a dict).
        runs_dir: where runs live (and their device locks), defaults to
            :func:`segcore.training.runs.default_runs_dir` (``$SEGCORE_RUNS_DIR`` or ``runs/``).
        run_id: the run's folder name, defaults to a new :func:`~segcore.training.runs.new_run_id`.
        command: the program to run instead of ``python -m segcore train`` (same arguments
            appended), e.g. ``[sys.executable, "fake_trainer.py"]`` in tests.
        env: extra environment variables for the trainer (added to this process's).
        device_key: the device lock, defaults to :func:`segcore.training.devices.default_lock_key`
            (``"gpu0"`` if an NVIDIA GPU is visible, else ``"cpu"``).

    Returns:
        The new run's :class:`~segcore.training.runs.RunDir`.

    Raises:
        TrainingBusyError: another training holds the device (nothing is created).
        ConfigError: ``run_id`` is not a plain folder name or that run already exists, or the
            config of a dataset folder is invalid.
        DatasetError: the dataset folder is missing, unreadable or holds no training samples
            (:func:`check_dataset`; nothing is created, no process spawned).
        RunError: the runs folder cannot be written (nothing is left behind).
    """
    runs_dir = Path(runs_dir if runs_dir is not None else default_runs_dir()).resolve()
    run = RunDir(runs_dir / check_run_id(run_id or new_run_id()))
    if run.exists():
        raise ConfigError(f"{run.path}: a run already exists here; resume it or pick another id")
    check_dataset(config)
    lock = DeviceLock(lock_path(runs_dir, device_key or devices.default_lock_key()))

    def prepare() -> None:
        run.create({**config, "run_dir": str(run.path)})
        try:
            run.write_status(**_queued_status(lock), started_at=None)
        except OSError as exc:  # no half-made run left behind
            shutil.rmtree(run.path, ignore_errors=True)
            raise run.cannot_write(exc) from exc

    return _launch(run, lock, resume=False, command=command, env=env, prepare=prepare)


def resume_training(
    run_dir: str | os.PathLike,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    device_key: str | None = None,
) -> RunDir:
    """Resumes a stopped or failed run in a background process (``train --resume <run>``).

    Clears a leftover stop request and marks the run ``queued`` again; the lock lives in the
    run's parent folder, as for :func:`start_training`.

    Args:
        run_dir: the run folder.
        command: the program to run instead of ``python -m segcore train``.
        env: extra environment variables for the trainer.
        device_key: the device lock, defaults to :func:`segcore.training.devices.default_lock_key`.

    Returns:
        The run's :class:`~segcore.training.runs.RunDir`.

    Raises:
        RunError: ``run_dir`` holds no run.
        TrainingBusyError: this run is still active, or another training holds the device.
    """
    run = RunDir(Path(run_dir).resolve())
    if not run.config_path.is_file():
        raise RunError(f"{run.path}: not a run folder (no config.json)")
    status = run.read_status()
    if status.get("state") in ACTIVE_STATES:
        raise TrainingBusyError(
            {
                "run_id": run.run_id,
                "pid": status.get("pid"),
                "acquired_at": status.get("started_at"),
            }
        )
    lock = DeviceLock(lock_path(run.path.parent, device_key or devices.default_lock_key()))

    def prepare() -> None:
        run.clear_stop_request()
        run.write_status(**_queued_status(lock))

    return _launch(run, lock, resume=True, command=command, env=env, prepare=prepare)


def stop_training(
    run_dir: str | os.PathLike | RunDir, *, wait: bool = False, timeout: float = 120.0
) -> dict[str, Any]:
    """Asks a run to stop: writes ``stop.request`` and sends SIGTERM to its live process.

    The trainer saves a checkpoint and ends with state ``stopped`` after its current batch. A run
    that is not active is left alone. Any job kept in a :class:`~segcore.training.runs.RunDir`
    (or a subclass, given as such) stops this way.

    Args:
        run_dir: the run folder, or its ``RunDir``.
        wait: wait until the run reaches a final state and its process has ended (so the
            device is free again, see :func:`~segcore.training.runs.wait_for_end`), defaults
            to False.
        timeout: seconds to wait when ``wait`` is set, defaults to 120.

    Returns:
        The run's status (as :meth:`~segcore.training.runs.RunDir.read_status` reports it).

    Raises:
        TimeoutError: ``wait`` was set and the run did not end within ``timeout``.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    status = run.read_status()
    if status.get("state") not in ACTIVE_STATES:
        return status
    run.request_stop()
    pid = status.get("pid")
    if pid and pid != os.getpid() and process_alive(pid, status.get("pid_started")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)
    if wait:
        return wait_for_end(run, timeout=timeout)
    return run.read_status()


def running_job(
    runs_dir: str | os.PathLike | None = None, device_key: str | None = None
) -> RunDir | None:
    """The job holding a device lock in ``runs_dir``, or None.

    Args:
        runs_dir: where runs live, defaults to :func:`segcore.training.runs.default_runs_dir`.
        device_key: look at this device's lock only, defaults to every ``.lock-*.json``.

    Returns:
        The holder's :class:`~segcore.training.runs.RunDir` (``<runs_dir>/<run_id>``), or None.
    """
    runs_dir = Path(runs_dir if runs_dir is not None else default_runs_dir())
    if device_key is not None:
        paths = [lock_path(runs_dir, device_key)]
    else:
        paths = sorted(runs_dir.glob(".lock-*.json")) if runs_dir.is_dir() else []
    for path in paths:
        holder = DeviceLock(path).holder()
        if holder is not None:
            return RunDir(runs_dir / holder["run_id"])
    return None


def _config_summary(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's top-level scalar settings (nested sections and ``run_dir`` left out)."""
    return {
        key: value
        for key, value in config.items()
        if key != "run_dir" and (value is None or isinstance(value, str | int | float | bool))
    }


def list_jobs(runs_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every run in ``runs_dir``, newest first, for a job table.

    Args:
        runs_dir: where runs live, defaults to :func:`segcore.training.runs.default_runs_dir`.

    Returns:
        One dict per run: ``run_id``, ``path``, ``state``, ``status`` (from
        :meth:`~segcore.training.runs.RunDir.read_status`, so a killed run shows ``failed``),
        ``metrics`` (the last metrics.csv row, or None) and ``config`` (its top-level scalar
        settings). An unreadable run has state ``"unreadable"`` and its error under ``reason``.
    """
    jobs = []
    for run in list_runs(runs_dir if runs_dir is not None else default_runs_dir()):
        job: dict[str, Any] = {"run_id": run.run_id, "path": str(run.path)}
        try:
            status = run.read_status()
            metrics = run.read_metrics()
            config = run.read_config() if run.config_path.is_file() else {}
        except (RunError, ValueError) as exc:
            job.update(state="unreadable", status={}, metrics=None, config={}, reason=str(exc))
        else:
            job.update(
                state=status.get("state"),
                status=status,
                metrics=metrics[-1] if metrics else None,
                config=_config_summary(config),
            )
        jobs.append(job)
    return jobs
