"""A batch as a background job, for the app: start, stop, run again, status and summary.

A batch job is ``python -m segcore batch INPUTS... --out <job>/outputs --job <job>`` in its own
OS process, started in its own session like a training or a slide job
(:func:`segcore.training.background.spawn_job`): it outlives the web server that started it,
and all its state is on disk in ``runs/batches/<job-id>/`` (``$SEGCORE_RUNS_DIR/batches``)::

    job.json       inputs (absolute paths), model, runtime, lock (the slides lock file),
                   argv (the job's command line), created_at
    status.json    state, reason, pid, pid_started, queued_at, waiting_for, phase,
                   inputs_done, inputs_total, regions_done, regions_total, failed; at the end
                   also completed, skipped, stopped (rewritten atomically, under an flock)
    batch.log      the process's output
    stop.request   present when someone asked the batch to stop
    outputs/       the batch's output folder: one folder per input, batch.csv

**One at a time per machine, with the slide jobs.** A batch and a slide job would share the
same cores, so the batch process takes the slide jobs' lock
(:data:`segcore.wholeslide.jobs.LOCK_KEY` in ``runs/slides``) before Ray starts and holds it to
the end: while a slide job runs, the batch waits ``queued`` (``waiting_for``: the holder's id),
and a slide job started during a batch queues behind it. Only one batch is queued or running
at a time: :func:`start_batch_job` refuses another.

**Stop, failure, again.** :func:`stop_batch_job` (``stop.request`` + SIGTERM) ends a queued
batch at once and a running one after the tasks in flight are abandoned: the workers are killed,
unfinished inputs are reported ``stopped`` in ``batch.csv`` and the job ends ``stopped``. A
batch whose inputs failed still ends ``completed`` (the reasons in its CSV, the count in
``failed``); one that could not run at all ends ``failed`` with the reason. A process that
ended without reporting reads ``failed`` (:meth:`~segcore.training.runs.RunDir.read_status`).
:func:`resume_batch_job` runs a stopped or failed batch again with the same command: finished
inputs are skipped and unfinished slides resume from their finished chunks.

The job process's side is :func:`run_batch_job` (what ``batch --job`` runs around the batch).
This module imports neither TensorFlow, Ray nor Streamlit.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segcore.errors import ConfigError
from segcore.timestamps import utc_now
from segcore.training.background import launch_job
from segcore.training.finish import recording_failure
from segcore.training.jobs import check_run_id, stop_training
from segcore.training.locks import DeviceLock, TrainingBusyError, flocked, lock_path
from segcore.training.runs import (
    ACTIVE_STATES,
    RunError,
    default_runs_dir,
    list_runs,
    new_run_id,
    process_alive,
    process_start_time,
)
from segcore.wholeslide.job_runner import stop_on_signals
from segcore.wholeslide.jobs import LOCK_KEY, JobDir, default_slides_dir, queued_fields

log = logging.getLogger(__name__)

__all__ = [
    "BatchJobDir",
    "default_batches_dir",
    "list_batch_jobs",
    "output_files",
    "progress_text",
    "read_summary",
    "resume_batch_job",
    "run_batch_job",
    "start_batch_job",
    "stop_batch_job",
]

BATCHES_DIR = "batches"
"""The folder of batch jobs inside the runs folder."""
OUTPUTS_DIR = "outputs"
"""The batch's output folder inside its job folder."""
BATCH_COMMAND = (sys.executable, "-m", "segcore", "batch")
"""The job process, given the inputs and options after it."""
QUEUE_POLL_S = 0.5
"""How often a queued batch tries the slides lock."""
PROGRESS_FIELDS = ("inputs_done", "inputs_total", "regions_done", "regions_total", "failed")


def default_batches_dir() -> Path:
    """``<runs folder>/batches`` (``$SEGCORE_RUNS_DIR/batches`` or ``runs/batches``)."""
    return default_runs_dir() / BATCHES_DIR


