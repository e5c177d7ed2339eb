"""Training run directories: the files a run writes and how readers interpret them.

A run lives in ``runs/<run-id>/``::

    config.json          the TrainConfig that started it
    status.json          state and progress (see STATUS_FIELDS), rewritten atomically
    metrics.csv          one row per completed epoch
    train.log            the training process's log (human-readable)
    previews/epoch_NNN.png   image | ground truth | prediction for fixed validation tiles
    checkpoints/last.keras   model + optimizer after the last completed epoch (for --resume)
    checkpoints/best.keras   model with the best validation Dice so far
    checkpoints/state.json   epoch counter and best score belonging to last.keras
    bundle/              the final model bundle (model.keras + card.json)
    stop.request         present when someone asked the run to stop
    .reserve             room kept free while the run trains (see RESERVE_BYTES)

Every file is written atomically (temporary file + ``os.replace``), so a reader never sees half
of one; a write that fails (a full disk) removes its temporary file. The disk may still be full
when the trainer records the failure, so it keeps a small file, ``.reserve``, while it trains and
deletes it to make room for that last ``status.json`` (:meth:`RunDir.release_reserve`): a run
that ran out of space reads ``failed`` with the reason ``disk full``, not "probably killed".

A status that says ``running`` (or ``queued``) while its process is gone is reported as
``failed`` by :meth:`RunDir.read_status`, so a killed run never looks alive; the first read that
finds it so also writes that ``failed`` status, with its reason and ``found_dead_at``, so the
file itself says so from then on (a read-only runs folder keeps its file; the read still says
``failed``). Every status write takes an ``flock`` on the run folder (:meth:`RunDir.status_guard`)
around its read-merge-write, and that correction re-reads and re-checks the process under it, so
it never overwrites a status a live process (or a resume) has just written.

This module has no TensorFlow or Streamlit dependency.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: status writes go unguarded
    fcntl = None  # type: ignore[assignment]

import psutil

from segcore.atomic import write_json_atomic, write_text_atomic
from segcore.bundles.store import is_bundle
from segcore.errors import SegcoreError
from segcore.paths import REPO_ROOT
from segcore.timestamps import utc_now

log = logging.getLogger(__name__)

STATES = ("queued", "running", "completed", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "stopped")

STATUS_FIELDS = {
    "run_id": "the folder name",
    "state": "one of STATES",
    "epoch": "epochs completed so far",
    "epochs": "epochs planned",
    "batch": "batches done in the current epoch",
    "steps_per_epoch": "batches per epoch",
    "eta_s": "estimated seconds to the end, or null",
    "pid": "process id of the training process",
    "pid_started": "that process's start (process_start_time: seconds after boot on Linux), "
    "to detect pid reuse",
    "device": "what it trains on, e.g. 'CPU' or 'GPU:0 NVIDIA H100 (80 GB)'",
    "started_at": "ISO time the process started",
    "updated_at": "ISO time of the last update",
    "ended_at": "ISO time it ended, or null",
    "best": "{'epoch': n, 'val_dice': x} of the best epoch so far, or null",
    "reason": "why it failed or stopped, or null",
    "hint": "what to try after a failure, or null",
    "traceback": "the Python traceback of a failure, or null",
    "bundle": "path of the final bundle, or null",
    "found_dead_at": "ISO time a reader found the process gone and wrote 'failed', or null",
}

DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
"""The repository's ``runs/`` folder; ``SEGCORE_RUNS_DIR`` overrides it (see default_runs_dir)."""


def default_runs_dir() -> Path:
    """``$SEGCORE_RUNS_DIR`` if set, else :data:`DEFAULT_RUNS_DIR` (read at call time).

    The device locks live in this folder too, so every training that should exclude the others
    must use the same runs folder.
    """
    return Path(os.environ.get("SEGCORE_RUNS_DIR") or DEFAULT_RUNS_DIR)


RESERVE_FILE = ".reserve"
RESERVE_BYTES = 256 * 1024
"""Size of ``.reserve``: ten times a failure's status with its traceback (at most ~25 kB)."""


class RunError(SegcoreError):
    """A run directory is missing, unreadable or cannot be written."""


def new_run_id(prefix: str = "run") -> str:
    """Returns a sortable, unique run id such as ``run-20261127-161502-3fa2``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


EPOCH_START_AFTER = 1e8
"""A recorded start time above this (about three years of uptime) is seconds since the epoch:
what versions before 2026-12-07 recorded, and what :func:`process_start_time` gives where there
is no ``/proc``."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _ticks_since_boot(pid: int) -> int | None:
    """Field ``starttime`` of ``/proc/<pid>/stat`` (clock ticks from boot to the start of
    ``pid``); None if the process is gone or a zombie. Raises OSError where there is no
    ``/proc``."""
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # after the command name, which may hold spaces
    if fields[0] in (b"Z", b"X"):  # a zombie, or dead
        return None
    return int(fields[19])  # field 22 of the file; this list starts at field 3


