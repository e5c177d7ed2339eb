"""The Train page: recipes (``segcore.training.recipes``), the time estimate
(``segcore.training.estimates``), the page's logic (``appkit.training``) and the page itself
through AppTest, on fake runs written into a temporary runs folder (never the repository's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from appkit import training, training_runs
from segcore.analysis import catalog
from segcore.bundles.store import BUNDLE_FILES
from segcore.data import roots, samples
from segcore.errors import ConfigError, DatasetError
from segcore.paths import REPO_ROOT
from segcore.training import devices, estimates, jobs, recipes
from segcore.training.config import TrainConfig
from segcore.training.locks import lock_for
from segcore.training.runs import RunDir, process_start_time
from tests.conftest import REPO, make_pairs_dataset

SHARED = REPO_ROOT.parent / "shared" / "data"
HERE = "CPU" if devices.default_lock_key() == "cpu" else "GPU:0"  # this machine's device
STOP_REASON = "stop requested; stopped in epoch 1 after batch 1"


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    """A runs folder of the test's own (``SEGCORE_RUNS_DIR``)."""
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(roots.DATA_ROOTS_ENV, raising=False)
    (tmp_path / "roots.toml").write_text("[roots]\n")  # no data roots besides the built-in
    monkeypatch.setenv(roots.DATA_ROOTS_FILE_ENV, str(tmp_path / "roots.toml"))
    return folder


def fake_run(runs: Path, run_id: str, *, config=None, metrics=(), **status) -> RunDir:
    """A run folder as the trainer leaves it: config, status and metrics (no process)."""
    run = RunDir(runs / run_id)
    run.create((config or TrainConfig()).to_dict())
    run.write_status(**{"epoch": 0, "epochs": 8, "device": HERE, **status})
    if metrics:
        run.write_metrics(list(metrics))
    return run


def add_bundle(run: RunDir) -> None:
    run.bundle_dir.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        (run.bundle_dir / name).write_text("{}")


def completed(runs: Path, run_id: str, *, epoch_time=60.0, steps=75, **config) -> RunDir:
    """A completed run of 2 epochs of ``epoch_time`` s, 100 s outside them."""
    cfg = TrainConfig(**{"epochs": 2, "crops_per_epoch": 600, **config})
    rows = [{"epoch": e, "val_pooled_dice": 0.351, "epoch_time_s": epoch_time} for e in (1, 2)]
    run = fake_run(
        runs,
        run_id,
        config=cfg,
        metrics=rows,
        state="completed",
        epoch=2,
        epochs=2,
        steps_per_epoch=steps,
        started_at="2026-12-06T10:00:00+00:00",
        ended_at=f"2026-12-06T10:{int(2 * epoch_time + 100) // 60:02d}:"
        f"{int(2 * epoch_time + 100) % 60:02d}+00:00",
        val_dice=0.453,
        threshold=0.65,
        best={"epoch": 2, "val_dice": 0.351},
    )
    add_bundle(run)
    return run


# --- recipes ----------------------------------------------------------------------------------
def test_the_default_recipe_reads_with_paths_from_the_repository_root():
    assert recipes.list_recipes()[0] == recipes.DEFAULT_RECIPE
    config = recipes.read_recipe("default")
    assert config.init_from == "default" and config.loss == "bce+dice"
    assert config.augmentation["raw_crops"] and config.augmentation["hed_probability"] == 0.85
    assert config.data == str(SHARED / "monuseg")
    assert config.validation_sources == [
        str(SHARED / name) for name in ("tnbc", "cryonuseg", "pannuke-breast", "consep")
    ]
    # the same whatever the working directory
    assert recipes.read_recipe(str(REPO / "scripts" / "recipes" / "default.json")) == config


def test_recipes_refuse_odd_names_and_name_the_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="plain name"):
        recipes.recipe_path("../default")
    with pytest.raises(ConfigError, match="recipes there: default"):
        recipes.read_recipe("nope")
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "a.json").write_text('{"epochs": 2, "colour": "red"}')
    (tmp_path / ".hidden.json").write_text("{}")
    assert recipes.list_recipes(tmp_path) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"b\.json: not a readable recipe"):
        recipes.read_recipe("b", tmp_path)
    with pytest.raises(ConfigError, match=r"a\.json: unknown TrainConfig keys"):
        recipes.read_recipe("a", tmp_path)
    (tmp_path / "c.json").write_text('{"data": "synthetic", "validation_sources": ["/x/y"]}')
    config = recipes.read_recipe("c", tmp_path)
    assert config.data == "synthetic" and config.validation_sources == ["/x/y"]


