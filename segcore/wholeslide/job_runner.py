"""The slide job's own process: queue, lock, run, record the end (``slide resume``).

:func:`run_slide_job` is what ``python -m segcore slide resume <job-dir>`` runs, started by
:func:`segcore.wholeslide.jobs.start_slide_job` or by hand; the steps and the queue rules are in
:mod:`segcore.wholeslide.jobs`. Tests give it a fake ``runner`` to check the queue without a
model. :func:`stop_on_signals` also serves the foreground ``slide run`` (Ctrl-C stops it after
the current tile).

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from segcore.timestamps import utc_now
from segcore.training.finish import recording_failure
from segcore.training.locks import DeviceLock, TrainingBusyError, lock_path
from segcore.training.runs import (
    ACTIVE_STATES,
    RunError,
    list_runs,
    process_alive,
    process_start_time,
)
from segcore.wholeslide.jobs import LOCK_KEY, JobDir, queued_fields

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.25
"""How often a queued job looks at the queue and the lock."""
PROGRESS_INTERVAL_S = 0.5
"""The least time between two progress writes of the status (phase changes always write)."""
PROGRESS_FIELDS = ("tiles_done", "tiles_total", "nuclei", "elapsed_s", "eta_s", "phase")

Runner = Callable[[JobDir, dict, Callable[[dict], None], Callable[[], bool]], dict]
"""``runner(job, spec, progress, should_stop) -> result``: what runs once the job has the lock
(default :func:`segment_job`); ``result["state"] == "stopped"`` when ``should_stop`` ended it."""


@contextlib.contextmanager
def stop_on_signals(*signums: int) -> Iterator[threading.Event]:
    """Within the block, the signals ``signums`` set the event instead of ending the process
    (a caller stops after its current tile); a second SIGINT raises ``KeyboardInterrupt``.
    Outside the main thread no handler is installed.

    Args:
        signums: the signals, e.g. ``signal.SIGINT, signal.SIGTERM``.

    Yields:
        The event, set once a signal came.
    """
    event = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()
        log.warning("%s received: stopping after the current tile", signal.Signals(signum).name)

    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield event
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _queue_key(status: Mapping[str, Any], job_id: str) -> tuple[float, str]:
    return (float(status.get("queue_order") or math.inf), job_id)


def _jobs_ahead(job: JobDir, key: tuple[float, str]) -> list[str]:
    """The live queued jobs in ``job``'s folder that come before ``key``."""
    ahead = []
    for other in list_runs(job.path.parent):
        if other.path == job.path:
            continue
        try:
            raw = other.read_status_raw()
        except RunError:
            continue
        live = process_alive(raw.get("pid"), raw.get("pid_started"))
        if raw.get("state") == "queued" and live and _queue_key(raw, other.run_id) < key:
            ahead.append(other.run_id)
    return ahead


def _enqueue(job: JobDir) -> tuple[float, str]:
    """Marks the job queued for this process (keeping the place its launcher gave it); returns
    its queue key.

    Raises:
        RunError: another live process runs or queues this job.
    """
    raw = job.read_status_raw()
    pid = os.getpid()
    owner = raw.get("pid")
    others = raw.get("state") in ACTIVE_STATES and owner not in (pid, os.getppid())
    if others and process_alive(owner, raw.get("pid_started")):
        raise RunError(f"{job.path}: the job is already {raw['state']} in process {owner}")
    fields = {"pid": pid, "pid_started": process_start_time(pid)}
    if raw.get("state") != "queued" or raw.get("queue_order") is None:  # started by hand
        job.clear_stop_request()
        fields = {**queued_fields(), **fields}
    return _queue_key(job.write_status(**fields), job.job_id)


def _wait_for_turn(
    job: JobDir, lock: DeviceLock, should_stop: Callable[[], bool], poll: float
) -> bool:
    """Waits until no live queued job comes first and the lock is taken; False if asked to
    stop meanwhile (the lock then not held)."""
    key = _enqueue(job)
    position = None
    while not should_stop():
        ahead = _jobs_ahead(job, key)
        if not ahead:
            try:
                lock.acquire(job.job_id)
            except TrainingBusyError:
                pass
            else:
                if not should_stop():
                    return True
                lock.release(job.job_id)
                return False
        if len(ahead) + 1 != position:
            position = len(ahead) + 1
            job.write_status(position=position)
            log.info("%s: queued, position %d", job.job_id, position)
        time.sleep(poll)
    return False