class BatchJobDir(JobDir):
    """The folder of one batch job (a :class:`~segcore.wholeslide.jobs.JobDir`: ``job.json``,
    statuses written under an ``flock``) with its log ``batch.log`` and ``outputs/``.

    Args:
        path: the job folder (``runs/batches/<job-id>``).
    """

    process_label = "batch process"

    @property
    def log_path(self) -> Path:
        return self.path / "batch.log"

    @property
    def outputs(self) -> Path:
        """The batch's output folder (``--out``)."""
        return self.path / OUTPUTS_DIR

    def resume_command(self) -> str:
        try:
            return shlex.join(self.read_job()["argv"])
        except (RunError, ValueError):
            return f"python -m segcore batch ... --job {self.path}"

    def read_job(self) -> dict[str, Any]:
        """Returns job.json: ``inputs``, ``model``, ``runtime``, ``lock``, ``argv``.

        Raises:
            RunError: the folder holds no batch job, or job.json is unreadable.
        """
        spec = self.read_config()
        if not isinstance(spec, dict) or not {"inputs", "model", "lock", "argv"} <= spec.keys():
            raise RunError(f"{self.config_path}: not a batch job (needs inputs, model and argv)")
        return spec


# --- the launcher's side --------------------------------------------------------------------


def _check_ray() -> None:
    from segcore.batch.cluster import RAY_VERSION

    if importlib.util.find_spec("ray") is None:  # not imported here: the app never loads Ray
        raise ConfigError(
            f"a batch needs Ray, which is not installed: pip install ray=={RAY_VERSION} "
            "(or pip install -r requirements-cluster.txt)"
        )


def _refuse_a_second(runs_dir: Path) -> None:
    for job in list_batch_jobs(runs_dir):
        if job["state"] in ACTIVE_STATES:
            raise ConfigError(
                f"a batch is already {job['state']} ({job['job_id']}): one batch at a time; "
                "wait for it or stop it"
            )