def _epoch_start_time(pid: int) -> float | None:
    """psutil's start time of ``pid`` (seconds since the epoch), None if gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def process_start_time(pid: int) -> float | None:
    """An identity of process ``pid`` that tells it from a later process given the same pid, or
    ``None`` if it is gone (or a zombie).

    On Linux: seconds from boot to the process's start (``/proc/<pid>/stat``), exact to a clock
    tick and never changed by the wall clock. Not seconds since the epoch: those are boot time
    plus that, and the kernel's boot time (``btime``, whole seconds) moves when the wall clock
    is adjusted, so the same process could read one second apart in two processes and be taken
    for a dead one. Elsewhere (no ``/proc``): psutil's start time, seconds since the epoch.
    """
    try:
        ticks = _ticks_since_boot(pid)
    except OSError:  # no /proc
        return _epoch_start_time(pid)
    return None if ticks is None else ticks / _CLOCK_TICKS


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``started`` (a :func:`process_start_time`)
    is given, is the same process.

    A ``started`` in seconds since the epoch (above :data:`EPOCH_START_AFTER`: recorded by an
    older version, or where there is no ``/proc``) is compared with psutil's start time within a
    second, as before; one from boot, within 0.05 s (the same process reads the same tick).
    """
    if not pid:
        return False
    epoch = started is not None and float(started) > EPOCH_START_AFTER
    actual = (_epoch_start_time if epoch else process_start_time)(int(pid))
    if actual is None:
        return False
    if started is None:
        return True
    return abs(actual - float(started)) < (1.0 if epoch else 0.05)


