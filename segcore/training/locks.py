"""One training per device at a time: a lock file per device kind in the runs folder.

The lock of device key ``cpu`` (or ``gpu0``, see :func:`segcore.training.devices.lock_key`) is the
file ``runs/.lock-cpu.json``::

    {"run_id": "run-20261127-161502-3fa2", "pid": 4242, "pid_started": 76744.21,
     "acquired_at": "2026-11-27T16:15:02+00:00"}

Its holder is the process ``pid`` (``pid_started``, its
:func:`~segcore.training.runs.process_start_time`, tells it apart from a later process that got
the same pid). A lock whose process is gone (killed, crashed, a zombie) is *stale*: the next
:meth:`DeviceLock.acquire` removes it by itself, so a ``kill -9`` never blocks the device.

Race safety: every change of the lock file happens while holding an exclusive ``flock`` on a
companion file ``<lock>.guard`` (released by the kernel if its holder dies), and the lock file
itself is created with ``O_CREAT | O_EXCL``. Two processes (or threads) acquiring at once get
exactly one winner; the other gets :class:`TrainingBusyError`. The guard file is never deleted:
removing a file others may be waiting on would let two of them lock different files. POSIX only
(``fcntl``), like the rest of the process handling here.

Handing over: :func:`segcore.training.jobs.start_training` acquires the lock for the new run in the
launching process (so two launches cannot both pass the check), spawns the trainer, and then
:meth:`DeviceLock.hand_over` rewrites the lock with the trainer's pid. A trainer whose parent
still holds the lock for the same run waits for that hand-over in :meth:`DeviceLock.acquire`.

Which lock file a trainer uses: :func:`lock_for` returns the one named by the environment
variable :data:`LOCK_ENV` (set by :mod:`segcore.training.jobs` for the processes it spawns, so the
launcher and the trainer always agree), else ``<runs_dir>/.lock-<key>.json``.

This module has no TensorFlow or Streamlit dependency.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from segcore.errors import SegcoreError
from segcore.timestamps import utc_now
from segcore.training.runs import (
    RunError,
    default_runs_dir,
    process_alive,
    process_start_time,
)

log = logging.getLogger(__name__)

LOCK_ENV = "SEGCORE_DEVICE_LOCK"
"""Environment variable naming the lock file a spawned trainer must use."""

LOCK_FIELDS = ("run_id", "pid", "pid_started", "acquired_at")

_CORRUPT: dict[str, Any] = {"corrupt": True}


class TrainingBusyError(SegcoreError):
    """A training already holds the device.

    Args:
        holder: the lock record of the running job (``run_id``, ``pid``, ``pid_started``,
            ``acquired_at``).
        lock_path: the lock file, defaults to None.

    Attributes:
        holder: the lock record.
        run_id: the running job's run id.
        pid: the running job's process id.
        lock_path: the lock file, or None.
    """

    def __init__(self, holder: dict[str, Any], lock_path: str | os.PathLike | None = None):
        self.holder = dict(holder)
        self.run_id = holder.get("run_id")
        self.pid = holder.get("pid")
        self.lock_path = Path(lock_path) if lock_path is not None else None
        where = ""
        run_path = f"runs/{self.run_id}"
        if self.lock_path is not None:
            where = f" ({self.lock_path.name})"
            run_path = str(self.lock_path.parent / str(self.run_id))
        super().__init__(
            f"training is busy: run {self.run_id!r} (pid {self.pid}, since "
            f"{holder.get('acquired_at') or 'unknown'}) holds the device{where}. "
            "One training runs per device at a time: wait for it to finish, or stop it "
            "(the Stop button, "
            f"segcore.training.jobs.stop_training({run_path!r}) or `kill {self.pid}`; "
            "it saves and ends after the current batch)."
        )


def lock_path(runs_dir: str | os.PathLike, key: str) -> Path:
    """Returns the default lock file of device ``key`` in ``runs_dir``.

    Args:
        runs_dir: the runs folder.
        key: the device key, e.g. ``"cpu"`` or ``"gpu0"``.

    Returns:
        ``<runs_dir>/.lock-<key>.json``.

    Raises:
        ValueError: ``key`` is empty or not made of letters, digits, ``-`` and ``_``.
    """
    if not key or not all(c.isalnum() or c in "-_" for c in key):
        raise ValueError(f"device key must be letters, digits, '-' or '_', got {key!r}")
    return Path(runs_dir) / f".lock-{key}.json"


def lock_for(runs_dir: str | os.PathLike | None = None, key: str = "cpu") -> DeviceLock:
    """Returns the lock a trainer must take: :data:`LOCK_ENV` if set, else ``runs_dir``'s.

    Args:
        runs_dir: the runs folder, defaults to :func:`segcore.training.runs.default_runs_dir`.
        key: the device key (see :func:`segcore.training.devices.lock_key`), defaults to ``"cpu"``.

    Returns:
        The :class:`DeviceLock`.
    """
    named = os.environ.get(LOCK_ENV)
    if named:
        return DeviceLock(named)
    return DeviceLock(lock_path(runs_dir if runs_dir is not None else default_runs_dir(), key))


@contextlib.contextmanager
def flocked(path: str | os.PathLike, *, exclusive: bool = True) -> Iterator[None]:
    """Holds an ``flock`` on ``path`` (created if missing, never deleted) within the block.

    The kernel drops the lock when its holder dies, so a killed process never leaves it taken.
    Two blocks on the same file exclude each other even within one process (each opens its own
    file description), so do not nest them.

    Args:
        path: the file to lock; its folder must exist.
        exclusive: an exclusive lock, else a shared one, defaults to True.

    Yields:
        None, with the lock held.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _parent_pid(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class DeviceLock:
    """The lock file that lets one training at a time use a device.

    Args:
        path: the lock file, usually ``runs/.lock-<device-key>.json`` (see :func:`lock_path`).
        handover_timeout: seconds :meth:`acquire` waits for a launching parent to hand the lock
            over (see the module docstring), defaults to 30.

    Example:
        >>> lock = DeviceLock(lock_path("runs", "cpu"))  # doctest: +SKIP
        >>> with lock.acquire("run-20261127-161502-3fa2"):  # doctest: +SKIP
        ...     train()
    """

    def __init__(self, path: str | os.PathLike, *, handover_timeout: float = 30.0):
        self.path = Path(path)
        self.handover_timeout = handover_timeout
        self._owned_run: str | None = None

    def __repr__(self) -> str:
        return f"DeviceLock({str(self.path)!r})"

    @property
    def guard_path(self) -> Path:
        """The companion file whose ``flock`` serialises changes of the lock."""
        return self.path.with_name(self.path.name + ".guard")

    # --- internals -----------------------------------------------------------------------
    def _guard(self, exclusive: bool = True) -> contextlib.AbstractContextManager[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return flocked(self.guard_path, exclusive=exclusive)

    def _read(self) -> dict[str, Any] | None:
        """The record, None if there is no lock file, ``_CORRUPT`` if it is unreadable."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return _CORRUPT
        if not isinstance(data, dict) or not data.get("run_id") or not data.get("pid"):
            return _CORRUPT
        return data

    @staticmethod
    def _alive(record: dict[str, Any] | None) -> bool:
        if not record or record is _CORRUPT:
            return False
        return process_alive(record.get("pid"), record.get("pid_started"))

    def _create(self, record: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record, indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise

    def _discard_stale(self, record: dict[str, Any]) -> None:
        """Moves the stale lock file aside and deletes it (called under the guard)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        if record is _CORRUPT:
            log.warning("%s: removed an unreadable lock file", self.path)
        else:
            log.warning(
                "%s: recovered the lock of run %r (pid %s is no longer running)",
                self.path,
                record.get("run_id"),
                record.get("pid"),
            )

    @staticmethod
    def _record(run_id: str, pid: int) -> dict[str, Any]:
        started = process_start_time(pid)
        if started is None:
            raise ValueError(f"process {pid} is not running: it cannot hold a device lock")
        return {"run_id": run_id, "pid": pid, "pid_started": started, "acquired_at": utc_now()}

    # --- public API ----------------------------------------------------------------------
    def acquire(self, run_id: str, pid: int | None = None) -> DeviceLock:
        """Takes the lock for ``run_id``, held by process ``pid``.

        A stale lock (its process is gone) is removed first. Acquiring again for the same run and
        process is a no-op. If the holder is the same run in the *parent* of ``pid`` (a launcher
        that has not yet handed over, see :meth:`hand_over`), waits up to ``handover_timeout``.

        Args:
            run_id: the run taking the device.
            pid: the process holding it, defaults to this process.

        Returns:
            This lock, so that ``with lock.acquire(run_id): ...`` releases it at the end.

        Raises:
            TrainingBusyError: another live process holds the lock.
            RunError: the lock file cannot be written (its folder is not a writable folder).
            ValueError: process ``pid`` is not running.
        """
        pid = os.getpid() if pid is None else int(pid)
        try:
            return self._acquire(run_id, pid)
        except OSError as exc:
            raise RunError(
                f"{self.path.parent}: cannot keep the device lock there ({exc.strerror or exc}); "
                "the runs folder (SEGCORE_RUNS_DIR) must be a writable folder"
            ) from exc

    def _acquire(self, run_id: str, pid: int) -> DeviceLock:
        record = self._record(run_id, pid)
        deadline: float | None = None
        while True:
            with self._guard():
                current = self._read()
                if current is not None and not self._alive(current):
                    self._discard_stale(current)
                    current = None
                if current is None:
                    try:
                        self._create(record)
                    except FileExistsError:  # a writer that ignores the guard: look again
                        continue
                    self._owned_run = run_id
                    log.info("%s: acquired for run %r (pid %d)", self.path, run_id, pid)
                    return self
                same_run = current.get("run_id") == run_id
                if same_run and current.get("pid") == pid:
                    self._owned_run = run_id
                    return self
                handing_over = same_run and _parent_pid(pid) == current.get("pid")
                if not handing_over:
                    raise TrainingBusyError(current, self.path)
            if deadline is None:
                deadline = time.monotonic() + self.handover_timeout
            elif time.monotonic() > deadline:
                raise TrainingBusyError(current, self.path)
            time.sleep(0.05)

    def hand_over(self, run_id: str, pid: int) -> None:
        """Passes the lock of ``run_id`` from this process to process ``pid`` (e.g. its child).

        If the lock is free (or stale) it is simply taken for ``pid``.

        Args:
            run_id: the run whose lock is passed on.
            pid: the process that holds it from now on.

        Raises:
            TrainingBusyError: the lock belongs to another run or process.
            ValueError: process ``pid`` is not running.
        """
        record = self._record(run_id, int(pid))
        with self._guard():
            current = self._read()
            if current is not None and not self._alive(current):
                self._discard_stale(current)
                current = None
            if current is None:
                self._create(record)
                return
            if current.get("run_id") != run_id or current.get("pid") not in (os.getpid(), pid):
                raise TrainingBusyError(current, self.path)
            tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(tmp, self.path)
        self._owned_run = None
        log.info("%s: handed over run %r to pid %d", self.path, run_id, pid)

    def release(self, run_id: str) -> bool:
        """Removes the lock if it belongs to ``run_id`` (whichever process holds it).

        Args:
            run_id: the run giving the device back.

        Returns:
            True if the lock was removed, False if it was free or belongs to another run.
        """
        with self._guard():
            current = self._read()
            if current is None or current is _CORRUPT or current.get("run_id") != run_id:
                return False
            self.path.unlink(missing_ok=True)
        if self._owned_run == run_id:
            self._owned_run = None
        log.info("%s: released by run %r", self.path, run_id)
        return True

    def holder(self) -> dict[str, Any] | None:
        """Returns the lock record of the live holder, or None if free or stale.

        Returns:
            ``{"run_id", "pid", "pid_started", "acquired_at"}`` or None.
        """
        with self._guard(exclusive=False):
            current = self._read()
        return dict(current) if self._alive(current) else None

    def __enter__(self) -> DeviceLock:
        if self._owned_run is None:
            raise RuntimeError("use `with lock.acquire(run_id):` - the lock is not held")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._owned_run is not None:
            self.release(self._owned_run)
