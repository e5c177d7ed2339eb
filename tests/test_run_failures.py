"""A run that cannot write: a full disk, a folder that cannot be written, a busy device.

Faults are injected (a disk cannot be filled on purpose here): ``os.fsync``, which every atomic
write calls, and a fake model's ``save`` raise ``ENOSPC``. No TensorFlow: these tests are quick;
tests/test_training.py fills the disk of real trainings in each phase.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segcore.atomic import is_disk_full, write_json_atomic
from segcore.errors import BundleError
from segcore.training.checkpoints import (
    STATE_FILE,
    checkpoint_state,
    discard_partial_files,
    save_model_atomic,
    write_checkpoint,
)
from segcore.training.config import TrainConfig
from segcore.training.finish import record_failure
from segcore.training.locks import DeviceLock, TrainingBusyError
from segcore.training.runs import RESERVE_BYTES, RunDir, RunError
from segcore.training.trainer import prepare_run, train


def disk_full(path: str | os.PathLike = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class FakeModel:
    """Writes a few bytes where Keras would write a model; ``fail`` makes it stop half-way."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    def save(self, path):
        Path(path).write_bytes(b"PK\x03\x04 half a model")
        if self.fail:
            raise disk_full(path)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and staging folders anywhere below ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.fixture
def fsync_fails(monkeypatch):
    """``fsync_fails(predicate)``: ``os.fsync`` of a file whose path matches raises ENOSPC."""
    real = os.fsync

    def install(predicate):
        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if predicate(Path(path), fd):
                raise disk_full(path)
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    return install


@pytest.fixture
def run(tmp_path):
    run = RunDir(tmp_path / "runs" / "r")
    run.create({"epochs": 2})
    return run


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, fsync_fails):
    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "running"})
    fsync_fails(lambda path, fd: True)
    with pytest.raises(OSError) as info:
        write_json_atomic(target, {"state": "failed"})
    assert is_disk_full(info.value)
    assert json.loads(target.read_text()) == {"state": "running"}
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_recognised_through_wrapping_errors():
    try:
        try:
            raise disk_full("model.keras")
        except OSError as exc:
            raise BundleError("bundle: could not save the model") from exc
    except BundleError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError("[Errno 28] No space left on device"))  # errno lost (h5py)
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("disk on fire"))


def test_a_checkpoint_that_fails_half_way_is_removed(run):
    path = run.checkpoints_dir / "epoch-001.keras"
    with pytest.raises(OSError):
        save_model_atomic(FakeModel(fail=True), path)
    assert not path.exists() and leftovers(run.path) == []


@pytest.mark.parametrize("phase", ["checkpoint", "metrics.csv", "state.json"])
def test_a_failed_checkpoint_write_keeps_the_last_good_one(run, phase, fsync_fails):
    history = [{"epoch": 1, "loss": 0.5}]
    write_checkpoint(run, FakeModel(), epoch=1, best=None, history=history)
    history.append({"epoch": 2, "loss": 0.4})
    if phase != "checkpoint":
        fsync_fails(lambda path, fd: path.name.startswith(f".{phase}."))
    model = FakeModel(fail=phase == "checkpoint")
    with pytest.raises(OSError) as info:
        write_checkpoint(run, model, epoch=2, best=None, history=history)
    assert is_disk_full(info.value)
    assert leftovers(run.path) == []
    assert checkpoint_state(run)["epoch"] == 1  # resume starts from epoch 1's checkpoint
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["epoch-001.keras", STATE_FILE]


