"""The command line: evaluate and predict with a tiny bundle; errors as one line, status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.bundles.card import ModelCard
from segcore.bundles.loading import load_bundle
from segcore.bundles.store import save_bundle
from segcore.cli import main
from segcore.data.images import read_image, read_mask
from segcore.data.preprocessing import PreprocessConfig
from segcore.data.synthetic_set import generate_dataset
from segcore.metrics.counts import binarize
from segcore.network.model import build_deeplabv3plus
from tests.conftest import write_png


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    model = build_deeplabv3plus(
        aspp_filters=8, aspp_rates=(2, 4), low_level_filters=8, decoder_filters=8
    )
    card = ModelCard(
        name="tiny", input_size=64, preprocess=PreprocessConfig().to_dict(), threshold=0.5
    )
    return save_bundle(model, tmp_path_factory.mktemp("bundles") / "tiny", card)


def test_predict_writes_prob_and_mask_of_the_input_size(tiny_bundle, tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "odd.png", rng.integers(0, 256, (70, 101, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    status = main(
        [
            "-q",
            "predict",
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--overlap",
            "16",
            str(tmp_path / "broken.png"),
            str(tmp_path / "odd.png"),
        ]
    )
    assert status == 2  # one input failed, the other was still processed
    assert "broken.png: not a readable image" in capsys.readouterr().err
    prob = read_image(out / "odd_prob.png")[..., 0]
    mask = read_mask(out / "odd_mask.png")
    assert prob.shape == (70, 101) and mask.shape == (70, 101)
    # The mask is the probability map thresholded at the bundle's threshold (up to rounding).
    agree = np.mean(mask == binarize(prob / 255.0, 0.5))
    assert agree > 0.99


def test_evaluate_prints_writes_json_and_updates_the_card(tiny_bundle, tmp_path, capsys):
    data = generate_dataset(tmp_path / "synth", count=6, size=64, seed=2)
    report = tmp_path / "report.json"
    status = main(
        [
            "-q",
            "evaluate",
            "--model",
            str(tiny_bundle),
            "--data",
            str(data),
            "--split",
            "train",
            "--overlap",
            "16",
            "--json",
            str(report),
            "--update-card",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "pooled" in printed and "best pooled Dice" in printed
    assert "PQ" in printed and "AJI" in printed and "note: The ground truth is a binary" in printed
    result = json.loads(report.read_text())
    assert result["split"] == "train" and result["n_images"] == len(result["per_image"])
    assert len(result["sweep"]["thresholds"]) == 101
    card = load_bundle(tiny_bundle).card  # still loads: the sha256 of model.keras is unchanged
    recorded = card.figures("train")
    assert recorded.pooled["dice"] == pytest.approx(result["pooled"]["dice"])
    assert recorded.threshold == card.threshold and recorded.images == result["n_images"]
    assert "evaluate" in recorded.command
    argv = ["-q", "evaluate", "--model", str(tiny_bundle), "--data", str(data), "--split", "val"]
    assert main([*argv, "--overlap", "16", "--update-card"]) == 0
    card = load_bundle(tiny_bundle).card  # the val split is recorded where training puts it
    assert card.figures("validation").split == "validation" and card.figures("val") is None


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: config file not found" in capsys.readouterr().err


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--count", "0"]) == 2
    assert "count" in capsys.readouterr().err


def test_predict_instances_writes_labels_geojson_and_table(tmp_path, capsys):
    import csv
    import io

    import cv2

    from segcore.data.synthetic import generate_tile

    image, _ = generate_tile(np.random.default_rng([3, 1]), 128)
    write_png(tmp_path / "tile.png", image)
    out = tmp_path / "out"
    argv = ["-q", "predict", "--model", "baseline", "--instances", "--out", str(out)]
    assert main([*argv, str(tmp_path / "tile.png")]) == 0
    labels = cv2.imread(str(out / "tile_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (128, 128)
    count = int(labels.max())
    assert count > 3 and len(np.unique(labels)) == count + 1
    features = json.loads((out / "tile.geojson").read_text())["features"]
    assert len(features) == count
    assert all(f["properties"]["objectType"] == "detection" for f in features)
    rows = list(csv.DictReader(io.StringIO((out / "tile_nuclei.csv").read_text())))
    assert len(rows) == count and float(rows[0]["area_um2"]) > 0
    mask = read_mask(out / "tile_mask.png")
    assert not (labels > 0)[mask == 0].any()  # nuclei lie inside the mask


def test_predict_pipelines_files_in_order_and_survives_a_bad_one(tmp_path, capsys):
    """Decoding the next file and writing the last one overlap the model; the outputs are the
    ones a lone run writes, and a bad file in the middle stops nothing."""
    from segcore.data.synthetic import generate_tile

    names = []
    for i in range(3):
        write_png(tmp_path / f"t{i}.png", generate_tile(np.random.default_rng([5, i]), 96)[0])
        names.append(str(tmp_path / f"t{i}.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    argv = ["-q", "predict", "--model", "baseline", "--instances"]
    together = tmp_path / "together"
    files = [names[0], str(tmp_path / "bad.png"), names[1], names[2]]
    assert main([*argv, "--out", str(together), *files]) == 2
    assert "bad.png" in capsys.readouterr().err
    alone = tmp_path / "alone"
    assert main([*argv, "--out", str(alone), names[1]]) == 0
    for suffix in ("_prob.png", "_mask.png", "_labels.png", ".geojson", "_nuclei.csv"):
        assert (together / f"t1{suffix}").read_bytes() == (alone / f"t1{suffix}").read_bytes()
        assert all((together / f"t{i}{suffix}").is_file() for i in range(3))
    assert not (together / "bad_prob.png").exists()


def test_tune_instances_prints_the_grid_and_records_the_choice(tiny_bundle, tmp_path, capsys):
    data = generate_dataset(tmp_path / "synth", count=8, size=64, seed=2)
    argv = ["tune-instances", "--model", str(tiny_bundle), "--data", str(data), "--threshold"]
    assert main(["-q", *argv, "0.3", "--overlap", "16", "--update-card"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") >= 37 and "chosen: min_area_um2" in printed
    card = load_bundle(tiny_bundle).card
    assert set(card.instances) == {"min_area_um2", "split_depth_um", "fill_holes"}
    tuning = card.training["instances_tuning"]
    assert tuning["split"] == "val" and "tune-instances" in tuning["command"]
    assert main(["-q", "tune-instances", "--model", "baseline", "--data", str(data)]) == 0
    assert main(["-q", *argv[:-1], "--model", "baseline", "--update-card"]) == 2
    assert "no card to update" in capsys.readouterr().err


def make_unwritable(folder, monkeypatch):
    """Makes ``folder`` unwritable: by its permissions, or (root ignores them) by refusing the
    probe file the CLI writes there."""
    import errno
    import os
    import tempfile

    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and str(dir) == str(folder):
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def test_predict_checks_names_and_output_folder_before_the_model(tmp_path, capsys, monkeypatch):
    image = np.zeros((8, 8, 3), np.uint8)
    first, second = write_png(tmp_path / "a" / "dup.png", image), tmp_path / "b" / "Dup.tif"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    model = str(tmp_path / "no-model")  # loading it fails by name: every check comes before
    out = tmp_path / "out"

    def predict(*args):
        status = main(["-q", "predict", "--model", model, *args])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    err = predict("--out", str(out), str(first), str(second))
    assert f"{first} and {second} would both write Dup_prob.png" in err
    assert not out.exists()  # nothing was written
    (tmp_path / "a-file").write_text("")
    err = predict("--out", str(tmp_path / "a-file"), str(first))
    assert "--out" in err and "a-file: is a file, not a folder" in err
    err = predict("--out", str(tmp_path / "a-file" / "x"), str(first))
    assert "a-file/x: cannot write there (Not a directory)" in err
    locked = tmp_path / "locked"
    locked.mkdir()
    make_unwritable(locked, monkeypatch)
    err = predict("--out", str(locked), str(first))
    assert f"{locked}: cannot write there (Permission denied)" in err
    assert "no-model" in predict("--out", str(out), str(first))  # only now the model
    assert out.is_dir()  # made when missing


def test_train_refuses_an_unwritable_run_folder_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "a-file").write_text("")
    assert main(["train", "--run-dir", str(tmp_path / "a-file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "a-file/run: cannot write the run folder (Not a directory)" in err


def evaluation_only_dataset(folder):
    """A pairs folder whose split.json fixes only val and test parts: nothing to train on."""
    from tests.conftest import make_pairs_dataset

    make_pairs_dataset(folder, n=2, size=32)
    (folder / "split.json").write_text(json.dumps({"val": ["img_000"], "test": ["img_001"]}))
    return folder


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("missing", "missing: dataset folder not found"),
        ("empty", "empty: no supported dataset layout found"),
        ("evalonly", "evalonly: no training samples found"),
    ],
)
def test_train_refuses_a_missing_or_empty_dataset_before_making_a_run(
    tmp_path, capsys, monkeypatch, dataset, message
):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(runs))
    (tmp_path / "empty").mkdir()
    evaluation_only_dataset(tmp_path / "evalonly")
    assert main(["train", "--data", str(tmp_path / dataset), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_train_names_the_field_of_a_config_value_of_the_wrong_type(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": "many"}))
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {config}: TrainConfig.epochs must be an integer, got 'many'\n"
    assert not (tmp_path / "runs").exists()


def test_flips_average_the_mirror_images_but_never_land_in_the_card(tiny_bundle, tmp_path, capsys):
    data = generate_dataset(tmp_path / "synth", count=3, size=64, seed=3)
    argv = ["evaluate", "--model", str(tiny_bundle), "--data", str(data), "--split", "train"]
    argv += ["--runtime", "keras", "--overlap", "16"]
    plain, flipped = tmp_path / "plain.json", tmp_path / "flipped.json"
    assert main([*argv, "--json", str(plain)]) == 0
    assert main([*argv, "--flips", "--json", str(flipped)]) == 0
    assert "mean of 4 flips" in capsys.readouterr().err  # the runtime line says so
    a, b = json.loads(plain.read_text()), json.loads(flipped.read_text())
    assert a["sweep"]["pooled"] != b["sweep"]["pooled"]  # another prediction was scored
    before = (tiny_bundle / "card.json").read_text()
    assert main([*argv, "--flips", "--update-card"]) == 2
    assert "--flips with --update-card" in capsys.readouterr().err
    assert (tiny_bundle / "card.json").read_text() == before
