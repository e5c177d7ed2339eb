"""A background job's process: started in its own session, reaped by a daemon thread.

Shared by training runs (:mod:`segcore.training.jobs`) and whole-slide jobs
(:mod:`segcore.wholeslide.jobs`): both keep their state in a
:class:`~segcore.training.runs.RunDir` (or a subclass), so any process can find, watch and stop
them later, and a process that ends without reporting is recorded as ``failed``.

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from segcore.paths import REPO_ROOT
from segcore.timestamps import utc_now
from segcore.training.runs import ACTIVE_STATES, RunDir, process_start_time

log = logging.getLogger(__name__)


def job_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a background job's process: this process's, plus ``env``, with the
    repository root first on ``PYTHONPATH`` and unbuffered output (its log stays current).

    Args:
        env: extra variables, defaults to none.

    Returns:
        The environment.
    """
    child_env = {**os.environ, **(env or {})}
    paths = [str(REPO_ROOT), *filter(None, child_env.get("PYTHONPATH", "").split(os.pathsep))]
    child_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    child_env["PYTHONUNBUFFERED"] = "1"
    return child_env


def _how_it_ended(returncode: int) -> str:
    """``"exited with status 3"``, or ``"was killed by SIGKILL"`` for a signal."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _reap(proc: subprocess.Popen, run: RunDir) -> None:
    """Waits for ``proc``; records a final state if it ended without one (daemon thread)."""
    returncode = proc.wait()

    def unreported(status: dict) -> bool:
        """Still this process's and active, or marked failed by a reader that found it gone
        (:meth:`RunDir.read_status`) before this thread could say how it ended."""
        if status.get("pid") != proc.pid:
            return False
        return status.get("state") in ACTIVE_STATES or (
            status.get("state") == "failed" and bool(status.get("found_dead_at"))
        )

    try:
        if returncode == -signal.SIGTERM and run.stop_requested():
            run.update_status_if(
                unreported,
                state="stopped",
                reason="stopped on request",
                hint=None,
                ended_at=utc_now(),
                found_dead_at=None,
            )
        else:
            run.update_status_if(
                unreported,
                state="failed",
                reason=f"the {run.process_label} (pid {proc.pid}) {_how_it_ended(returncode)} "
                "without reporting",
                hint=f"see {run.log_path}; resume it with: {run.resume_command()}",
                ended_at=utc_now(),
                found_dead_at=None,
            )
    except Exception:  # a daemon thread must not die noisily; the dead pid still shows
        log.exception("%s: could not record the end of the run", run.path)


def spawn_job(
    run: RunDir,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    after_spawn: Callable[[subprocess.Popen], None] | None = None,
) -> subprocess.Popen:
    """Starts ``argv`` as the background process of ``run`` and returns at once.

    The process gets its own session (it outlives its launcher), stdin closed, stdout and
    stderr appended to ``run.log_path`` and the repository root as working directory. Its pid
    is recorded in the status, then ``after_spawn(proc)`` runs (a lock hand-over); if either
    fails the process is killed. A daemon thread reaps it and, if it ended while its status
    still says ``queued`` or ``running`` with its pid, records ``failed`` with the exit status
    (``stopped`` after a stop request and SIGTERM).

    Args:
        run: the run (or job) folder, already holding its status.
        argv: the program and its arguments.
        env: the process's whole environment (see :func:`job_env`).
        after_spawn: called with the process once its pid is recorded, defaults to None.

    Returns:
        The process.
    """
    with open(run.log_path, "ab") as log_file:
        log_file.write(f"=== {utc_now()} launched: {' '.join(argv)}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    try:
        run.write_status(pid=proc.pid, pid_started=process_start_time(proc.pid))
        if after_spawn is not None:
            after_spawn(proc)
    except BaseException:
        proc.kill()
        raise
    finally:
        threading.Thread(
            target=_reap, args=(proc, run), name=f"segcore-reap-{proc.pid}", daemon=True
        ).start()
    return proc


def record_start_failure(run: RunDir, exc: BaseException) -> None:
    """Marks ``run`` ``failed`` ("could not start: ...") when its status still names this
    launcher's pid, i.e. no job process took it over; otherwise leaves it to that process."""
    if run.status_path.exists() and run.read_status_raw().get("pid") == os.getpid():
        run.write_final_status(
            state="failed", reason=f"could not start: {exc}"[:2000], ended_at=utc_now()
        )


def launch_job(run: RunDir, argv: Sequence[str], env: Mapping[str, str] | None = None) -> RunDir:
    """:func:`spawn_job` with :func:`job_env` (``env`` added), recording a launch that fails as
    the job's failure (:func:`record_start_failure`) before re-raising; returns ``run``."""
    try:
        spawn_job(run, argv, env=job_env(env))
    except BaseException as exc:
        record_start_failure(run, exc)
        raise
    return run
