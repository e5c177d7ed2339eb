"""Device lock: one training per device, stale locks recovered, races have one winner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from segcore.errors import SegcoreError
from segcore.training.locks import (
    LOCK_ENV,
    LOCK_FIELDS,
    DeviceLock,
    TrainingBusyError,
    lock_for,
    lock_path,
)
from segcore.training.runs import process_start_time
from tests.conftest import REPO


@pytest.fixture
def path(tmp_path):
    return lock_path(tmp_path, "cpu")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_record(path, run_id, pid, pid_started=None):
    record = {"run_id": run_id, "pid": pid, "pid_started": pid_started, "acquired_at": "then"}
    path.write_text(json.dumps(record))


def test_lock_path_and_validation(tmp_path):
    assert lock_path(tmp_path, "gpu0") == tmp_path / ".lock-gpu0.json"
    with pytest.raises(ValueError, match="device key"):
        lock_path(tmp_path, "../x")


def test_acquire_writes_record_and_release_removes_it(path):
    lock = DeviceLock(path).acquire("run-a")
    record = json.loads(path.read_text())
    assert tuple(record) == LOCK_FIELDS
    assert record["run_id"] == "run-a" and record["pid"] == os.getpid()
    assert record["pid_started"] == pytest.approx(process_start_time(os.getpid()))
    assert lock.holder() == record
    assert DeviceLock(path).release("run-other") is False
    assert path.exists()
    assert DeviceLock(path).release("run-a") is True
    assert not path.exists()
    assert lock.holder() is None
    assert lock.release("run-a") is False


def test_acquire_again_for_same_run_and_process_is_a_no_op(path):
    DeviceLock(path).acquire("run-a")
    DeviceLock(path).acquire("run-a")
    assert DeviceLock(path).holder()["run_id"] == "run-a"


def test_busy_error_names_the_running_job(path):
    DeviceLock(path).acquire("run-a")
    with pytest.raises(TrainingBusyError) as info:
        DeviceLock(path).acquire("run-b")
    err = info.value
    assert isinstance(err, SegcoreError)
    assert err.run_id == "run-a" and err.pid == os.getpid()
    message = str(err)
    assert "'run-a'" in message and f"pid {os.getpid()}" in message
    assert err.holder["acquired_at"] in message
    assert "stop" in message and f"kill {os.getpid()}" in message
    assert DeviceLock(path).holder()["run_id"] == "run-a"


def test_context_manager_releases(path):
    with DeviceLock(path).acquire("run-a") as lock:
        assert lock.holder()["run_id"] == "run-a"
    assert DeviceLock(path).holder() is None and not path.exists()
    with pytest.raises(RuntimeError, match="acquire"), DeviceLock(path):
        pass


def test_release_after_an_error_in_the_block(path):
    with pytest.raises(KeyError), DeviceLock(path).acquire("run-a"):
        raise KeyError("boom")
    assert not path.exists()


@pytest.mark.parametrize("kind", ["dead", "reused", "corrupt", "empty"])
def test_stale_lock_is_recovered(path, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dead":
        write_record(path, "run-old", dead_pid())
    elif kind == "reused":  # a live pid, but not the process that took the lock
        write_record(path, "run-old", os.getpid(), pid_started=1.0)
    elif kind == "corrupt":
        path.write_text("{not json")
    else:
        path.write_text("")
    lock = DeviceLock(path)
    assert lock.holder() is None
    lock.acquire("run-new")
    assert lock.holder()["run_id"] == "run-new"
    leftovers = sorted(p.name for p in path.parent.iterdir())
    assert leftovers == [path.name, lock.guard_path.name]


def test_acquire_for_a_pid_that_is_not_running(path):
    with pytest.raises(ValueError, match="not running"):
        DeviceLock(path).acquire("run-a", pid=dead_pid())


@pytest.mark.parametrize("stale_first", [False, True])
def test_threads_racing_have_exactly_one_winner(path, stale_first):
    if stale_first:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_record(path, "run-old", dead_pid())
    n = 8
    barrier = threading.Barrier(n)
    results: list[str] = []

    def contender(i):
        barrier.wait()
        try:
            DeviceLock(path).acquire(f"run-{i}")
            results.append(f"won run-{i}")
        except TrainingBusyError:
            results.append("busy")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [r for r in results if r.startswith("won")]
    assert len(results) == n and len(winners) == 1
    assert DeviceLock(path).holder()["run_id"] == winners[0].split()[1]


CONTENDER = """
import sys, time
from segcore.training.locks import DeviceLock, TrainingBusyError
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    DeviceLock(sys.argv[1]).acquire(sys.argv[3])
    print("won", flush=True)
except TrainingBusyError:
    print("busy", flush=True)
sys.stdin.read()  # the winner keeps the lock until every contender has answered
"""


def test_processes_racing_have_exactly_one_winner(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_record(path, "run-old", dead_pid())  # everybody also races to recover it
    start_at = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(path), start_at, f"run-{i}"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        outputs = [p.stdout.readline().strip() for p in procs]
    finally:
        for p in procs:
            p.communicate(timeout=30)
    assert sorted(outputs) == ["busy", "busy", "busy", "won"]


HANDOVER_CHILD = """
import sys, time
from segcore.training.locks import DeviceLock
start = time.monotonic()  # before saying so: the parent's wait starts after the line
print("waiting", flush=True)
lock = DeviceLock(sys.argv[1]).acquire(sys.argv[2])
print(f"{time.monotonic() - start:.3f}", flush=True)
lock.release(sys.argv[2])
"""


def test_child_waits_for_hand_over_from_its_parent(path):
    lock = DeviceLock(path).acquire("run-a")
    child = subprocess.Popen(
        [sys.executable, "-c", HANDOVER_CHILD, str(path), "run-a"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "waiting"
    time.sleep(0.5)
    assert child.poll() is None  # still waiting for the hand-over
    assert lock.holder()["pid"] == os.getpid()
    lock.hand_over("run-a", child.pid)
    out, _ = child.communicate(timeout=20)
    assert child.returncode == 0
    assert float(out) >= 0.4
    assert lock.holder() is None  # the child released it


def test_hand_over_to_another_process(path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock = DeviceLock(path).acquire("run-a")
        lock.hand_over("run-a", sleeper.pid)
        assert lock.holder()["pid"] == sleeper.pid
        # the holder is not our parent: a second process for the same run is refused at once
        with pytest.raises(TrainingBusyError, match="run-a"):
            DeviceLock(path).acquire("run-a")
        with pytest.raises(TrainingBusyError):
            DeviceLock(path).hand_over("run-b", os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert DeviceLock(path).holder() is None  # stale now
    DeviceLock(path).hand_over("run-c", os.getpid())  # a free lock is simply taken
    assert DeviceLock(path).holder()["run_id"] == "run-c"


def test_hand_over_wait_times_out(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getppid()
    write_record(path, "run-a", parent, process_start_time(parent))
    lock = DeviceLock(path, handover_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(TrainingBusyError, match="run-a"):
        lock.acquire("run-a")
    assert 0.3 <= time.monotonic() - start < 5


def test_lock_for_prefers_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_ENV, raising=False)
    assert lock_for(tmp_path, "gpu0").path == tmp_path / ".lock-gpu0.json"
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    assert lock_for(key="cpu").path == tmp_path / "runs" / ".lock-cpu.json"
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "elsewhere.json"))
    assert lock_for(tmp_path, "gpu0").path == tmp_path / "elsewhere.json"