def start_batch_job(
    inputs: Sequence[str | os.PathLike],
    *,
    model_ref: str | os.PathLike,
    runtime: str = "auto",
    runs_dir: str | os.PathLike | None = None,
    slides_dir: str | os.PathLike | None = None,
    job_id: str | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> BatchJobDir:
    """Starts a batch in a background process on this machine and returns its job at once.

    Creates ``<runs_dir>/<job_id>/`` with ``job.json`` and a ``queued`` status, then spawns
    ``python -m segcore batch INPUTS... --out <job>/outputs --model M --runtime R --quiet
    --job <job>`` in its own session (one worker with all of this machine's cores). It runs
    once it holds the slides lock (see the module docstring).

    Args:
        inputs: slide and image files (checked to exist here).
        model_ref: the bundle (as ``--model`` takes it).
        runtime: what runs the network (``--runtime``), defaults to ``auto``.
        runs_dir: where batch jobs live, defaults to :func:`default_batches_dir`.
        slides_dir: where the slide jobs' lock lives, defaults to
            :func:`segcore.wholeslide.jobs.default_slides_dir`.
        job_id: the job's folder name, defaults to a new ``batch-<time>-<hex>``.
        command: the program to run instead of ``python -m segcore batch`` (the inputs and
            options appended), e.g. a fake batch in tests.
        env: extra environment variables for the job process.

    Returns:
        The new job's :class:`BatchJobDir`.

    Raises:
        ConfigError: no inputs, a missing one, Ray not installed, a bad job id, or another
            batch is queued or running.
        RunError: the runs folder cannot be written (nothing is left behind).
    """
    from segcore.inference.runtimes.base import CHOICES

    files = [Path(item).expanduser().resolve() for item in inputs]
    if not files:
        raise ConfigError("a batch needs at least one slide or image")
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file")
    if runtime not in CHOICES:
        raise ConfigError(f"runtime {runtime!r}: choose one of {', '.join(CHOICES)}")
    _check_ray()
    runs_dir = Path(runs_dir if runs_dir is not None else default_batches_dir()).resolve()
    slides = Path(slides_dir if slides_dir is not None else default_slides_dir()).resolve()
    job = BatchJobDir(runs_dir / check_run_id(job_id or new_run_id("batch")))
    options = ["--out", str(job.outputs), "--model", str(model_ref), "--runtime", runtime]
    argv = [*(command or BATCH_COMMAND), *map(str, files), *options, "--quiet", "--job"]
    spec = {
        "inputs": [str(path) for path in files],
        "model": str(model_ref),
        "runtime": runtime,
        "lock": str(lock_path(slides, LOCK_KEY)),
        "argv": [*argv, str(job.path)],
    }
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        slides.mkdir(parents=True, exist_ok=True)  # the lock's guard file goes there
    except OSError as exc:
        raise job.cannot_write(exc) from exc
    with flocked(runs_dir / ".start.lock"):  # two starts at once: one batch
        _refuse_a_second(runs_dir)
        try:
            job.path.mkdir()
        except FileExistsError as exc:
            raise ConfigError(f"{job.path}: a job already exists here; pick another id") from exc
        except OSError as exc:
            raise job.cannot_write(exc) from exc
        try:
            job.write_config({**spec, "created_at": utc_now()})
            job.write_status(**queued_fields(), waiting_for=None)
        except OSError as exc:  # no half-made job left behind
            shutil.rmtree(job.path, ignore_errors=True)
            raise job.cannot_write(exc) from exc
    return launch_job(job, spec["argv"], env)


def resume_batch_job(
    job_dir: str | os.PathLike, *, env: Mapping[str, str] | None = None
) -> BatchJobDir:
    """Runs a stopped or failed batch again with its own command: finished inputs are skipped,
    unfinished slides resume from their finished chunks.

    Raises:
        RunError: ``job_dir`` holds no batch job, or it is active or completed.
        ConfigError: another batch is queued or running.
    """
    job = BatchJobDir(Path(job_dir).resolve())
    spec = job.read_job()
    with flocked(job.path.parent / ".start.lock"):
        _refuse_a_second(job.path.parent)
        job.requeue()
    return launch_job(job, spec["argv"], env)


def stop_batch_job(
    job_dir: str | os.PathLike, *, wait: bool = False, timeout: float = 120.0
) -> dict[str, Any]:
    """Asks a batch to stop (``stop.request`` + SIGTERM; see the module docstring). A batch that
    is not active is left alone.

    Returns:
        The batch's status.

    Raises:
        TimeoutError: ``wait`` was set and the batch did not end within ``timeout``.
    """
    return stop_training(BatchJobDir(job_dir), wait=wait, timeout=timeout)


def list_batch_jobs(runs_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every batch job, newest first: ``job_id``, ``path``, ``state``, ``status`` (a killed
    one reads ``failed``), ``inputs`` and ``model``; an unreadable one has state
    ``"unreadable"`` and its error under ``reason``."""
    jobs = []
    for run in list_runs(runs_dir if runs_dir is not None else default_batches_dir()):
        job = BatchJobDir(run.path)
        entry: dict[str, Any] = {"job_id": job.job_id, "path": str(job.path)}
        try:
            status, spec = job.read_status(), job.read_job()
        except (RunError, ValueError) as exc:
            entry.update(state="unreadable", status={}, inputs=[], model=None, reason=str(exc))
        else:
            state = status.get("state")
            entry.update(state=state, status=status, inputs=spec["inputs"], model=spec["model"])
        jobs.append(entry)
    return jobs


def read_summary(job_dir: str | os.PathLike) -> list[dict[str, str]] | None:
    """The rows of the batch's ``batch.csv`` (:mod:`segcore.batch.engine`), or None before it
    is written.

    Raises:
        RunError: the CSV cannot be read.
    """
    from segcore.batch.engine import CSV_FILE

    path = BatchJobDir(job_dir).outputs / CSV_FILE
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from exc


def output_files(job_dir: str | os.PathLike, row: Mapping[str, str]) -> list[Path]:
    """The files of one input's output folder (a summary row's ``output``), in name order:
    its top level only, no hidden or temporary files. Empty for a folder that is not there."""
    name = str(row.get("output") or "")
    if not name or name.startswith(".") or Path(name).name != name:
        return []
    folder = BatchJobDir(job_dir).outputs / name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def progress_text(status: Mapping[str, Any]) -> tuple[float, str]:
    """How far a batch is: ``(fraction of inputs done, "2 of 5 inputs, 3 of 8 slide regions,
    1 failed")``, or the phase before the first input is done."""
    done, total = int(status.get("inputs_done") or 0), int(status.get("inputs_total") or 0)
    regions, regions_total = int(status.get("regions_done") or 0), status.get("regions_total")
    text = f"{done} of {total or '?'} inputs"
    if regions_total:
        text += f", {regions} of {regions_total} slide regions"
    if status.get("failed"):
        text += f", {status['failed']} failed"
    phase = status.get("phase")
    if phase and not total:
        text = f"{phase}…"
    return (done / total if total else 0.0), text


# --- the job process's side -----------------------------------------------------------------

Work = Callable[[Callable[[dict], None], Callable[[], bool]], list[dict]]
"""``work(progress, should_stop) -> rows``: the batch itself (``run_batch`` as ``batch`` calls
it), run once the slides lock is held."""


def _take_over(job: BatchJobDir) -> None:
    """Marks the job queued for this process.

    Raises:
        RunError: another live process runs or queues this job.
    """
    raw = job.read_status_raw()
    owner, pid = raw.get("pid"), os.getpid()
    others = raw.get("state") in ACTIVE_STATES and owner not in (pid, os.getppid())
    if others and process_alive(owner, raw.get("pid_started")):
        raise RunError(f"{job.path}: the batch is already {raw['state']} in process {owner}")
    if raw.get("state") != "queued":  # run by hand
        job.clear_stop_request()
        job.write_status(**queued_fields())
    job.write_status(state="queued", pid=pid, pid_started=process_start_time(pid))


def _wait_for_lock(
    job: BatchJobDir, lock: DeviceLock, should_stop: Callable[[], bool], poll: float
) -> bool:
    """Waits until the slides lock is taken; False if asked to stop meanwhile (not held)."""
    _take_over(job)
    waiting = None
    while not should_stop():
        try:
            lock.acquire(job.job_id)
        except TrainingBusyError as busy:
            if busy.run_id != waiting:
                waiting = busy.run_id
                job.write_status(waiting_for=waiting, phase=f"waiting for {waiting}")
                log.info("%s: waiting for %s (one job at a time)", job.job_id, waiting)
            time.sleep(poll)
            continue
        if not should_stop():
            return True
        lock.release(job.job_id)
        return False
    return False


class _StatusProgress:
    """The engine's progress callback: writes the counts into the status when they change."""

    def __init__(self, job: BatchJobDir):
        self.job, self.last = job, None

    def __call__(self, info: Mapping[str, Any]) -> None:
        fields = {key: info[key] for key in PROGRESS_FIELDS if key in info}
        if fields != self.last:
            self.last = fields
            self.job.write_status(phase="segmenting", **fields)


def _finish(job: BatchJobDir, rows: list[dict]) -> None:
    """Records how the batch ended, from its summary rows."""
    counts = collections.Counter(str(row.get("status")) for row in rows)
    totals = {name: counts[name] for name in ("completed", "skipped", "failed", "stopped")}
    over = totals["completed"] + totals["skipped"] + totals["failed"]
    fields = {**totals, "inputs_total": len(rows), "inputs_done": over, "ended_at": utc_now()}
    if totals["stopped"]:
        job.write_final_status(
            state="stopped", phase="stopped", reason="stopped on request", **fields
        )
        return
    reason = f"{totals['failed']} of {len(rows)} inputs failed" if totals["failed"] else None
    job.write_final_status(state="completed", phase="completed", reason=reason, **fields)


def run_batch_job(
    job_dir: str | os.PathLike, work: Work, *, poll: float = QUEUE_POLL_S
) -> dict[str, Any]:
    """Runs a batch job in this process: what ``python -m segcore batch ... --job DIR`` does.

    Marks the job queued for this process, waits for the slides lock (``queued``,
    ``waiting_for``), writes ``running``, runs ``work`` with a progress callback that writes
    the counts into the status and a ``should_stop`` that SIGTERM and ``stop.request`` set,
    records the end (see the module docstring) and releases the lock.

    Returns:
        The final status (``completed`` or ``stopped``).

    Raises:
        RunError: not a batch job folder, or the job is active in another process.
        Exception: whatever ``work`` raised, after the job is marked ``failed`` with it.
    """
    job = BatchJobDir(Path(job_dir).resolve())
    spec = job.read_job()
    lock = DeviceLock(spec["lock"])
    with stop_on_signals(signal.SIGTERM) as stop:

        def should_stop() -> bool:
            return stop.is_set() or job.stop_requested()

        if not _wait_for_lock(job, lock, should_stop, poll):
            job.write_final_status(
                state="stopped", reason="stopped while queued", waiting_for=None,
                phase="stopped", ended_at=utc_now(),
            )  # fmt: skip
            return job.read_status()
        try:
            with recording_failure(job):
                pid = os.getpid()
                job.write_status(
                    state="running", pid=pid, pid_started=process_start_time(pid),
                    started_at=utc_now(), waiting_for=None, phase="starting Ray",
                )  # fmt: skip
                with contextlib.suppress(OSError):
                    job.reserve_space()
                rows = work(_StatusProgress(job), should_stop)
        except SystemExit:  # a SIGTERM caught by Ray's own handler while ray.init installs it
            if not should_stop():
                raise
            job.write_final_status(
                state="stopped", phase="stopped", reason="stopped on request", hint=None,
                traceback=None, ended_at=utc_now(),
            )  # fmt: skip
            return job.read_status()
        else:
            _finish(job, rows)
            return job.read_status()
        finally:
            lock.release(job.job_id)
