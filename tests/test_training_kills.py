"""Fault injection: a real ``kill -9`` of a training process in the middle of each write that
keeps the run's state (the checkpoint, metrics.csv, status.json, the final bundle), then a
resume that finishes the run.

The child is ``python -m segcore train`` started through a small wrapper (:data:`CHILD`) that
patches one writer: the chosen write puts half its bytes in the temporary file, touches a
marker file and sleeps. The test waits for the marker and sends SIGKILL, so the process dies
with the half-written temporary file on disk, exactly where a real kill would leave it.
The library is not changed for this.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from segcore.data.synthetic_set import generate_dataset
from segcore.training.checkpoints import STALE_STATUS_TMP_SECONDS
from segcore.training.runs import RunDir
from tests.conftest import REPO, tiny_config

pytestmark = pytest.mark.slow

CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path

spec = json.loads(os.environ["SEGCORE_TEST_KILL_AT"])
marker, calls = Path(spec["marker"]), [0]


def matches(path, data=None):
    path = Path(path)
    if path.name != spec["name"]:
        return False
    calls[0] += 1
    return eval(spec["when"], {"json": json}, {"path": path, "data": data, "n": calls[0]})


def pause(tmp):
    staged = marker.with_name(marker.name + ".part")  # the marker appears whole, never empty
    staged.write_text(str(tmp))
    os.replace(staged, marker)
    while True:
        time.sleep(60)  # SIGKILL ends it


if spec["writer"] == "keras_save":
    import keras

    real_save = keras.Model.save

    def save(model, filepath, *args, **kwargs):
        real_save(model, filepath, *args, **kwargs)
        if matches(filepath):
            os.truncate(filepath, os.path.getsize(filepath) // 2)
            pause(filepath)

    keras.Model.save = save
else:
    import segcore.atomic

    real_write = segcore.atomic.write_bytes_atomic

    def write_bytes_atomic(path, data):
        if not matches(path, data):
            return real_write(path, data)
        path = Path(path)  # as the real one does, but stops halfway
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        pause(tmp)

    segcore.atomic.write_bytes_atomic = write_bytes_atomic

from segcore.cli import main

raise SystemExit(main(sys.argv[1:]))
"""

# phase: (the writer patched, the file's name, when (Python: path, data, n = matching call))
PHASES = {
    "checkpoint": ("keras_save", ".epoch-002.tmp.keras", "True"),
    "metrics": ("atomic", "metrics.csv", "n == 2"),
    "status": ("atomic", "status.json", "json.loads(data).get('epoch') == 1"),
    "bundle": ("keras_save", "model.keras", "path.parent.name.startswith('.bundle.')"),
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "synth", count=10, size=64, seed=1)


def child_env(runs_dir: Path, **extra) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SEGCORE_RUNS_DIR": str(runs_dir), **extra}


def partial_files(run: RunDir) -> list[str]:
    """Temporary files, staging folders and the reserve anywhere in the run folder."""
    return sorted(
        str(p.relative_to(run.path))
        for p in run.path.rglob("*")
        if ".tmp" in p.name or p.name == ".reserve"
    )


def csv_epochs(path: Path) -> list[int]:
    with path.open(newline="") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


def assert_complete_zip(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None, path


def kill_inside(phase: str, run: RunDir, config: Path, tmp_path: Path) -> Path:
    """Starts a training that pauses in ``phase``'s write, kills it there with SIGKILL and
    returns the half-written temporary file."""
    writer, name, when = PHASES[phase]
    marker = tmp_path / "paused"
    spec = {"marker": str(marker), "writer": writer, "name": name, "when": when}
    env = child_env(run.path.parent, SEGCORE_TEST_KILL_AT=json.dumps(spec))
    args = [sys.executable, "-c", CHILD, "train", "--config", str(config)]
    with (tmp_path / "child.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():
                if proc.poll() is not None:
                    text = (tmp_path / "child.log").read_text()[-3000:]
                    pytest.fail(f"training ended (rc {proc.returncode}) before {phase}:\n{text}")
                if time.monotonic() > deadline:
                    pytest.fail(f"training never reached {phase}")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Path(marker.read_text())


@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_9_inside_each_write_then_resume_completes(phase, tiny_data, tmp_path):
    run = RunDir(tmp_path / "runs" / phase)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(tiny_data, run.path, preview_tiles=0).to_dict()))
    tmp = kill_inside(phase, run, config, tmp_path)

    # The kill left the half-written temporary file, and only it: every visible file is whole.
    assert tmp.is_file() and run.path in tmp.parents, tmp
    leftover = tmp.parent if phase == "bundle" else tmp
    assert str(leftover.relative_to(run.path)) in partial_files(run)
    status = run.read_status()
    assert status["state"] == "failed" and "killed" in status["reason"], status
    raw = run.read_status_raw()  # parses: the old status.json, whole
    state = json.loads((run.checkpoints_dir / "state.json").read_text())
    assert_complete_zip(run.checkpoints_dir / state["checkpoint"])
    assert not run.bundle_dir.exists()
    before = run.read_metrics()
    if phase == "checkpoint":  # in epoch 2's checkpoint: epoch 1's stays the one to resume
        assert state["epoch"] == 1 and csv_epochs(run.metrics_path) == [1]
        assert not (run.checkpoints_dir / "epoch-002.keras").exists()
    elif phase == "metrics":  # epoch 2's checkpoint is written, not yet pointed at
        assert state["epoch"] == 1 and csv_epochs(run.metrics_path) == [1]
        assert_complete_zip(run.checkpoints_dir / "epoch-002.keras")
    elif phase == "status":  # after epoch 1's checkpoint, the status still says epoch 0
        assert state["epoch"] == 1 and raw["epoch"] == 0
        assert csv_epochs(run.metrics_path) == [1]
    else:  # training done; in the bundle's model file
        assert state["epoch"] == 2 and csv_epochs(run.metrics_path) == [1, 2]
        assert raw["phase"] == "evaluating validation images"

    if phase == "status":
        # status.json is written by other processes too, so the resume removes its temporary
        # files only once they are older than any write in progress could be: age this one
        stale = time.time() - 2 * STALE_STATUS_TMP_SECONDS
        os.utime(leftover, (stale, stale))
    args = [sys.executable, "-m", "segcore", "train", "--resume", str(run.path)]
    env = child_env(run.path.parent)
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]

    status = run.read_status()
    assert status["state"] == "completed" and status["epoch"] == 2, status
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == before[0]  # the history before the kill is kept as it was
    card = json.loads((run.bundle_dir / "card.json").read_text())  # a whole bundle (no TF here)
    assert card["training"]["epochs_completed"] == 2 and 0.0 <= card["threshold"] <= 1.0
    model_file = run.bundle_dir / "model.keras"
    assert_complete_zip(model_file)
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == card["model_sha256"]
    state = json.loads((run.checkpoints_dir / "state.json").read_text())
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == sorted(
        ["best.keras", "state.json", state["checkpoint"]]
    )
    assert partial_files(run) == []
