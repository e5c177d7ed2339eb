"""Whole-slide runs as background jobs: start, queue, stop, resume and list them.

A job is one slide run (:func:`segcore.wholeslide.segment.segment_slide`) in its own OS process,
``python -m segcore slide resume <job-dir>``, started in its own session like a training
(:mod:`segcore.training.background`): it outlives the web server that started it, and all its
state is on disk in ``runs/slides/<job-id>/`` (``$SEGCORE_RUNS_DIR/slides``)::

    job.json       the slide, the model ref and the SlideRunConfig (as a dict)
    status.json    state, reason, pid, pid_started, queued_at, position, tiles_done,
                   tiles_total, nuclei, eta_s, phase (rewritten atomically)
    slide.log      the job process's output
    stop.request   present when someone asked the job to stop
    run.json, parts/, nuclei.geojson.gz, nuclei.csv, density.*, summary.json
                   the run's own files: the job folder is segment_slide's ``out_dir``

**One job at a time per machine, more queued.** The running job holds the
:class:`~segcore.training.locks.DeviceLock` with key ``slides`` in the slides folder. A job
started while another runs is queued, not refused: its process waits with status ``queued`` and
its ``position`` (1: next). Live queued jobs take the lock first come, first served by
``queue_order`` (the time they were queued; ties broken by job id); a queued job whose process
died drops out of the queue, and a holder killed with ``kill -9`` leaves a stale lock that the
next job takes over. Status updates are read-merge-writes under an ``flock``
(:meth:`JobDir.write_status`), so the launcher, the job process and the reaper never lose each
other's fields.

**Stop, failure, resume.** A stop request (``stop.request`` + SIGTERM, :func:`stop_slide_job`)
ends a queued job at once and a running one after its current tile, ``stopped``, its finished
chunks kept. A run that cannot go on ends ``failed`` with a reason (disk full; an unreadable
region: the :class:`~segcore.errors.SlideError`'s message); a process that ended without
reporting reads ``failed`` (:meth:`~segcore.training.runs.RunDir.read_status`), like a training.
:func:`resume_slide_job` queues a stopped or failed job again; ``segment_slide`` skips its
finished chunks, so the outputs equal those of an uninterrupted run.

What the job process does (:func:`segcore.wholeslide.job_runner.run_slide_job`):

1. installs its SIGTERM handler, then marks itself ``queued`` with its own pid;
2. waits for its turn and the lock, or ends ``stopped`` if asked to while queued;
3. writes ``running`` (pid, pid_started), runs, writing the runner's progress into the status;
4. ends ``completed``, ``stopped`` or ``failed`` and releases the lock.

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segcore.errors import ConfigError, SlideError
from segcore.timestamps import utc_now
from segcore.training.background import launch_job
from segcore.training.jobs import check_run_id, running_job, stop_training
from segcore.training.locks import flocked
from segcore.training.runs import (
    ACTIVE_STATES,
    RunDir,
    RunError,
    default_runs_dir,
    list_runs,
    new_run_id,
    process_start_time,
)

log = logging.getLogger(__name__)

SLIDES_DIR = "slides"
"""The folder of slide jobs inside the runs folder."""
LOCK_KEY = "slides"
"""The key of the one lock that slide jobs share (``runs/slides/.lock-slides.json``)."""
SLIDE_COMMAND = (sys.executable, "-m", "segcore", "slide", "resume")
"""The job process, given the job folder as its last argument."""


def default_slides_dir() -> Path:
    """``<runs folder>/slides`` (``$SEGCORE_RUNS_DIR/slides`` or ``runs/slides``)."""
    return default_runs_dir() / SLIDES_DIR


class JobDir(RunDir):
    """The folder of one slide job: a :class:`~segcore.training.runs.RunDir` whose config is
    ``job.json`` and whose log is ``slide.log``, with statuses written under an ``flock``.

    Args:
        path: the job folder (``runs/slides/<job-id>``).
    """

    process_label = "slide job process"

    @property
    def job_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "job.json"

    @property
    def log_path(self) -> Path:
        return self.path / "slide.log"

    @property
    def status_lock_path(self) -> Path:
        return self.path / ".status.lock"

    def resume_command(self) -> str:
        return f"python -m segcore slide resume {self.path}"

    def read_job(self) -> dict[str, Any]:
        """Returns job.json: ``slide``, ``model``, ``config``.

        Raises:
            RunError: the folder holds no slide job, or job.json is unreadable.
        """
        spec = self.read_config()
        if not isinstance(spec, dict) or not {"slide", "model", "config"} <= spec.keys():
            raise RunError(f"{self.config_path}: not a slide job (needs slide, model and config)")
        return spec

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merges ``updates`` into status.json atomically, under the job's status lock."""
        with flocked(self.status_lock_path):
            return super().write_status(**updates)

    def requeue(self) -> None:
        """Marks a stopped or failed job ``queued`` for this process (checked and written under
        the status lock, so two resumes cannot both pass) and clears its stop request.

        Raises:
            RunError: the job is queued, running or completed.
        """
        with flocked(self.status_lock_path):
            status = self.read_status()
            state = status.get("state")
            if state in ACTIVE_STATES:
                raise RunError(
                    f"{self.path}: the job is already {state} (pid {status.get('pid')}); "
                    "wait for it or stop it first"
                )
            if state == "completed":
                raise RunError(f"{self.path}: the job is completed; start a new one to run again")
            self.clear_stop_request()
            super().write_status(**queued_fields())