# --- estimates --------------------------------------------------------------------------------
def test_the_estimate_uses_the_newest_completed_run_on_this_device(runs):
    assert estimates.measured_speed(runs, device_key="cpu") is None
    if HERE != "CPU":
        pytest.skip("the fake runs are written for a CPU machine")
    assert (
        "unknown until a training has completed"
        in estimates.estimate(TrainConfig(), None, 100).text
    )
    completed(runs, "run-a", epoch_time=60.0)  # 600 crops in 60 s: 0.1 s per crop
    fake_run(runs, "run-b", state="stopped", device="CPU")  # not completed: not measured
    gpu = completed(runs, "run-c", epoch_time=6.0)
    gpu.write_status(device="GPU:0 NVIDIA H100")  # another device
    speed = estimates.measured_speed(runs, device_key="cpu")
    assert speed.run_id == "run-a" and speed.seconds_per_crop == pytest.approx(0.1)
    assert speed.overhead_per_epoch_s == pytest.approx(50.0)
    config = TrainConfig(epochs=10, crops_per_epoch=300, image_size=512)
    result = estimates.estimate(config, speed, None)
    # 10 epochs × 300 crops × 0.1 s × (512/256)² + 10 × 50 s outside the epochs
    assert result.seconds == pytest.approx(10 * 300 * 0.1 * 4 + 500)
    assert result.text.startswith("About 28 min on this machine (10 epochs of 300 crops")
    assert "run-a" in result.text
    assert "give the crops per epoch" in estimates.estimate(TrainConfig(), speed, None).text
    assert (
        estimates.format_duration(42) == "42 s" and estimates.format_duration(3600) == "1 h 00 min"
    )


def test_the_estimate_prefers_a_run_with_the_same_crops(runs):
    completed(runs, "run-a", epoch_time=60.0, augmentation={"raw_crops": True})
    completed(runs, "run-b", epoch_time=30.0)
    assert estimates.measured_speed(runs, device_key="cpu", raw_crops=True).run_id == "run-a"
    assert estimates.measured_speed(runs, device_key="cpu", raw_crops=False).run_id == "run-b"
    assert estimates.measured_speed(runs, device_key="cpu").run_id == "run-b"  # the newest


def test_epoch_crops_counts_tiles_from_the_headers(tmp_path):
    from segcore.data.datasets import open_dataset

    folder = make_pairs_dataset(tmp_path / "pairs", n=10, size=100)
    train = open_dataset(folder).train
    assert estimates.epoch_crops(train, 64) == len(train) * 4  # 100² needs 2 × 2 tiles of 64²
    assert estimates.epoch_crops(train, 128) == len(train)
    assert estimates.tiles_per_image((1000, 520), 256) == 4 * 3


# --- the page's logic -------------------------------------------------------------------------
def test_fine_tune_keeps_the_recipe_and_takes_the_dataset_and_epochs():
    values = training.FormValues(data=" data/lab ", epochs=3)
    config = training.build_config(training.FINE_TUNE, values)
    recipe = recipes.read_recipe("default")
    assert config.data == "data/lab" and config.epochs == 3
    assert {**config.to_dict(), "data": recipe.data, "epochs": recipe.epochs} == recipe.to_dict()
    with pytest.raises(ConfigError, match="Give the dataset to fine-tune on"):
        training.build_config(training.FINE_TUNE, training.FormValues(data=" ", epochs=3))
    chosen = training.build_config(
        training.FINE_TUNE, training.FormValues("data/lab", 3, start_from="runs/r1/bundle")
    )
    assert chosen.init_from == "runs/r1/bundle"
    scratch = training.build_config(
        training.FROM_SCRATCH,
        training.FormValues("", 5, 4, 128, 1e-3, 0, "bce", "none", True),
    )
    assert scratch == TrainConfig(epochs=5, batch_size=4, image_size=128)
    with pytest.raises(ConfigError, match="multiple of 16"):
        training.build_config(
            training.FROM_SCRATCH, training.FormValues("", 5, 4, 50, 1e-3, 0, "bce", "none", True)
        )