def test_a_resumed_run_discards_what_a_killed_writer_left(run):
    write_checkpoint(run, FakeModel(), epoch=1, best=None, history=[{"epoch": 1}])
    (run.checkpoints_dir / "best.keras").write_bytes(b"best")
    planted = [
        run.checkpoints_dir / ".epoch-002.tmp.keras",  # killed while saving the model
        run.checkpoints_dir / "epoch-002.keras",  # killed before state.json pointed at it
        run.checkpoints_dir / f".{STATE_FILE}.x1.tmp",
        run.path / ".metrics.csv.x2.tmp",
        run.previews_dir / ".epoch_002.png.x3.tmp",
        run.path / ".bundle.x4.tmp" / "model.keras",  # killed while saving the bundle
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    others = run.path / ".stop.request.x5.tmp"  # another process may be writing it right now
    others.write_text("")
    removed = discard_partial_files(run)
    assert len(removed) == 6
    assert leftovers(run.path) == [others.name]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [
        "best.keras",
        "epoch-001.keras",
        STATE_FILE,
    ]


def test_only_stale_status_temporaries_are_discarded(run):
    """status.json is also written by other processes: a fresh temporary file may be a write in
    progress and stays; one older than STALE_STATUS_TMP_SECONDS is a killed writer's and goes."""
    import time

    from segcore.training.checkpoints import STALE_STATUS_TMP_SECONDS

    fresh = run.path / ".status.json.a1.tmp"
    stale = run.path / ".status.json.b2.tmp"
    for path in (fresh, stale):
        path.write_text("{")
    old = time.time() - 2 * STALE_STATUS_TMP_SECONDS
    os.utime(stale, (old, old))
    assert stale in discard_partial_files(run)
    assert fresh.exists() and not stale.exists()


def fail_with(run: RunDir, exc: BaseException) -> None:
    """Calls record_failure as train does: inside the ``except`` block of ``exc``."""
    try:
        raise exc
    except BaseException as caught:
        record_failure(run, caught)


def test_a_full_disk_is_recorded_by_freeing_the_reserve(run, fsync_fails):
    run.write_status(state="running", pid=os.getpid())
    assert run.reserve_space() and run.reserve_path.stat().st_size == RESERVE_BYTES
    # The disk stays full until the reserve is given back.
    fsync_fails(lambda path, fd: run.reserve_path.exists())
    with pytest.raises(OSError):
        run.write_status(batch=3)
    fail_with(run, disk_full(run.checkpoints_dir / ".epoch-002.tmp.keras"))
    status = run.read_status()
    assert status["state"] == "failed" and status["reason"].startswith("disk full: OSError")
    assert f"--resume {run.path}" in status["hint"] and "Traceback" in status["traceback"]
    assert not run.reserve_path.exists() and leftovers(run.path) == []


def test_with_almost_no_room_a_short_status_is_written(run, fsync_fails):
    run.write_status(state="running", pid=os.getpid(), traceback="x" * 5000)
    fsync_fails(lambda path, fd: b"Traceback" in path.read_bytes())  # room for a short one only
    fail_with(run, disk_full())
    status = run.read_status()
    assert status["state"] == "failed" and status["reason"].startswith("disk full")
    assert status["traceback"] is None
    fsync_fails(lambda path, fd: True)  # no room at all: logged, never raised
    assert run.write_final_status(state="failed", reason="x") is False


def test_a_run_folder_that_cannot_be_written_is_refused_and_not_left_half_made(
    tmp_path, fsync_fails
):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunError, match=r"a-file/run: cannot write the run folder"):
        RunDir(tmp_path / "a-file" / "run").create({})
    fsync_fails(lambda path, fd: "config.json" in path.name)
    with pytest.raises(RunError, match=r"new/runs/r: cannot write the run folder \(No space"):
        prepare_run(TrainConfig(run_dir=str(tmp_path / "new" / "runs" / "r")), tmp_path)
    assert not (tmp_path / "new").exists()  # the folders it made are gone again
    assert leftovers(tmp_path) == []


def test_train_refuses_unwritable_folders_in_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunError, match=r"a-file: cannot keep the device lock there \(File exists"):
        train(TrainConfig(), runs_dir=tmp_path / "a-file")
    with pytest.raises(RunError, match=r"a-file/r: cannot write the run folder"):
        train(TrainConfig(run_dir=str(tmp_path / "a-file" / "r")), runs_dir=tmp_path / "runs")
    assert not list((tmp_path / "runs").glob(".lock-*.json"))  # the lock was given back