def queued_fields() -> dict[str, Any]:
    """The status fields of a job queued now by this process (its launcher, until the job
    process writes its own pid)."""
    pid = os.getpid()
    return {
        "state": "queued",
        "pid": pid,
        "pid_started": process_start_time(pid),
        "queued_at": utc_now(),
        "queue_order": time.time(),
        "position": None,
        "started_at": None,
        "ended_at": None,
        "reason": None,
        "hint": None,
        "traceback": None,
    }


def _create(job: JobDir, spec: dict[str, Any]) -> None:
    """Makes the job folder (refusing an existing one) with job.json and a queued status."""
    try:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        job.path.mkdir()
    except FileExistsError as exc:
        raise ConfigError(f"{job.path}: a job already exists here; pick another id") from exc
    except OSError as exc:
        raise job.cannot_write(exc) from exc
    try:
        job.write_config(spec)
        job.write_status(**queued_fields())
    except OSError as exc:  # no half-made job left behind
        shutil.rmtree(job.path, ignore_errors=True)
        raise job.cannot_write(exc) from exc


def _launch(job: JobDir, command: Sequence[str] | None, env: Mapping[str, str] | None) -> JobDir:
    return launch_job(job, [*(command or SLIDE_COMMAND), str(job.path)], env)


def start_slide_job(
    slide_path: str | os.PathLike,
    *,
    model_ref: str | os.PathLike,
    config: Mapping[str, Any],
    runs_dir: str | os.PathLike | None = None,
    job_id: str | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> JobDir:
    """Starts segmenting a slide in a background process and returns its job folder at once.

    Creates ``<runs_dir>/<job_id>/`` with ``job.json`` and a ``queued`` status, then spawns
    ``python -m segcore slide resume <job-dir>`` in its own session (stdin closed, output
    appended to ``slide.log``). The job runs when no other slide job does (see the module
    docstring); until then it stays ``queued``.

    Args:
        slide_path: the slide file.
        model_ref: the bundle (as :func:`segcore.bundles.loading.load_bundle` takes it).
        config: a :class:`~segcore.wholeslide.config.SlideRunConfig` as a dict (checked here).
        runs_dir: where slide jobs live (and their lock), defaults to
            :func:`default_slides_dir`.
        job_id: the job's folder name, defaults to a new ``slide-<time>-<hex>``.
        command: the program to run instead of ``python -m segcore slide resume`` (the job
            folder appended), e.g. a fake runner in tests.
        env: extra environment variables for the job process.

    Returns:
        The new job's :class:`JobDir`.

    Raises:
        SlideError: the slide file does not exist.
        ConfigError: a bad config or job id, or that job already exists.
        RunError: the slides folder cannot be written (nothing is left behind).
    """
    from segcore.wholeslide.config import SlideRunConfig

    slide = Path(slide_path).expanduser().resolve()
    if not slide.exists():
        raise SlideError(f"{slide}: no such slide file")
    settings = SlideRunConfig.from_dict(dict(config)).to_dict()
    runs_dir = Path(runs_dir if runs_dir is not None else default_slides_dir()).resolve()
    job = JobDir(runs_dir / check_run_id(job_id or new_run_id("slide")))
    spec = {"slide": str(slide), "model": str(model_ref), "config": settings}
    _create(job, {**spec, "created_at": utc_now()})
    return _launch(job, command, env)


def resume_slide_job(
    job_dir: str | os.PathLike,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> JobDir:
    """Queues a stopped or failed job again in a background process (as :func:`start_slide_job`);
    it continues from its finished chunks.

    Args:
        job_dir: the job folder.
        command: the program to run instead of ``python -m segcore slide resume``.
        env: extra environment variables for the job process.

    Returns:
        The job's :class:`JobDir`.

    Raises:
        RunError: ``job_dir`` holds no slide job, or the job is active or completed.
    """
    job = JobDir(Path(job_dir).resolve())
    job.read_job()
    job.requeue()
    return _launch(job, command, env)


def stop_slide_job(
    job_dir: str | os.PathLike, *, wait: bool = False, timeout: float = 120.0
) -> dict[str, Any]:
    """Asks a job to stop (``stop.request`` + SIGTERM): a queued one ends at once, a running one
    after its current tile, keeping its finished chunks. A job that is not active is left alone.

    Args:
        job_dir: the job folder.
        wait: wait until the job reaches a final state and its process has ended, defaults
            to False.
        timeout: seconds to wait when ``wait`` is set, defaults to 120.

    Returns:
        The job's status (as :func:`read_status` reports it).

    Raises:
        TimeoutError: ``wait`` was set and the job did not end within ``timeout``.
    """
    return stop_training(JobDir(job_dir), wait=wait, timeout=timeout)


def read_status(job_dir: str | os.PathLike) -> dict[str, Any]:
    """The job's status; an active one whose process is gone reads ``failed``.

    Raises:
        RunError: status.json is unreadable.
    """
    return JobDir(job_dir).read_status()


def running_slide_job(runs_dir: str | os.PathLike | None = None) -> JobDir | None:
    """The job holding the slides lock (the one running), or None."""
    run = running_job(runs_dir if runs_dir is not None else default_slides_dir(), LOCK_KEY)
    return None if run is None else JobDir(run.path)


def list_slide_jobs(runs_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every slide job, newest first, for a job table.

    Args:
        runs_dir: where slide jobs live, defaults to :func:`default_slides_dir`.

    Returns:
        One dict per job: ``job_id``, ``path``, ``state``, ``status`` (from :func:`read_status`,
        so a killed job shows ``failed``), ``slide`` and ``model``. An unreadable job has state
        ``"unreadable"`` and its error under ``reason``.
    """
    jobs = []
    for run in list_runs(runs_dir if runs_dir is not None else default_slides_dir()):
        job = JobDir(run.path)
        entry: dict[str, Any] = {"job_id": job.job_id, "path": str(job.path)}
        try:
            status, spec = job.read_status(), job.read_job()
        except (RunError, ValueError) as exc:
            entry.update(state="unreadable", status={}, slide=None, model=None, reason=str(exc))
        else:
            entry.update(
                state=status.get("state"), status=status, slide=spec["slide"], model=spec["model"]
            )
        jobs.append(entry)
    return jobs