def test_validation_sources_outside_the_roots_or_missing_are_left_out_with_a_note(
    tmp_path, monkeypatch
):
    root = tmp_path / "lab"
    for name in ("tnbc", "consep", "mine"):
        (root / name).mkdir(parents=True)
    (tmp_path / "elsewhere" / "cryonuseg").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "other" / "tnbc").mkdir()
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={root}")
    config = TrainConfig(
        data="lab/mine",
        validation_sources=[
            str(root / "tnbc"),
            str(root / "consep"),
            str(tmp_path / "elsewhere" / "cryonuseg"),
            str(root / "gone"),
            str(root / "mine"),
            str(root / "other" / "tnbc"),
        ],
    )
    kept, notes = training.kept_sources(config)
    assert kept.validation_sources == [str(root / "tnbc"), str(root / "consep")]
    text = "\n".join(notes)
    assert "cryonuseg — not inside the app's data roots (samples/, data/ or lab/)" in text
    assert "gone — missing" in text
    assert "mine — the dataset trained on" in text
    assert "tnbc — the folder name of the dataset or of another source" in text
    assert "No validation source is left" not in text
    _, notes = training.kept_sources(
        TrainConfig(validation_sources=[str(tmp_path / "elsewhere" / "cryonuseg")])
    )
    assert "No validation source is left" in notes[-1]


def test_a_stopped_run_reads_as_one_fact():
    status = {
        "state": "stopped",
        "epoch": 0,
        "epochs": 8,
        "steps_per_epoch": 75,
        "reason": STOP_REASON,
    }
    assert training_runs.stopped_text(status) == (
        "Stopped on request in epoch 1 of 8, after batch 1 of 75; no epoch completed yet."
    )
    status.update(epoch=3, reason="stop requested; stopped in epoch 4 after batch 12")
    assert training_runs.stopped_text(status) == (
        "Stopped on request in epoch 4 of 8, after batch 12 of 75; 3 epochs completed."
    )
    assert training_runs.stopped_text(
        {"epoch": 0, "epochs": 8, "reason": "stopped on request"}
    ) == ("Stopped on request; no epoch completed yet.")
    kind, text = training_runs.outcome({**status, "hint": "resume with: python -m segcore train"})
    assert kind == "warning" and "after epoch" not in text
    assert text.endswith("\n\nResume with: python -m segcore train")


def test_one_validation_dice_per_run_and_other_figures_named_apart():
    status = {"state": "completed", "val_dice": 0.4531, "threshold": 0.65}
    kind, banner = training_runs.outcome(status)
    figure = training_runs.run_figure({"state": "completed", "status": status})
    assert kind == "success" and figure == "validation Dice 0.453 at threshold 0.65"
    assert figure in banner
    running = {"state": "running", "best": {"epoch": 2, "val_dice": 0.351}}
    assert training_runs.run_figure({"state": "running", "status": running}) == (
        "best tile Dice 0.351 (epoch 2)"
    )
    sources = {"epoch": 1, "val_dice": 0.69, "metric": "val_sources_dice", "threshold": 0.17}
    assert training_runs.run_figure({"state": "running", "status": {"best": sources}}) == (
        "best sources Dice 0.690 (epoch 1)"
    )
    assert training_runs.run_figure({"state": "queued", "status": {}}) == "—"
    rows, keys = training_runs.chart_rows(
        [{"epoch": 1, "loss": 0.5, "val_pooled_dice": 0.351, "val_sources_dice": 0.69}], 256
    )
    assert rows[0]["val tile Dice (256² tiles at 0.5)"] == 0.351
    assert rows[0]["sources Dice (at their threshold)"] == 0.69 and rows[0]["loss"] == 0.5
    assert not any(key.startswith("validation Dice") for key in keys)


def test_progress_says_when_validation_is_scored():
    status = {"state": "running", "epoch": 2, "epochs": 8, "batch": 75, "steps_per_epoch": 75}
    _, text = training_runs.progress({**status, "phase": "scoring validation sources"})
    assert text == "epoch 3 of 8 trained — now scoring validation sources…"
    final = {**status, "epoch": 8, "batch": 0, "phase": "evaluating validation images"}
    assert training_runs.progress(final) == (
        1.0,
        "all 8 epochs trained — now evaluating validation images…",
    )
    assert training_runs.progress(status)[1].startswith("epoch 3 of 8, batch 75 of 75")


