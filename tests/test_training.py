"""Training runs on tiny configurations: files, resume after kill -9 or a full disk, stop,
failure, lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segcore.bundles.loading import load_bundle
from segcore.data.synthetic_set import generate_dataset
from segcore.errors import ConfigError
from segcore.evaluation.evaluate import evaluate
from segcore.training.checkpoints import STALE_STATUS_TMP_SECONDS
from segcore.training.config import TrainConfig
from segcore.training.runs import RunDir, wait_for_state
from segcore.training.trainer import train
from tests.conftest import REPO, TINY_MODEL, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("data") / "synth", count=10, size=64, seed=1)
    (root / "dataset.json").write_text('{"pixel_size": 0.5}')  # recorded in the bundle's card
    return root


def cli(*args, runs_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SEGCORE_RUNS_DIR": str(runs_dir)}
    return [sys.executable, "-m", "segcore", *args], env


def test_config_validation_and_file(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig(image_size=100)
    with pytest.raises(ConfigError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ConfigError, match="equalize"):
        TrainConfig(preprocess={"equalize": "sideways"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "loss": "bce+dice", "backbone_weights": "none"}))
    config = TrainConfig.from_file(path)
    assert config.epochs == 3 and config.loss == "bce+dice" and config.backbone_weights is None
    path.write_text("{oops")
    with pytest.raises(ConfigError, match=r"c\.json: TrainConfig: malformed JSON"):
        TrainConfig.from_file(path)


def test_a_run_writes_every_file_and_a_loadable_bundle(tiny_data, tmp_path):
    run = train(tiny_config(tiny_data, tmp_path / "runs" / "r1"), runs_dir=tmp_path / "runs")
    status = run.read_status()
    assert status["state"] == "completed", status
    assert status["epoch"] == 2 and status["pid"] == os.getpid()
    assert status["device"] and status["ended_at"]
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "dice_coef", "jaccard_coef", "accuracy", "val_loss", "val_pooled_dice"):
        assert key in rows[0]
    assert run.preview_path(1).is_file() and run.preview_path(2).is_file()
    assert json.loads(run.config_path.read_text())["epochs"] == 2
    state = json.loads((run.checkpoints_dir / "state.json").read_text())
    assert state["epoch"] == 2 and (run.checkpoints_dir / state["checkpoint"]).is_file()
    assert (run.checkpoints_dir / "best.keras").is_file()
    assert len(list(run.checkpoints_dir.glob("epoch-*.keras"))) == 1  # old ones removed
    bundle = load_bundle(run.bundle_dir)
    assert 0.0 <= bundle.threshold <= 1.0
    validation = bundle.card.figures("validation")
    assert 0.0 <= validation.pooled["dice"] <= 1.0 and validation.threshold == bundle.threshold
    assert bundle.card.training["epochs_completed"] == 2
    assert bundle.card.pixel_size == 0.5  # from the dataset's dataset.json
    out = bundle.model.predict(np.zeros((1, 64, 96, 3), np.float32), verbose=0)
    assert out.shape == (1, 64, 96, 1)
    assert run.log_path.read_text().count("epoch 2/2") == 1


def test_kill_9_then_resume_continues_the_history(tiny_data, tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    config = tiny_config(tiny_data, run_dir, epochs=3, crops_per_epoch=8)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    args, env = cli("train", "--config", str(config_file), runs_dir=run_dir.parent)
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run = RunDir(run_dir)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if run.read_metrics():
            break
        assert proc.poll() is None, "training ended before the first epoch"
        time.sleep(0.2)
    else:
        pytest.fail("no epoch completed in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = run.read_metrics()
    status = run.read_status()
    assert status["state"] == "failed" and "killed" in status["reason"]
    # What a kill in the middle of each write leaves (the kill above may have left some too).
    for path in (
        run.checkpoints_dir / ".epoch-009.tmp.keras",  # saving the checkpoint
        run.path / ".metrics.csv.x1.tmp",  # metrics.csv
        run.checkpoints_dir / ".state.json.x2.tmp",  # state.json
        run.checkpoints_dir / "epoch-009.keras",  # after the checkpoint, before state.json
        run.path / ".bundle.x3.tmp" / "model.keras",  # the bundle
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK\x03\x04 partial")
    # A kill inside a status write leaves a fresh status temporary, which the resume keeps
    # until it is older than any write in progress could be (other processes write status
    # too): age any such leftover, as the minutes before a real resume would.
    stale = time.time() - 2 * STALE_STATUS_TMP_SECONDS
    for leftover in run.path.glob(".status.json.*.tmp"):
        os.utime(leftover, (stale, stale))
    args, env = cli("train", "--resume", str(run_dir), runs_dir=run_dir.parent)
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0] == before[0]  # the history before the kill is kept as it was
    assert run.read_status()["state"] == "completed"
    assert partial_files(run) == []
    assert not (run.checkpoints_dir / "epoch-009.keras").exists()


def partial_files(run: RunDir) -> list[str]:
    """Temporary files, staging folders and the reserve anywhere in the run folder."""
    return sorted(
        str(p.relative_to(run.path))
        for p in run.path.rglob("*")
        if ".tmp" in p.name or p.name == ".reserve"
    )


class FullDisk:
    """Fault injection: once a write in the run folder matches ``when(path)``, the disk is full:
    every later write there (checked at ``os.fsync`` and Keras' ``Model.save``, which leaves
    half a file) fails with ENOSPC, until the trainer deletes ``.reserve`` to make room."""

    def __init__(self, run: RunDir, when, monkeypatch):
        import keras

        self.run, self.when, self.full = run, when, False
        real_fsync, real_save = os.fsync, keras.Model.save

        def fsync(fd):
            self.check(Path(os.readlink(f"/proc/self/fd/{fd}")))
            return real_fsync(fd)

        def save(model, filepath, *args, **kwargs):
            try:
                self.check(Path(filepath))
            except OSError:
                Path(filepath).write_bytes(b"PK\x03\x04 half a model")
                raise
            return real_save(model, filepath, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(keras.Model, "save", save)

    def check(self, path: Path) -> None:
        if self.run.path not in path.parents:
            return
        self.full = self.full or bool(self.when(path))
        if self.full and self.run.reserve_path.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_in_each_phase_is_recorded_and_resumable(tiny_data, tmp_path, monkeypatch):
    from segcore.training.checkpoints import checkpoint_state
    from segcore.training.runs import RunError

    runs = tmp_path / "runs"
    run = RunDir(runs / "full")

    def epoch_is(n):
        return lambda: (checkpoint_state(run) or {}).get("epoch") == n

    phases = [  # (the file whose write fills the disk, when, the epoch to resume from)
        (".epoch-002.tmp.keras", lambda p: p.name.startswith(".epoch-002"), 1),
        (".metrics.csv.", lambda p: p.name.startswith(".metrics.csv.") and epoch_is(1)(), 1),
        (".status.json.", lambda p: p.name.startswith(".status.json.") and epoch_is(2)(), 2),
        ("model.keras", lambda p: p.name == "model.keras", 2),  # the bundle's
    ]
    for i, (phase, when, epoch) in enumerate(phases):
        FullDisk(run, when, monkeypatch)
        with pytest.raises(RunError, match=f"{run.path}: disk full .* --resume {run.path}"):
            if i == 0:
                train(tiny_config(tiny_data, run.path), runs_dir=runs)
            else:
                train(run_dir=run.path, resume=True, runs_dir=runs)
        monkeypatch.undo()  # space is freed
        status = run.read_status()
        assert status["state"] == "failed", phase
        assert status["reason"].startswith("disk full: ") and "--resume" in status["hint"], phase
        assert phase in status["reason"], status["reason"]
        assert partial_files(run) == [], phase
        state = checkpoint_state(run)
        assert state["epoch"] == epoch, phase
        assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == sorted(
            ["best.keras", "state.json", state["checkpoint"]]
        ), phase
        assert not run.bundle_dir.exists(), phase
    resumed = train(run_dir=run.path, resume=True, runs_dir=runs)
    assert resumed.read_status()["state"] == "completed"
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert load_bundle(run.bundle_dir).card.training["epochs_completed"] == 2
    assert partial_files(run) == []


def test_sigterm_stops_after_the_batch_and_resume_finishes(tiny_data, tmp_path):
    run_dir = tmp_path / "runs" / "stopped"
    config = tiny_config(tiny_data, run_dir, epochs=2, crops_per_epoch=400, batch_size=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    args, env = cli("train", "--config", str(config_file), runs_dir=run_dir.parent)
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run = RunDir(run_dir)
    deadline = time.monotonic() + 240
    while (run.read_status_raw().get("batch") or 0) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    status = run.read_status()
    assert status["state"] == "stopped" and "batch" in status["reason"]
    state = json.loads((run.checkpoints_dir / "state.json").read_text())
    assert state["epoch"] == 0 and state["stopped_at_batch"] >= 2
    # Resume with a shorter epoch, through a stop request file this time.
    cfg = json.loads(run.config_path.read_text())
    cfg["crops_per_epoch"] = 4
    run.write_config(cfg)
    resumed = train(run_dir=run_dir, resume=True, runs_dir=tmp_path / "runs")
    assert resumed.read_status()["state"] == "completed"
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]


def test_stop_request_file(tiny_data, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "req"
    run = RunDir(run_dir)
    import segcore.training.trainer as training

    original = training.make_callback

    def make_callback(*args, **kwargs):
        callback = original(*args, **kwargs)
        on_batch = callback.on_train_batch_end

        def request_then_continue(batch, logs=None):
            if batch == 0:
                run.request_stop()
            on_batch(batch, logs)

        callback.on_train_batch_end = request_then_continue
        return callback

    monkeypatch.setattr(training, "make_callback", make_callback)
    train(tiny_config(tiny_data, run_dir, crops_per_epoch=8), runs_dir=tmp_path / "runs")
    status = run.read_status()
    assert status["state"] == "stopped"
    assert "after batch 1" in status["reason"]


def test_an_exception_marks_the_run_failed(tiny_data, tmp_path, monkeypatch):
    import segcore.training.trainer as training

    def boom(run):  # inside the run, after its folder exists
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(training, "_choose_devices", boom)
    run_dir = tmp_path / "runs" / "boom"
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(tiny_config(tiny_data, run_dir), runs_dir=tmp_path / "runs")
    status = RunDir(run_dir).read_status()
    assert status["state"] == "failed"
    assert "disk on fire" in status["reason"] and "Traceback" in status["traceback"]
    assert status["ended_at"]


def test_out_of_memory_gets_a_hint():
    from segcore.training.finish import hint_for

    class ResourceExhaustedError(Exception):
        pass

    assert "batch-size" in hint_for(ResourceExhaustedError("OOM when allocating tensor"))


def test_a_second_training_is_refused(tiny_data, tmp_path):
    from segcore.training.locks import DeviceLock, TrainingBusyError

    runs = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = DeviceLock(runs / ".lock-cpu.json")
        lock.acquire("the-running-one", holder.pid)
        with pytest.raises(TrainingBusyError, match="the-running-one"):
            train(tiny_config(tiny_data, runs / "second"), runs_dir=runs)
        assert not (runs / "second").exists()  # a refused run leaves no folder behind
    finally:
        holder.kill()
        holder.wait()


def test_resume_without_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    from segcore.training.trainer import prepare_run

    run = prepare_run(tiny_config(tiny_data, tmp_path / "runs" / "fresh"), tmp_path / "runs")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(run_dir=run.path, resume=True, runs_dir=tmp_path / "runs")
    wait_for_state(run, ("failed",), timeout=5)


def test_a_dataset_without_train_split_is_refused_by_name(tmp_path):
    from segcore.errors import DatasetError
    from tests.conftest import make_pairs_dataset

    make_pairs_dataset(tmp_path / "evalonly" / "test", n=3)
    config = tiny_config(tmp_path / "evalonly", tmp_path / "runs" / "r")
    with pytest.raises(DatasetError, match=r"evalonly: no training samples"):
        train(config, runs_dir=tmp_path / "runs")


def test_background_job_with_the_real_trainer(tiny_data, tmp_path):
    from segcore.training import jobs
    from segcore.training.locks import TrainingBusyError

    runs = tmp_path / "runs"
    config = tiny_config(tiny_data, None, crops_per_epoch=400).to_dict()
    run = jobs.start_training(config, runs_dir=runs, run_id="bg-1")
    try:
        status = wait_for_state(run, ("running",), timeout=120)
        assert status["pid"] != os.getpid()
        with pytest.raises(TrainingBusyError, match="bg-1"):
            jobs.start_training(config, runs_dir=runs, run_id="bg-2")
        assert jobs.running_job(runs).run_id == "bg-1"
        final = jobs.stop_training(run.path, wait=True, timeout=120)
        assert final["state"] == "stopped"
    finally:
        status = run.read_status_raw()
        if status.get("state") in ("queued", "running"):
            os.kill(status["pid"], signal.SIGKILL)
    assert jobs.running_job(runs) is None
    assert not (runs / "bg-2").exists()


def test_init_from_a_bundle_starts_from_its_weights(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    first = train(tiny_config(tiny_data, runs / "first", epochs=1), runs_dir=runs)
    source = load_bundle(first.bundle_dir).model
    # lr so small that one epoch cannot move the weights: the result must be the source's.
    tuned = train(
        tiny_config(tiny_data, runs / "tuned", epochs=1, lr=1e-12, init_from=str(first.bundle_dir)),
        runs_dir=runs,
    )
    model = load_bundle(tuned.bundle_dir).model
    for a, b in zip(source.trainable_weights, model.trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    card = load_bundle(tuned.bundle_dir).card
    assert card.training["init_from"] == str(first.bundle_dir)
    source_card = load_bundle(first.bundle_dir).card
    assert card.training["init_from_card"]["model_sha256"] == source_card.model_sha256
    # Before and after on the run's validation images: the starting model's figures are those
    # of evaluating it there at its own threshold, which the test recomputes independently.
    comparison = card.comparison
    assert comparison == RunDir(tuned.path).read_status()["comparison"]
    assert comparison["before"]["model"] == source_card.name
    assert comparison["after"]["threshold"] == pytest.approx(card.threshold, abs=1e-4)
    splits = tiny_config(tiny_data, runs / "unused").open_folder()  # the start's carve
    assert comparison["images"] == len(splits.val) > 0
    source_bundle = load_bundle(first.bundle_dir)
    expected = evaluate(
        source_bundle.model,
        splits.val,
        source_bundle.preprocess,
        threshold=source_bundle.threshold,
        tile_size=64,
        overlap=16,
        instances=source_bundle.instances,
    )
    assert comparison["before"]["dice"] == pytest.approx(expected.pooled["dice"], abs=1e-4)
    assert comparison["before"]["pq"] == pytest.approx(expected.instances["pq"], abs=1e-4)
    assert comparison["gain"]["dice"] == pytest.approx(
        comparison["after"]["dice"] - comparison["before"]["dice"], abs=2e-4
    )
    assert card.instances == source_card.instances  # the nuclei settings carry over
    # Without init_from the same run starts elsewhere (from its seed's initial weights).
    fresh = train(tiny_config(tiny_data, runs / "fresh", epochs=1, lr=1e-12), runs_dir=runs)
    other = load_bundle(fresh.bundle_dir).model
    assert not np.allclose(
        np.asarray(other.trainable_weights[-1]), np.asarray(model.trainable_weights[-1])
    )


def test_freeze_batchnorm_replay_and_the_start_threshold_fine_tune_around_the_start(
    tiny_data, tmp_path
):
    import keras

    runs = tmp_path / "runs"
    first = train(tiny_config(tiny_data, runs / "first", epochs=1), runs_dir=runs)
    tuned = train(
        tiny_config(
            tiny_data,
            runs / "tuned",
            epochs=2,
            lr=1e-2,
            freeze_batchnorm=True,
            init_from=str(first.bundle_dir),
            replay_data="init_from",  # the first run's data, from its card
            replay_fraction=0.5,
            threshold_rule="start",
            final_weights="last",
        ),
        runs_dir=runs,
    )

    def norms(model):
        return {
            layer.path: [np.asarray(w) for w in layer.weights]
            for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)
        }

    source, model = load_bundle(first.bundle_dir).model, load_bundle(tuned.bundle_dir).model
    start, end = norms(source), norms(model)
    assert start.keys() == end.keys() and start
    for path, weights in start.items():  # statistics, scale and offset as they started
        for before, after in zip(weights, end[path], strict=True):
            np.testing.assert_array_equal(before, after, err_msg=path)
    assert not np.allclose(  # while the convolutions did train
        np.asarray(source.trainable_weights[0]), np.asarray(model.trainable_weights[0])
    )
    assert TrainConfig.from_dict(RunDir(tuned.path).read_config()).freeze_batchnorm
    last = keras.saving.load_model(RunDir(tuned.path).checkpoints_dir / "epoch-002.keras")
    for a, b in zip(last.weights, model.weights, strict=True):  # the last epoch's, not the best
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    card = load_bundle(tuned.bundle_dir).card
    assert card.training["kept_epoch"] == 2 and card.training["final_weights"] == "last"
    start_threshold = load_bundle(first.bundle_dir).card.threshold
    assert card.threshold == pytest.approx(round(start_threshold, 2))  # kept, not chosen again
    assert card.comparison["after"]["threshold"] == pytest.approx(card.threshold)
    assert card.metrics["validation"].threshold == pytest.approx(card.threshold)
    replayed = card.training["replay"]
    assert replayed["data"] == str(tiny_data) and replayed["fraction"] == 0.5
    assert replayed["images"] == len(tiny_config(tiny_data, None).open_folder().train)


def test_prepare_runtime_leaves_the_bundle_ready_for_the_app(tiny_data, tmp_path, monkeypatch):
    from segcore.bundles.runtime_cache import gate_record, open_cached_runtime
    from segcore.inference.runtimes import selection

    runs = tmp_path / "runs"
    if not selection.auto_candidates():
        pytest.skip("OpenVINO is not installed")
    run = train(
        tiny_config(tiny_data, runs / "ready", epochs=1, prepare_runtime=True), runs_dir=runs
    )
    status = run.read_status()
    assert status["state"] == "completed" and status["runtime"]["auto"] in selection.RUNTIMES
    bundle = load_bundle(run.bundle_dir)
    record = gate_record(run.bundle_dir, bundle.card)
    assert record is not None and selection.choose(record) == status["runtime"]["auto"]
    if status["runtime"]["auto"] != "keras":  # what the app opens first: no conversion now
        assert open_cached_runtime(bundle).name == status["runtime"]["auto"]

    # A conversion that fails does not fail the run: the bundle stands, the status says why.
    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(selection.RuntimeCache, "run_gate", broken)
    run = train(
        tiny_config(tiny_data, runs / "still", epochs=1, prepare_runtime=True), runs_dir=runs
    )
    status = run.read_status()
    assert status["state"] == "completed" and (run.bundle_dir / "model.keras").is_file()
    assert status["runtime"] == {"skipped": "RuntimeError: converter crashed"}


def test_init_from_another_architecture_fails_clearly(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    first = train(tiny_config(tiny_data, runs / "first", epochs=1), runs_dir=runs)
    wider = {**TINY_MODEL, "decoder_filters": 16}
    # Refused before a run folder is made, naming the bundle and the field that differs.
    with pytest.raises(ConfigError, match=r"another architecture.*decoder_filters"):
        train(
            tiny_config(tiny_data, runs / "x", model=wider, init_from=str(first.bundle_dir)),
            runs_dir=runs,
        )
    assert not (runs / "x").exists()
    with pytest.raises(ConfigError, match=r"trained on 64² tiles but this run's image size is 128"):
        train(
            tiny_config(tiny_data, runs / "y", image_size=128, init_from=str(first.bundle_dir)),
            runs_dir=runs,
        )
    assert not (runs / "y").exists()