class RunDir:
    """Paths and atomic readers/writers of one run directory.

    A subclass may serve another kind of background job (a whole-slide run) by overriding the
    file paths, :attr:`process_label` and :meth:`resume_command`.

    Args:
        path: the run folder (``runs/<run-id>``); not created until something is written.
    """

    process_label = "training process"
    """How statuses name this run's process ("the training process (pid 42) ...")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def resume_command(self) -> str:
        """The command line that resumes this run."""
        return f"python -m segcore train --resume {self.path}"

    # --- paths ---------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def previews_dir(self) -> Path:
        return self.path / "previews"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def bundle_dir(self) -> Path:
        return self.path / "bundle"

    def has_bundle(self) -> bool:
        """True once the run has written its bundle (``bundle/`` with both files)."""
        return is_bundle(self.bundle_dir)

    @property
    def stop_request_path(self) -> Path:
        return self.path / "stop.request"

    def exists(self) -> bool:
        """Whether the folder holds a run (has a config or a status file)."""
        return self.config_path.is_file() or self.status_path.is_file()

    def create(self, config: dict[str, Any]) -> None:
        """Creates the folder with ``config.json`` and, unless it has one, a ``queued`` status.

        Raises:
            RunError: the folder cannot be written; the folders this call made are removed
                again, so no half-made run is left behind.
        """
        top = None  # the outermost folder that mkdir will make
        for folder in (self.path, *self.path.parents):
            if folder.exists():
                break
            top = folder
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_config(config)
            if not self.status_path.exists():
                self.write_status(state="queued", epoch=0, epochs=config.get("epochs"))
        except OSError as exc:
            if top is not None:
                shutil.rmtree(top, ignore_errors=True)
            raise self.cannot_write(exc) from exc

    def cannot_write(self, exc: OSError) -> RunError:
        """The one-line error for an ``OSError`` writing this run folder."""
        return RunError(
            f"{self.path}: cannot write the run folder ({exc.strerror or exc}); choose a "
            "writable --run-dir or runs folder (SEGCORE_RUNS_DIR)"
        )

    # --- status --------------------------------------------------------------------------
    def read_status_raw(self) -> dict[str, Any]:
        """Returns status.json as written, or ``{}`` if there is none yet."""
        try:
            return json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.status_path}: unreadable status file ({exc})") from exc

    @staticmethod
    def process_gone(status: dict[str, Any]) -> bool:
        """Whether ``status`` is active (``queued``/``running`` with a pid) but its process no
        longer runs (or its pid now belongs to another process)."""
        active = status.get("state") in ACTIVE_STATES and status.get("pid")
        return bool(active) and not process_alive(status.get("pid"), status.get("pid_started"))

    def _as_found_dead(self, status: dict[str, Any]) -> dict[str, Any]:
        """``status`` (active, its process gone) as the ``failed`` status it stands for."""
        return {
            **status,
            "state": "failed",
            "reason": status.get("reason")
            or f"the {self.process_label} (pid {status.get('pid')}) ended without "
            "reporting: it was probably killed (e.g. out of memory or kill -9)",
            "hint": f"resume it with: {self.resume_command()}",
            # when it was last seen alive: the end lies between that and found_dead_at
            "ended_at": status.get("ended_at") or status.get("updated_at"),
        }

    def read_status(self) -> dict[str, Any]:
        """Returns the status, reporting an active state whose process is gone as ``failed``.

        The first read that finds the process gone also records that ``failed`` status in
        status.json (with ``found_dead_at``), under :meth:`status_guard` and only if the file
        still says the same after a second look, so a status that a live process or a resume
        has written meanwhile is left alone. If the folder cannot be written (read-only, disk
        full) the file stays as it was and the read reports ``failed`` all the same.
        """
        for _ in range(3):  # a status that changes meanwhile is looked at again
            status = self.read_status_raw()
            if not self.process_gone(status):
                return status
            found = self._as_found_dead(status)
            try:
                written = self.update_status_if(
                    lambda current, seen=status: current == seen and self.process_gone(current),
                    **{key: found[key] for key in ("state", "reason", "hint", "ended_at")},
                    found_dead_at=utc_now(),
                )
            except (OSError, RunError) as exc:  # read-only or full: report it all the same
                log.debug("%s: could not record that its process is gone (%s)", self.path, exc)
                return found
            if written is not None:
                return written
        return found

    @contextlib.contextmanager
    def status_guard(self) -> Iterator[bool]:
        """Holds an exclusive ``flock`` on the run folder within the block, so status writes
        (a read-merge-write each) and the correction of :meth:`read_status` do not interleave,
        between threads and processes alike. Nothing else is locked while it is held (it is the
        innermost lock), and it is not re-entrant: do not write the status through
        :meth:`write_status` inside it.

        Yields:
            Whether the folder exists (False: nothing was locked; a missing run folder).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            yield False
            return
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # a file system without flock: unguarded
                    fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)  # closing drops the flock

    def _merge_status(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Writes status.json as the current one with ``updates`` (the caller holds the
        guard); returns it."""
        status = {"run_id": self.run_id, **self.read_status_raw(), **updates}
        status["updated_at"] = utc_now()
        write_json_atomic(self.status_path, status)
        return status

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merges ``updates`` into status.json (atomically) and returns the new status."""
        if "state" in updates and updates["state"] not in STATES:
            raise ValueError(f"unknown run state {updates['state']!r}")
        with self.status_guard():
            return self._merge_status(updates)

    def update_status_if(
        self, condition: Callable[[dict[str, Any]], bool], **updates: Any
    ) -> dict[str, Any] | None:
        """Merges ``updates`` into status.json only if ``condition`` holds for the status read
        under :meth:`status_guard` (a compare-and-set); returns the new status, or None when
        the condition failed or the run folder is gone (nothing is written then).

        Raises:
            OSError: the status could not be written.
            RunError: the status file is unreadable.
        """
        if "state" in updates and updates["state"] not in STATES:
            raise ValueError(f"unknown run state {updates['state']!r}")
        with self.status_guard() as present:
            if not present or not condition(self.read_status_raw()):
                return None
            return self._merge_status(updates)

    def write_final_status(self, **fields: Any) -> bool:
        """Writes the status a run ends with, never raising ``OSError``: if the disk is too full
        for it, writes it again without ``traceback``; returns whether either was written."""
        for attempt in (fields, {**fields, "traceback": None}):
            try:
                self.write_status(**attempt)
                return True
            except OSError as exc:
                error = exc
        log.error("%s: could not record the end of the run (%s)", self.path, error)
        return False

    # --- config --------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """Returns config.json as a dict."""
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError as exc:
            raise RunError(f"{self.path}: not a run folder (no {self.config_path.name})") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.config_path}: unreadable ({exc})") from exc

    def write_config(self, config: dict[str, Any]) -> None:
        """Writes config.json atomically."""
        write_json_atomic(self.config_path, config)

    # --- metrics -------------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, float]]:
        """Returns metrics.csv as a list of rows (numbers as floats, ``epoch`` as int)."""
        try:
            text = self.metrics_path.read_text()
        except FileNotFoundError:
            return []
        rows = []
        for row in csv.DictReader(io.StringIO(text)):
            parsed: dict[str, float] = {}
            for key, value in row.items():
                if value in (None, ""):
                    continue
                parsed[key] = int(value) if key == "epoch" else float(value)
            rows.append(parsed)
        return rows

    def write_metrics(self, rows: list[dict[str, float]]) -> None:
        """Rewrites metrics.csv atomically with ``rows`` (columns: union of keys, epoch first)."""
        columns: list[str] = ["epoch"]
        for row in rows:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_path, buffer.getvalue())

    # --- room for the last status --------------------------------------------------------
    @property
    def reserve_path(self) -> Path:
        return self.path / RESERVE_FILE

    def reserve_space(self) -> bool:
        """Writes ``.reserve`` (:data:`RESERVE_BYTES`); returns False if there is no room."""
        try:
            with open(self.reserve_path, "wb") as handle:
                handle.write(os.urandom(RESERVE_BYTES))  # zeros could be stored as a hole
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            self.reserve_path.unlink(missing_ok=True)
            return False
        return True

    def release_reserve(self) -> None:
        """Deletes ``.reserve``, freeing its room (for the status of a failure, or at the end)."""
        self.reserve_path.unlink(missing_ok=True)

    # --- stop requests -------------------------------------------------------------------
    def request_stop(self) -> None:
        """Asks the training process to stop after its current batch (it polls this file)."""
        write_text_atomic(self.stop_request_path, f"{utc_now()}\n")

    def stop_requested(self) -> bool:
        """Whether a stop was requested."""
        return self.stop_request_path.exists()

    def clear_stop_request(self) -> None:
        """Removes a stop request (done when a run is resumed)."""
        self.stop_request_path.unlink(missing_ok=True)

    # --- previews ------------------------------------------------------------------------
    def preview_path(self, epoch: int) -> Path:
        """Path of the preview image written after epoch ``epoch`` (1-based)."""
        return self.previews_dir / f"epoch_{epoch:03d}.png"

    def latest_preview(self) -> Path | None:
        """The newest preview image, or ``None``."""
        previews = sorted(self.previews_dir.glob("epoch_*.png"))
        return previews[-1] if previews else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of train.log (empty string if none)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 64 * 1024))
                data = handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