# --- the page ---------------------------------------------------------------------------------
def train_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240).run()
    return at.switch_page("pages/train.py").run()


def test_adapt_is_the_short_recipe_from_the_chosen_bundle_on_your_tiles():
    adapt, default = recipes.read_recipe("adapt"), recipes.read_recipe("default")
    assert adapt.data == "" and adapt.init_from == "default" and not adapt.validation_sources
    # The default's augmentation and preprocessing on a schedule at most two thirds as long, half
    # of whose crops replay the starting model's own tiles; the start's statistics and
    # threshold kept, the last epoch kept, the fast runtime prepared for "Use this model".
    assert adapt.augmentation == default.augmentation and adapt.preprocess == default.preprocess
    assert adapt.epochs * adapt.crops_per_epoch * 3 <= default.epochs * default.crops_per_epoch * 2
    assert (adapt.replay_data, adapt.replay_fraction) == ("init_from", 0.5)
    assert adapt.freeze_batchnorm and adapt.prepare_runtime
    assert (adapt.final_weights, adapt.threshold_rule) == ("last", "start")
    config = training.build_config(
        training.ADAPT, training.FormValues(" data/lab ", 2, start_from="weights/other")
    )
    assert (config.data, config.epochs, config.init_from) == ("data/lab", 2, "weights/other")
    assert {**config.to_dict(), "data": "", "epochs": adapt.epochs, "init_from": "default"} == (
        adapt.to_dict()
    )
    with pytest.raises(ConfigError, match="Give the dataset to fine-tune on"):
        training.build_config(training.ADAPT, training.FormValues(data="", epochs=2))
    # Shown before a dataset is typed: valid, with no dataset; refused when started.
    assert (
        training.build_config(training.ADAPT, training.FormValues("", 2), need_data=False).data
        == ""
    )
    with pytest.raises(DatasetError, match="names no dataset"):
        training.build_config(
            training.ADAPT, training.FormValues("", 2), need_data=False
        ).open_folder()


def test_recipes_come_from_segcore_recipes_dir_when_set(tmp_path, monkeypatch):
    assert recipes.recipes_dir() == recipes.RECIPES_DIR
    (tmp_path / "adapt.json").write_text(json.dumps({"data": "", "epochs": 1, "init_from": "x"}))
    monkeypatch.setenv(recipes.RECIPES_ENV, str(tmp_path))
    assert recipes.list_recipes() == ["adapt"]
    assert recipes.read_recipe("adapt").epochs == 1
    assert training.presets() == [training.ADAPT, training.FROM_SCRATCH]
    with pytest.raises(ConfigError, match=r"no recipe 'default' in .*recipes there: adapt"):
        recipes.read_recipe("default")


def test_comparison_rows_read_the_before_and_after():
    comparison = {
        "split": "val",
        "images": 2,
        "before": {"model": "a", "threshold": 0.46, "dice": 0.78, "pq": 0.55},
        "after": {"model": "b", "threshold": 0.5, "dice": 0.81, "pq": None},
    }
    rows = training_runs.comparison_rows(comparison)
    assert [r[""] for r in rows] == ["before", "after", "change"]
    assert rows[2]["pooled Dice"] == pytest.approx(0.03) and rows[2]["PQ"] is None
    assert "2 val images" in training_runs.comparison_caption(comparison)
    assert training_runs.comparison_rows(None) is None
    assert training_runs.comparison_rows({"before": {}}) is None


def texts(at: AppTest) -> str:
    elements = [*at.markdown, *at.caption, *at.info, *at.warning, *at.success, *at.error]
    return "\n".join(str(e.value) for e in elements)


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_the_page_opens_on_the_adapt_preset():
    at = train_page()
    clean(at)
    assert at.radio(key=training.PRESET_KEY).value == training.ADAPT
    assert [n.label for n in at.number_input] == ["Epochs"]
    assert at.number_input[0].value == recipes.read_recipe("adapt").epochs
    start = at.selectbox(key="train_start_adapt")
    assert start.label == "Start from" and start.value == catalog.active_ref()
    assert start.options[0].startswith("The active model")
    page = texts(at)
    assert "The recipe trains 320 crops of 256² per epoch" in page
    assert "unknown until a training has completed on this machine" in page
    assert "No training has run yet" in page
    at.radio(key=training.PRESET_KEY).set_value(training.FROM_SCRATCH).run()
    clean(at)
    assert [n.label for n in at.number_input][:3] == ["Epochs", "Batch size", "Image size"]
    assert at.text_input[0].value == "synthetic"


