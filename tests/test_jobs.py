"""Background jobs, with a fake trainer that follows the real trainer's contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from segcore.errors import ConfigError
from segcore.training.jobs import (
    list_jobs,
    resume_training,
    running_job,
    start_training,
    stop_training,
    train_arguments,
)
from segcore.training.locks import DeviceLock, TrainingBusyError, lock_path
from segcore.training.runs import RunDir, RunError, list_runs, process_alive, wait_for_state
from tests.conftest import REPO

# Mimics ``python -m segcore train``: same arguments, takes the device lock (waiting for the
# launcher's hand-over), writes ``running`` with its pid, polls stop requests and SIGTERM after
# every "batch", ends ``stopped`` or ``completed`` and releases the lock - half a second later,
# as a real trainer tearing down does, so that a caller who takes a final state for a free device
# is caught.
FAKE_TRAINER = """
import argparse, json, os, signal, sys, time
from segcore.training.locks import TrainingBusyError, lock_for
from segcore.timestamps import utc_now
from segcore.training.runs import RunDir, process_start_time

parser = argparse.ArgumentParser()
parser.add_argument("--config")
parser.add_argument("--run-dir")
parser.add_argument("--resume")
args = parser.parse_args()
run = RunDir(args.resume or args.run_dir)
config = json.loads(run.config_path.read_text())
stop = {"flag": False}
signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(flag=True))
lock = lock_for(run.path.parent, "cpu")
pid = os.getpid()
try:
    lock.acquire(run.run_id)
except TrainingBusyError as exc:
    run.write_status(state="failed", reason=str(exc), pid=pid, pid_started=process_start_time(pid))
    sys.exit(2)
try:
    env = [os.environ.get(k) for k in ("SEGCORE_RUNS_DIR", "SEGCORE_DEVICE_LOCK")]
    print("fake trainer running", args.resume is not None, *env, flush=True)
    run.write_status(
        state="running", pid=pid, pid_started=process_start_time(pid), started_at=utc_now()
    )
    for step in range(config.get("steps", 100000)):
        if stop["flag"] or run.stop_requested():
            run.write_status(state="stopped", reason="stop requested", ended_at=utc_now())
            break
        time.sleep(0.05)
        run.write_status(batch=step + 1)
    else:
        run.write_status(state="completed", ended_at=utc_now())
    time.sleep(0.5)
finally:
    lock.release(run.run_id)