def progress_of(status: dict[str, Any]) -> tuple[float, str]:
    """How far a run is, from its status: ``(fraction in [0, 1], text)``.

    The fraction counts completed epochs plus the share of the current one; the text reads
    e.g. ``"epoch 3 of 10, batch 5 of 24, about 12.5 min left"``.
    """
    epoch, epochs = int(status.get("epoch") or 0), int(status.get("epochs") or 0)
    batch, steps = int(status.get("batch") or 0), int(status.get("steps_per_epoch") or 0)
    done = (epoch + (batch / steps if steps else 0)) / epochs if epochs else 0.0
    eta = status.get("eta_s")
    eta_text = f", about {eta / 60:.1f} min left" if eta else ""
    text = (
        f"epoch {epoch + 1 if epoch < epochs else epoch} of {epochs}, "
        f"batch {batch} of {steps or '?'}{eta_text}"
    )
    return min(max(done, 0.0), 1.0), text


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[RunDir]:
    """Returns the runs under ``runs_dir`` (default :func:`default_runs_dir`), newest first."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((r for r in runs if r.exists()), key=lambda r: r.run_id, reverse=True)


def wait_for_state(
    run: RunDir, states: tuple[str, ...], timeout: float = 60.0, poll: float = 0.2
) -> dict[str, Any]:
    """Polls ``run``'s status until its state is in ``states``; returns it.

    Raises:
        TimeoutError: the state was not reached in ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = run.read_status()
        if status.get("state") in states:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run.path}: state {status.get('state')!r} after {timeout} s")
        time.sleep(poll)


def wait_for_end(run: RunDir, timeout: float = 60.0, poll: float = 0.2) -> dict[str, Any]:
    """Polls until ``run`` is over: its state is final and the process its status names ended.

    A job writes its final status *before* it releases its device lock and exits, so a final
    state alone does not yet mean the device is free (a new start could still be refused as
    busy). When this returns, the job's process is gone, and with it its lock and memory. A
    status naming this very process (a run trained in-process) is not waited on beyond its
    state.

    Returns:
        The final status.

    Raises:
        TimeoutError: the run did not reach a final state, or its process did not end, in
            ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    status = wait_for_state(run, FINAL_STATES, timeout=timeout, poll=poll)
    pid = status.get("pid")
    while pid != os.getpid() and process_alive(pid, status.get("pid_started")):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{run.path}: state {status.get('state')!r}, but its process {pid} still runs "
                f"after {timeout} s"
            )
        time.sleep(poll)
    return run.read_status()