@pytest.mark.parametrize("preset", [training.FINE_TUNE, training.ADAPT])
def test_a_recipe_preset_starts_the_recipe_on_the_given_dataset(
    preset, tmp_path, runs, monkeypatch
):
    folder = make_pairs_dataset(tmp_path / "lab" / "pairs", n=8, size=64)
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={tmp_path / 'lab'}")
    if (SHARED / "tnbc").is_dir():
        monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={tmp_path / 'lab'}:shared={SHARED}")
    started = []

    def fake_start(config):
        started.append(config)
        return fake_run(runs, "run-x", state="queued")

    monkeypatch.setattr(jobs, "start_training", fake_start)
    at = train_page()
    at.radio(key=training.PRESET_KEY).set_value(preset).run()
    at.text_input[0].set_value("lab/pairs")
    at.number_input[0].set_value(2)
    at.button[0].click().run()
    clean(at)
    [config] = started
    recipe = recipes.read_recipe(training.RECIPE_PRESETS[preset])
    assert config["data"] == str(folder.resolve()) and config["epochs"] == 2
    assert config["init_from"] == catalog.active_ref()  # the "Start from" box's first choice
    assert config["augmentation"] == recipe.augmentation
    assert config["crops_per_epoch"] == recipe.crops_per_epoch
    expected = [p for p in recipe.validation_sources if Path(p).is_dir()]
    if not (SHARED / "tnbc").is_dir():
        expected = []
    assert config["validation_sources"] == [str(Path(p).resolve()) for p in expected]
    assert at.session_state[training_runs.WATCHED_KEY] == str(runs / "run-x")


def test_the_page_follows_the_run_from_running_to_completed(runs):
    run = fake_run(
        runs,
        "run-a",
        state="running",
        pid=os.getpid(),
        pid_started=process_start_time(os.getpid()),
        epoch=7,
        batch=75,
        steps_per_epoch=75,
        phase="scoring validation sources",
    )
    lock = lock_for(runs, devices.default_lock_key()).acquire("run-a", os.getpid())
    try:
        at = train_page()
        clean(at)
        start = next(b for b in at.button if b.label == "Start training")
        assert start.disabled
        assert "Use this model" not in [b.label for b in at.button]
        assert "**run-a** · running" in texts(at)
        assert "Training run-a is using the device: Start comes back when it ends." in texts(at)
        [bar] = at.get("progress")
        assert "now scoring validation sources" in bar.proto.text
        assert not training_changed(at, runs)
        add_bundle(run)
        run.write_status(state="completed", val_dice=0.4531, threshold=0.65, phase=None)
    finally:
        lock.release("run-a")
    assert training_changed(at, runs)  # what makes the live part rerun the page
    at.run()
    clean(at)
    assert not next(b for b in at.button if b.label == "Start training").disabled
    assert "Use this model" in [b.label for b in at.button]
    page = texts(at)
    assert "**run-a** · completed" in page and "queued" not in page
    assert "is using the device" not in page
    assert "Completed: validation Dice 0.453 at threshold 0.65" in page
    assert page.count("validation Dice 0.453 at threshold 0.65") == 2  # banner and Runs list
    assert not training_changed(at, runs)


def training_changed(at: AppTest, runs: Path) -> bool:
    """What :func:`appkit.training_runs.run_state_changed` says in the page's session."""
    return at.session_state[training_runs.SIGNATURE_KEY] != training_runs.run_signature(runs)