"""

CONFIG = {"epochs": 3, "batch_size": 2, "data": "synthetic", "model": {"backbone": "resnet50"}}


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    return [sys.executable, str(script)]


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture(autouse=True)
def stop_leftovers(runs_dir):
    """Stops any fake trainer a failing test left running."""
    yield
    for job in list_jobs(runs_dir):
        if job["state"] in ("queued", "running"):
            os.kill(job["status"]["pid"], signal.SIGKILL)


def start(runs_dir, fake, **kwargs):
    return start_training(CONFIG, runs_dir=runs_dir, command=fake, device_key="cpu", **kwargs)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def not_a_zombie(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def gone(pid):
    return not psutil.pid_exists(pid)


def test_start_refuse_stop_and_start_again(runs_dir, fake, monkeypatch):
    run = start(runs_dir, fake, run_id="run-first")
    assert run.path == runs_dir.resolve() / "run-first"
    config = run.read_config()
    assert config == {**CONFIG, "run_dir": str(run.path)}
    status = wait_for_state(run, ("running",), timeout=20)
    pid = status["pid"]
    assert pid != os.getpid() and process_alive(pid, status["pid_started"])
    lock_file = lock_path(runs_dir.resolve(), "cpu")
    assert (
        f"fake trainer running False {runs_dir.resolve()} {lock_file}" in run.log_path.read_text()
    )
    holder = DeviceLock(lock_file).holder()
    assert holder["run_id"] == "run-first" and holder["pid"] == pid
    assert running_job(runs_dir).path == run.path
    assert running_job(runs_dir, "gpu0") is None
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(runs_dir))  # the default runs folder
    assert running_job().path == run.path
    assert [job["run_id"] for job in list_jobs()] == ["run-first"]

    with pytest.raises(TrainingBusyError, match="run-first") as info:
        start(runs_dir, fake)
    assert info.value.pid == pid
    assert [r.run_id for r in list_runs(runs_dir)] == ["run-first"]  # nothing was created

    final = stop_training(run.path, wait=True, timeout=20)
    assert final["state"] == "stopped"
    # waiting for the stop means waiting for the process: the device is free at once
    assert DeviceLock(lock_path(runs_dir, "cpu")).holder() is None
    assert running_job(runs_dir) is None
    assert not process_alive(pid, status["pid_started"])
    wait_until(lambda: gone(pid))  # reaped: no zombie left behind

    second = start(runs_dir, fake, run_id="run-second")
    assert wait_for_state(second, ("running",), timeout=20)["pid"] != pid
    assert stop_training(second.path, wait=True, timeout=20)["state"] == "stopped"


def test_queued_status_carries_the_trainer_pid(runs_dir, fake):
    run = start(runs_dir, fake)
    status = run.read_status_raw()
    assert status["state"] in ("queued", "running")
    assert status["pid"] != os.getpid() and status["epochs"] == 3
    assert status["lock"] == ".lock-cpu.json"
    stop_training(run.path, wait=True, timeout=20)


def test_trainer_runs_in_its_own_session(runs_dir, fake):
    run = start(runs_dir, fake)
    pid = wait_for_state(run, ("running",), timeout=20)["pid"]
    assert os.getsid(pid) == pid != os.getsid(0)
    assert psutil.Process(pid).cwd() == str(REPO)
    stop_training(run.path, wait=True, timeout=20)


LAUNCHER = """
import sys
from segcore.training.jobs import start_training
run = start_training({"epochs": 1}, runs_dir=sys.argv[1], command=sys.argv[2:], device_key="cpu")
print(run.path, flush=True)
"""


def test_trainer_survives_the_process_that_started_it(runs_dir, fake):
    launcher = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(runs_dir), *fake],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert launcher.returncode == 0, launcher.stderr
    run = RunDir(launcher.stdout.strip())
    status = wait_for_state(run, ("running",), timeout=20)
    time.sleep(0.3)
    assert process_alive(status["pid"], status["pid_started"])
    assert run.read_status()["state"] == "running"
    assert stop_training(run.path, wait=True, timeout=20)["state"] == "stopped"


def test_kill_9_reads_as_failed_and_the_lock_is_recovered(runs_dir, fake):
    run = start(runs_dir, fake, run_id="run-killed")
    pid = wait_for_state(run, ("running",), timeout=20)["pid"]
    os.kill(pid, signal.SIGKILL)
    status = wait_for_state(run, ("failed",), timeout=10)
    assert str(pid) in status["reason"]
    wait_until(lambda: not_a_zombie(pid))
    lock = DeviceLock(lock_path(runs_dir, "cpu"))
    assert lock.path.exists() and lock.holder() is None  # left behind, but stale

    after = start(runs_dir, fake, run_id="run-after")
    wait_for_state(after, ("running",), timeout=20)
    assert lock.holder()["run_id"] == "run-after"
    assert stop_training(after.path, wait=True, timeout=20)["state"] == "stopped"


def test_resume_after_stop(runs_dir, fake):
    run = start(runs_dir, fake)
    wait_for_state(run, ("running",), timeout=20)
    stop_training(run.path, wait=True, timeout=20)
    assert run.stop_requested()

    resumed = resume_training(run.path, command=fake, device_key="cpu")
    assert resumed.path == run.path and not run.stop_requested()
    status = wait_for_state(run, ("running",), timeout=20)
    assert status["reason"] is None and status["ended_at"] is None
    assert "fake trainer running True" in run.log_path.read_text()
    with pytest.raises(TrainingBusyError, match=run.run_id):
        resume_training(run.path, command=fake, device_key="cpu")
    assert stop_training(run.path, wait=True, timeout=20)["state"] == "stopped"


def test_completed_run_and_list_jobs(runs_dir, fake):
    run = start_training({**CONFIG, "steps": 3}, runs_dir=runs_dir, command=fake, device_key="cpu")
    wait_for_state(run, ("completed",), timeout=20)
    run.write_metrics([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "val_dice": 0.7}])
    broken = RunDir(runs_dir / "run-0-broken")
    broken.path.mkdir()
    broken.status_path.write_text("{half")

    jobs = list_jobs(runs_dir)
    assert [j["run_id"] for j in jobs] == [run.run_id, "run-0-broken"]
    job = jobs[0]
    assert job["state"] == "completed" and job["status"]["state"] == "completed"
    assert job["metrics"] == {"epoch": 2, "loss": 0.25, "val_dice": 0.7}
    assert job["config"] == {"epochs": 3, "batch_size": 2, "data": "synthetic", "steps": 3}
    assert jobs[1]["state"] == "unreadable" and "run-0-broken" in jobs[1]["reason"]
    assert stop_training(run.path)["state"] == "completed"  # nothing to stop
    assert not run.stop_requested()


def test_trainer_that_dies_without_reporting_is_recorded_as_failed(runs_dir):
    run = start_training(
        CONFIG,
        runs_dir=runs_dir,
        command=[sys.executable, "-c", "import sys; sys.exit(3)"],
        device_key="cpu",
    )
    status = wait_for_state(run, ("failed",), timeout=20)
    wait_until(lambda: "status 3" in (run.read_status_raw().get("reason") or ""))
    assert DeviceLock(lock_path(runs_dir, "cpu")).holder() is None
    wait_until(lambda: gone(status["pid"]))


def test_invalid_run_ids(runs_dir, fake):
    for bad in ("../escape", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="plain folder name"):
            start(runs_dir, fake, run_id=bad)
    run = start(runs_dir, fake, run_id="run-x")
    wait_for_state(run, ("running",), timeout=20)
    with pytest.raises(ConfigError, match="already exists"):
        start(runs_dir, fake, run_id="run-x")
    stop_training(run.path, wait=True, timeout=20)
    with pytest.raises(RunError, match="not a run folder"):
        resume_training(runs_dir / "missing", command=fake)


def test_a_missing_or_empty_dataset_is_refused_before_anything_starts(runs_dir, fake, tmp_path):
    from segcore.errors import DatasetError
    from tests.conftest import make_pairs_dataset

    (tmp_path / "empty").mkdir()
    evalonly = make_pairs_dataset(tmp_path / "evalonly", n=2, size=32)
    (evalonly / "split.json").write_text('{"val": ["img_000"], "test": ["img_001"]}')
    for name, message in [
        ("missing", "missing: dataset folder not found"),
        ("empty", "empty: no supported dataset layout found"),
        ("evalonly", "evalonly: no training samples found"),
    ]:
        with pytest.raises(DatasetError, match=message):
            start_training(
                {"epochs": 1, "data": str(tmp_path / name)},
                runs_dir=runs_dir,
                run_id=f"run-{name}",
                command=fake,
                device_key="cpu",
            )
    assert list_runs(runs_dir) == [] and running_job(runs_dir) is None
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # not even a lock file
    with pytest.raises(ConfigError, match=r"TrainConfig\.epochs must be an integer"):
        start_training({"data": str(evalonly), "epochs": "many"}, runs_dir=runs_dir, command=fake)
    # a dataset with training images starts (the synthetic set is not opened here)
    make_pairs_dataset(tmp_path / "good", n=4, size=32)
    run = start_training(
        {"data": str(tmp_path / "good"), "epochs": 1},
        runs_dir=runs_dir,
        command=fake,
        device_key="cpu",
    )
    wait_for_state(run, ("running",), timeout=20)
    assert stop_training(run.path, wait=True, timeout=20)["state"] == "stopped"


def test_default_command_is_the_segcore_cli(tmp_path):
    run = RunDir(tmp_path / "run-a")
    assert train_arguments(run) == [
        "--config",
        str(run.config_path),
        "--run-dir",
        str(run.path),
    ]
    assert train_arguments(run, resume=True) == ["--resume", str(run.path)]


def test_jobs_does_not_import_tensorflow():
    code = (
        "import sys, segcore.training.jobs, segcore.training.locks, segcore.training.devices; "
        "segcore.training.devices.default_lock_key(); "
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'streamlit')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_progress_of_a_status():
    from segcore.training.runs import progress_of

    fraction, text = progress_of(
        {"epoch": 2, "epochs": 10, "batch": 6, "steps_per_epoch": 24, "eta_s": 750}
    )
    assert fraction == pytest.approx(0.225)
    assert text == "epoch 3 of 10, batch 6 of 24, about 12.5 min left"
    assert progress_of({"epoch": 10, "epochs": 10})[0] == 1.0
    assert progress_of({})[0] == 0.0