def test_a_refused_second_training_leaves_nothing_behind(tmp_path):
    runs = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for key in ("cpu", "gpu0"):  # whichever this machine's trainer takes
            DeviceLock(runs / f".lock-{key}.json").acquire("the-running-one", holder.pid)
        with pytest.raises(TrainingBusyError, match="the-running-one"):
            train(TrainConfig(run_dir=str(runs / "second")), runs_dir=runs)
        assert not (runs / "second").exists()
        with pytest.raises(TrainingBusyError):
            train(TrainConfig(), runs_dir=runs)
        assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []
        # A stopped run asked to resume keeps its state; a launcher's queued run is told why.
        stopped = prepare_run(TrainConfig(run_dir=str(runs / "stopped")), runs)
        stopped.write_status(state="stopped", reason="stop requested")
        with pytest.raises(TrainingBusyError):
            train(run_dir=stopped.path, resume=True, runs_dir=runs)
        assert stopped.read_status()["state"] == "stopped"
        queued = prepare_run(TrainConfig(run_dir=str(runs / "queued")), runs)
        queued.write_status(pid=os.getpid())
        with pytest.raises(TrainingBusyError):
            train(TrainConfig(run_dir=str(queued.path)), runs_dir=runs)
        status = queued.read_status()
        assert status["state"] == "failed" and "the-running-one" in status["reason"]
    finally:
        holder.kill()
        holder.wait()


def test_a_background_start_that_cannot_write_leaves_nothing(tmp_path, fsync_fails):
    from segcore.training.jobs import start_training

    def start(runs_dir, run_id=None):
        return start_training(
            {"epochs": 1}, runs_dir=runs_dir, run_id=run_id, command=["true"], device_key="cpu"
        )

    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunError, match=r"a-file: cannot keep the device lock there"):
        start(tmp_path / "a-file")
    runs = tmp_path / "runs"
    for failing in (1, 2):  # create's queued status, then the launcher's with its pid
        writes = []

        def nth_status_write(path, fd, failing=failing, writes=writes):
            writes.append(path.name.startswith(".status.json."))
            return writes[-1] and sum(writes) == failing

        fsync_fails(nth_status_write)
        with pytest.raises(RunError, match=r"runs/r: cannot write the run folder \(No space"):
            start(runs, "r")
        assert not (runs / "r").exists()
        assert DeviceLock(runs / ".lock-cpu.json").holder() is None


# --- a killed process's status ----------------------------------------------------------------