def test_a_new_browser_sees_the_last_run_and_a_stop_reads_as_one_fact(runs):
    completed(runs, "run-a")
    stopped = fake_run(runs, "run-b", state="stopped", steps_per_epoch=75, reason=STOP_REASON)
    stopped.write_status(hint=f"resume with: python -m segcore train --resume {stopped.path}")
    at = train_page()
    clean(at)
    page = texts(at)
    assert "No training has run yet" not in page
    assert "**run-b** — stopped" in page and "The most recent run in the runs folder." in page
    [warning] = [w.value for w in at.warning if "Stopped" in w.value]
    assert warning.startswith(
        "Stopped on request in epoch 1 of 8, after batch 1 of 75; no epoch completed yet."
    )
    assert "runs/run-b" in warning and str(runs) not in warning
    # Watching another run shows that one.
    [watch] = [b for b in at.button if b.key == "watch_run-a"]
    watch.click().run()
    clean(at)
    assert "Completed: validation Dice 0.453" in texts(at)


def test_the_form_estimates_from_the_last_measured_run(runs):
    completed(runs, "run-a", epoch_time=60.0, augmentation={"raw_crops": True})
    at = train_page()
    at.radio(key=training.PRESET_KEY).set_value(training.FINE_TUNE).run()
    clean(at)
    epochs = recipes.read_recipe().epochs
    minutes = round((epochs * 600 * 0.1 + epochs * 50) / 60)
    assert f"About {minutes} min on this machine ({epochs} epochs of 600 crops of 256²" in texts(at)
    at.radio(key=training.PRESET_KEY).set_value(training.FROM_SCRATCH).run()
    clean(at)
    # synthetic, one crop per training tile, 10 epochs, no validation sources
    train = len(samples.synthetic_splits().train)
    assert f"10 epochs of {train} crops of 256²" in texts(at)


def test_a_dataset_without_training_images_is_refused_before_starting(tmp_path, monkeypatch):
    folder = make_pairs_dataset(tmp_path / "lab" / "eval", n=4, size=64)
    (folder / "split.json").write_text(json.dumps({"val": ["img_000"], "test": ["img_001"]}))
    for name in ("img_002", "img_003"):
        for sub in ("images", "masks"):
            (folder / sub / f"{name}.png").unlink()
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={tmp_path / 'lab'}")
    with pytest.raises(DatasetError, match="lab/eval: no training images"):
        training.start(training.FROM_SCRATCH, training.FormValues("lab/eval", 1))
    assert not any(runs_in(os.environ["SEGCORE_RUNS_DIR"]))


def runs_in(folder) -> list:
    return [p for p in Path(folder).iterdir() if not p.name.startswith(".")]


def test_a_device_held_by_a_run_of_another_folder_is_named(runs):
    assert training_runs.busy_note(None) is None
    elsewhere = RunDir(runs.parent / "elsewhere" / "v6")
    assert training_runs.busy_note(elsewhere) == (
        "Training v6 (its run folder is not in this runs folder) is using the device: Start "
        "comes back when it ends."
    )


def test_the_recipe_summary_names_the_fine_tuning_settings():
    from segcore.training.config import TrainConfig

    plain = training.recipe_summary(TrainConfig())
    assert "best epoch and threshold chosen on the dataset's own validation tiles" in plain
    assert "batch normalisation" not in plain and "fast CPU runtime" not in plain
    assert "blended" not in plain
    summary = training.recipe_summary(
        TrainConfig(
            init_from="default",
            freeze_batchnorm=True,
            replay_data="init_from",
            replay_fraction=0.5,
            threshold_rule="start",
            start_blend=0.25,
            prepare_runtime=True,
        )
    )
    for words in (
        "the kept weights blended with the starting model's (25% of them)",
        "batch normalisation kept as the starting model has it",
        "50% of the crops from the starting model's own training tiles (when this machine has",
        "best epoch chosen on the dataset's own validation tiles",
        "the starting model's threshold kept",
        "the new model prepared for the fast CPU runtime at the end",
    ):
        assert words in summary, words


def test_a_run_that_drew_fewer_crops_than_configured_is_timed_by_what_it_drew(runs):
    from segcore.training import estimates

    # An Adapt run whose replay tiles were absent: 320 crops configured, 160 drawn (20 batches).
    short = completed(runs, "run-short", epoch_time=60.0, steps=20, crops_per_epoch=320)
    assert estimates.speed_of(short).seconds_per_crop == pytest.approx(60.0 / 160)
    full = completed(runs, "run-full", epoch_time=60.0, steps=40, crops_per_epoch=320)
    assert estimates.speed_of(full).seconds_per_crop == pytest.approx(60.0 / 320)