class _StatusProgress:
    """The runner's progress callback: writes its figures into the status, at most every
    ``interval`` seconds unless the phase changes or the last tile is done."""

    def __init__(self, job: JobDir, interval: float = PROGRESS_INTERVAL_S):
        self.job, self.interval = job, interval
        self._last, self._phase = -math.inf, None

    def __call__(self, info: Mapping[str, Any]) -> None:
        fields = {key: info[key] for key in PROGRESS_FIELDS if key in info}
        phase = fields.get("phase", self._phase)
        done = fields.get("tiles_done") is not None and info.get("tiles_done") == info.get(
            "tiles_total"
        )
        now = time.monotonic()
        if phase == self._phase and not done and now - self._last < self.interval:
            return
        self._last, self._phase = now, phase
        self.job.write_status(**fields)


def segment_job(
    job: JobDir,
    spec: Mapping[str, Any],
    progress: Callable[[dict], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The job's work: opens the bundle's runtime (without TensorFlow when a gated one is
    cached: :func:`segcore.wholeslide.model.open_slide_model`), then segments the slide into
    the job folder (:func:`segcore.wholeslide.segment.segment_slide`). Returns its summary."""
    from segcore.wholeslide.config import SlideRunConfig
    from segcore.wholeslide.model import open_slide_model
    from segcore.wholeslide.segment import segment_slide

    config = SlideRunConfig.from_dict(spec["config"])
    progress({"phase": "loading the model"})
    bundle, model = open_slide_model(spec["model"], config.runtime, report=log.info)
    return segment_slide(
        spec["slide"],
        job.path,
        bundle=bundle,
        model=model,
        config=config,
        progress=progress,
        should_stop=should_stop,
    )


def _run(
    job: JobDir, spec: dict[str, Any], runner: Runner, should_stop: Callable[[], bool]
) -> dict[str, Any]:
    """Runs the job (the lock held) and records how it ended."""
    pid = os.getpid()
    with recording_failure(job):
        job.write_status(
            state="running",
            pid=pid,
            pid_started=process_start_time(pid),
            position=None,
            started_at=utc_now(),
            phase="starting",
            eta_s=None,
        )
        if not job.reserve_space():
            log.warning("%s: no room for %s; the disk is nearly full", job.path, job.reserve_path)
        result = runner(job, spec, _StatusProgress(job), should_stop)
    if result.get("state") == "stopped":
        job.write_final_status(
            state="stopped", phase="stopped", reason="stopped on request", ended_at=utc_now()
        )
    else:
        totals = {key: result[key] for key in ("nuclei", "tissue_mm2") if key in result}
        job.write_final_status(
            state="completed", phase="completed", eta_s=None, ended_at=utc_now(), **totals
        )
    return job.read_status()


def run_slide_job(
    job_dir: str | os.PathLike, *, runner: Runner | None = None, poll: float = QUEUE_POLL_S
) -> dict[str, Any]:
    """Runs a slide job in this process: what ``python -m segcore slide resume`` does.

    Queues the job, waits for its turn and the slides lock, runs ``runner`` (default
    :func:`segment_job`) and records the end (see the module docstring). SIGTERM and
    ``stop.request`` stop it while queued or between tiles.

    Args:
        job_dir: the job folder.
        runner: what to run once the lock is held, defaults to :func:`segment_job`.
        poll: seconds between looks at the queue, defaults to :data:`QUEUE_POLL_S`.

    Returns:
        The final status (``completed`` or ``stopped``).

    Raises:
        RunError: not a job folder, the job is active in another process, the slides folder
            cannot hold the lock, or the disk filled up (the job is marked ``failed``).
        SegcoreError: the run failed on its input (the job is marked ``failed`` with the
            message); any other exception likewise, after the job is marked ``failed``.
    """
    job = JobDir(Path(job_dir).resolve())
    spec = job.read_job()
    lock = DeviceLock(lock_path(job.path.parent, LOCK_KEY))
    with stop_on_signals(signal.SIGTERM) as stop:

        def should_stop() -> bool:
            return stop.is_set() or job.stop_requested()

        if not _wait_for_turn(job, lock, should_stop, poll):
            job.write_final_status(
                state="stopped", reason="stopped while queued", position=None, ended_at=utc_now()
            )
            return job.read_status()
        try:
            return _run(job, spec, runner or segment_job, should_stop)
        finally:
            lock.release(job.job_id)