@pytest.fixture
def sleeper():
    """A child process to stand for a trainer; killed (and reaped) at the end if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def running_in(run: RunDir, proc: subprocess.Popen) -> dict:
    from segcore.training.runs import process_start_time

    deadline = time.monotonic() + 10
    while process_start_time(proc.pid) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return run.write_status(
        state="running", pid=proc.pid, pid_started=process_start_time(proc.pid), ended_at=None
    )


def test_a_killed_runs_status_file_says_failed_on_the_next_look(run, sleeper):
    written = running_in(run, sleeper)
    assert run.read_status() == written  # alive: nothing is changed
    assert json.loads(run.status_path.read_text()) == written
    sleeper.kill()
    sleeper.wait()
    status = run.read_status()
    assert status["state"] == "failed" and f"pid {sleeper.pid}" in status["reason"]
    assert "probably killed" in status["reason"] and "--resume" in status["hint"]
    on_disk = json.loads(run.status_path.read_text())
    assert on_disk == status  # the file says so itself now, with the reason
    assert on_disk["found_dead_at"] and on_disk["ended_at"] == written["updated_at"]
    assert run.read_status() == on_disk  # later looks change nothing
    assert json.loads(run.status_path.read_text()) == on_disk
    assert leftovers(run.path) == []


def test_a_status_written_meanwhile_is_not_overwritten(run, sleeper):
    """A resume writes a fresh status between the reader's first look and its correction: the
    correction, re-checked under the status lock, leaves it alone."""
    from segcore.training.runs import process_start_time

    running_in(run, sleeper)
    sleeper.kill()
    sleeper.wait()
    fresh = {"state": "queued", "pid": os.getpid(), "pid_started": process_start_time(os.getpid())}

    class Racing(RunDir):
        raced = False

        def status_guard(self):
            if not self.raced:
                self.raced = True
                RunDir(self.path).write_status(**fresh)  # the resume, just before the lock
            return super().status_guard()

    status = Racing(run.path).read_status()
    assert {key: status[key] for key in fresh} == fresh
    on_disk = json.loads(run.status_path.read_text())
    assert {key: on_disk[key] for key in fresh} == fresh and "found_dead_at" not in on_disk


def test_status_writes_wait_for_the_status_lock(run):
    import threading

    done = threading.Event()
    with run.status_guard():
        writer = threading.Thread(target=lambda: (run.write_status(epoch=1), done.set()))
        writer.start()
        assert not done.wait(0.3)  # held off while the lock is held
    assert done.wait(5)
    writer.join()
    assert run.read_status_raw()["epoch"] == 1


def test_a_read_only_runs_folder_still_reads_failed(run, sleeper, monkeypatch):
    import tempfile

    written = running_in(run, sleeper)
    sleeper.kill()
    sleeper.wait()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # root ignores permissions: refuse like EROFS
        if dir is not None and Path(dir) == run.path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    for _ in range(2):
        status = run.read_status()
        assert status["state"] == "failed" and "probably killed" in status["reason"]
    assert json.loads(run.status_path.read_text()) == written  # unchanged, and no error
    assert leftovers(run.path) == []


def test_the_reaper_says_how_a_process_ended_after_a_reader_found_it_gone(run):
    from segcore.training.background import _reap

    exits_3 = "import time, sys; time.sleep(0.5); sys.exit(3)"
    proc = subprocess.Popen([sys.executable, "-c", exits_3])
    running_in(run, proc)
    while proc.poll() is None:  # its end, as _reap's wait will see it
        time.sleep(0.05)
    assert run.read_status()["found_dead_at"]  # a reader came first
    _reap(proc, run)
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "failed" and "exited with status 3" in status["reason"]
    assert status["found_dead_at"] is None


def test_wait_for_end_waits_for_the_process_after_the_final_state(run, sleeper):
    from segcore.training.runs import process_start_time, wait_for_end

    running_in(run, sleeper)
    run.write_status(state="stopped")  # the final status, written before the process ends
    with pytest.raises(TimeoutError, match=rf"'stopped', but its process {sleeper.pid} still"):
        wait_for_end(run, timeout=0.5, poll=0.05)
    sleeper.kill()
    sleeper.wait()
    assert wait_for_end(run, timeout=5, poll=0.05)["state"] == "stopped"
    # a run trained in this very process is not waited on beyond its state
    pid = os.getpid()
    run.write_status(state="completed", pid=pid, pid_started=process_start_time(pid))
    assert wait_for_end(run, timeout=0.5, poll=0.05)["state"] == "completed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's btime is Linux's")
def test_a_live_process_stays_alive_when_the_wall_clock_moves(run, sleeper, monkeypatch):
    import psutil

    from segcore.training.runs import process_alive

    written = running_in(run, sleeper)
    started = written["pid_started"]
    # The kernel's boot time (whole seconds since the epoch) moves when the wall clock is
    # adjusted: psutil's start times then read a second later in one process than in another.
    boot = psutil.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 1.0)
    assert process_alive(sleeper.pid, started)
    assert run.read_status()["state"] == "running"
    monkeypatch.undo()
    assert not process_alive(sleeper.pid, started + 1.0)  # another process with that pid
    # a start recorded in seconds since the epoch (before 2026-12-07) is still recognised
    epoch = psutil.Process(sleeper.pid).create_time()
    assert process_alive(sleeper.pid, epoch) and not process_alive(sleeper.pid, epoch - 5)
