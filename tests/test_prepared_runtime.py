"""A fast runtime shipped inside its bundle (segcore.bundles.prepared): prepared where the bundle
was made, gated on another machine against the Keras masks shipped with it — without
TensorFlow — and refused, leaving the full way, whenever anything does not match."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from segcore.bundles import prepared
from segcore.bundles.card import ModelCard
from segcore.bundles.loading import load_bundle, verified_bundle
from segcore.bundles.runtime_cache import bundle_runtime_cache, open_cached_runtime
from segcore.bundles.store import PREPARED_DIR, read_card, save_bundle, update_card
from segcore.data.preprocessing import PreprocessConfig, to_model_input
from segcore.inference.runtimes import gate as gating
from segcore.inference.runtimes import openvino_runtime as ovr
from segcore.inference.runtimes.base import OPENVINO_INT8
from segcore.paths import REPO_ROOT

pytest.importorskip("openvino")
pytest.importorskip("nncf")

RAW = PreprocessConfig(equalize="none", blur_kernel=0)


def pointwise_model() -> keras.Model:
    """A 1×1 convolution + sigmoid: converts and quantises in seconds."""
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1, activation="sigmoid")]
    )
    model.layers[0].set_weights([np.array([[[[3.0], [-2.0], [1.5]]]]), np.array([-0.7])])
    return model


def few_samples(count: int = 2):
    rng = np.random.default_rng(3)
    return [
        (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.random((64, 64)) > 0.5)
        for _ in range(count)
    ]


@pytest.fixture
def small_gate(monkeypatch):
    monkeypatch.setattr(gating, "gate_samples", lambda count=2: few_samples())
    monkeypatch.setattr(gating, "CALIBRATION_TILES", 4)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A bundle with its int8 runtime prepared and shipped (its own cache then removed), made
    on the real gate images (the built-in samples), so a fresh process can gate it."""
    folder = tmp_path_factory.mktemp("shipped") / "pw"
    card = ModelCard(name="pointwise", input_size=128, preprocess=RAW.to_dict(), threshold=0.5)
    save_bundle(pointwise_model(), folder, card)
    bundle = load_bundle(folder)
    cache = bundle_runtime_cache(bundle)
    # the stand-in is so small that int8 may or may not beat Keras here, which would make
    # ``auto``'s choice depend on the machine's noise: record it as a real network's int8 is
    # (several times faster), so the shipped ratio lets ``auto`` pick it
    record = cache.run_gate()
    for result in record["results"]:
        result["time_ratio"] = 0.25
    cache.gate_path().write_text(json.dumps(record))
    prepared.prepare_runtime(bundle, cache)
    shutil.rmtree(folder / ".runtimes")
    return folder


@pytest.fixture
def fresh_copy(shipped, tmp_path):
    """A copy of the shipped bundle as a fresh clone has it: no runtime cache."""
    return shutil.copytree(shipped, tmp_path / "pw")


def test_preparing_ships_the_gated_ir_and_kerass_masks_recorded_in_the_card(shipped):
    card = read_card(shipped)
    entry = card.prepared
    assert entry["runtime"] == OPENVINO_INT8
    assert set(entry["files"]) == {
        "keras-reference.npz",
        "openvino-int8/model.xml",
        "openvino-int8/model.bin",
        "openvino-int8/meta.json",
    }
    assert entry["versions"] == {"openvino": ovr.openvino_version(), "nncf": ovr.nncf_version()}
    meta = json.loads((shipped / PREPARED_DIR / "openvino-int8" / "meta.json").read_text())
    assert meta["model_sha256"] == card.model_sha256
    reference = prepared.KerasReference.load(shipped / PREPARED_DIR / "keras-reference.npz")
    samples = gating.gate_samples()
    assert reference.digests == tuple(gating.sample_digest(image) for image, _ in samples)
    assert (reference.threshold, reference.tile_size) == (0.5, 128)
    # Keras's masks, recomputed without tiling (the model is pointwise)
    model = pointwise_model()
    for mask, (image, _) in zip(reference.masks, samples, strict=True):
        probs = np.asarray(model(to_model_input(image)[None]))[0, ..., 0]
        agree = np.mean(mask == (probs >= 0.5))
        assert mask.shape == image.shape[:2] and agree > 0.999
    assert reference.time_ratio > 0 and reference.keras_ms_per_tile > 0


def test_a_fresh_copy_opens_the_shipped_runtime_gated_on_this_cpu_without_keras(
    fresh_copy, monkeypatch
):
    compiles = []
    real_compile = ovr.compile_runtime
    monkeypatch.setattr(
        ovr, "compile_runtime", lambda *a, **k: compiles.append(1) or real_compile(*a, **k)
    )
    bundle = verified_bundle(fresh_copy)
    assert bundle.model is None
    runtime = open_cached_runtime(bundle)
    assert runtime is not None and runtime.name == OPENVINO_INT8
    assert len(compiles) == 1  # the runtime compiled for the gate is the one returned
    assert runtime.gate["passed"] and runtime.gate["max_abs_diff"] is None
    assert "shipped with the bundle" in runtime.gate["reason"]
    cache = bundle_runtime_cache(bundle)
    record = cache.gate_record()
    assert "prepared/" in record["keras_reference"]
    assert [r["runtime"] for r in record["results"]] == [OPENVINO_INT8]
    shipped_bin = (fresh_copy / PREPARED_DIR / "openvino-int8" / "model.bin").read_bytes()
    assert cache.ir(OPENVINO_INT8).folder.joinpath("model.bin").read_bytes() == shipped_bin
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    batch = to_model_input(image)[None].astype(np.float32)
    keras_probs = np.asarray(pointwise_model()(batch))
    assert np.abs(np.asarray(runtime(batch)) - keras_probs).max() < 0.05


def test_two_threads_opening_a_fresh_copy_gate_it_once(fresh_copy, monkeypatch):
    import threading

    gates = []
    real = gating.gate_against_masks
    monkeypatch.setattr(
        gating, "gate_against_masks", lambda *a, **k: gates.append(1) or real(*a, **k)
    )
    bundle = verified_bundle(fresh_copy)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(open_cached_runtime(bundle)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(gates) == 1
    assert [r.name for r in results] == [OPENVINO_INT8] * 2


SUBPROCESS = """
import json, sys
from segcore.bundles.runtime_cache import cached_runtime
found = cached_runtime(sys.argv[1])
print(json.dumps({"runtime": found and found[1].name, "loaded": sorted(
    name for name in ("tensorflow", "keras") if name in sys.modules)}))
"""


@pytest.mark.slow
def test_a_fresh_copy_never_imports_tensorflow(fresh_copy):
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(fresh_copy)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"runtime": OPENVINO_INT8, "loaded": []}


def _altered_file(folder):
    path = folder / PREPARED_DIR / "openvino-int8" / "model.xml"
    path.write_text(path.read_text().replace("<net ", "<net  ", 1))


def _other_versions(folder):
    update_card(
        folder,
        lambda card: dataclasses.replace(
            card, prepared={**card.prepared, "versions": {"openvino": "2020.1", "nncf": "1.0"}}
        ),
    )


def _other_threshold(folder):
    update_card(folder, lambda card: dataclasses.replace(card, threshold=0.6))


def _missing_reference(folder):
    (folder / PREPARED_DIR / "keras-reference.npz").unlink()


@pytest.mark.parametrize(
    "change, why",
    [
        (_altered_file, "openvino-int8/model.xml is missing or differs from the card"),
        (_other_versions, "made with {'openvino': '2020.1'"),
        (_other_threshold, "made at threshold 0.5 and tile 128, the card has 0.6"),
        (_missing_reference, "keras-reference.npz is missing or differs"),
    ],
)
def test_a_shipped_runtime_that_does_not_match_is_left_alone(fresh_copy, caplog, change, why):
    change(fresh_copy)
    bundle = verified_bundle(fresh_copy)
    with caplog.at_level(logging.INFO, logger="segcore.bundles.prepared"):
        assert open_cached_runtime(bundle) is None  # the caller takes the full way
    assert why in caplog.text
    assert bundle_runtime_cache(bundle).gate_record() is None
    assert not (fresh_copy / ".runtimes").exists() or not any(
        (fresh_copy / ".runtimes").rglob("gate-*.json")
    )


def test_a_runtime_that_disagrees_with_kerass_masks_fails_the_gate_and_is_not_used(
    fresh_copy, caplog
):
    path = fresh_copy / PREPARED_DIR / "keras-reference.npz"
    reference = prepared.KerasReference.load(path)
    flipped = dataclasses.replace(reference, masks=tuple(~m for m in reference.masks))
    flipped.save(path)
    update_card(  # the card vouches for the new file, so only the gate can catch it
        fresh_copy,
        lambda card: dataclasses.replace(
            card,
            prepared={
                **card.prepared,
                "files": {
                    **card.prepared["files"],
                    "keras-reference.npz": prepared.file_sha256(path),
                },
            },
        ),
    )
    bundle = verified_bundle(fresh_copy)
    with caplog.at_level(logging.WARNING, logger="segcore.inference.runtimes.selection"):
        assert open_cached_runtime(bundle) is None  # the caller takes the full way
    assert "openvino-int8 failed its gate" in caplog.text and "masks agree" in caplog.text
    # nothing recorded: the full gate (with Keras) will run and may pass another runtime
    assert bundle_runtime_cache(bundle).gate_record() is None


def test_the_reference_file_is_checked_not_trusted(tmp_path):
    bad = tmp_path / "keras-reference.npz"
    bad.write_bytes(b"PK not really")
    with pytest.raises(prepared.ConfigError, match="not a Keras reference"):
        prepared.KerasReference.load(bad)


def test_an_ir_folder_of_another_model_is_not_installed(shipped, tmp_path):
    cache = ovr.IrCache(tmp_path / ("b" * 64) / "openvino-int8", "b" * 64, "int8")
    assert not cache.install(shipped / PREPARED_DIR / "openvino-int8")
    assert not cache.folder.exists()


def test_a_card_without_a_prepared_runtime_stays_as_it_was_and_a_new_model_drops_it(
    shipped, tmp_path
):
    card = read_card(shipped)
    assert "prepared" in card.to_dict()
    assert "prepared" not in ModelCard(name="x").to_dict()
    assert ModelCard.from_dict(card.to_dict()).prepared == card.prepared
    # saving another model over the folder replaces it (prepared/ included) and drops the entry
    copy = shutil.copytree(shipped, tmp_path / "pw")
    save_bundle(pointwise_model(), copy, card)
    assert read_card(copy).prepared == {} and not (copy / PREPARED_DIR).exists()


def test_cli_runtimes_ship_prepares_and_reports(tmp_path, small_gate, capsys):
    from segcore.cli import main

    folder = save_bundle(
        pointwise_model(),
        tmp_path / "pw",
        ModelCard(name="pw", input_size=32, preprocess=RAW.to_dict(), threshold=0.5),
    )
    assert main(["runtimes", "--model", str(folder), "--ship"]) == 0
    out = capsys.readouterr().out
    assert f"shipped openvino-int8 in {folder / PREPARED_DIR}" in out and "card updated" in out
    assert read_card(folder).prepared["runtime"] == OPENVINO_INT8


def test_the_apps_first_prediction_on_a_fresh_copy_never_imports_tensorflow(fresh_copy, tmp_path):
    """The real app (AppTest in its own process, as ``tests/test_app_startup.py`` runs it) on a
    bundle as a fresh clone has it: the shipped runtime is gated and predicts the first
    sample; neither TensorFlow nor Keras is imported."""
    from tests.test_app_startup import first_prediction

    result = first_prediction(fresh_copy, tmp_path / "runs")
    assert result["problems"] == []
    assert result["loaded"] == []
    assert result["dice"] and all(float(value) >= 0 for value in result["dice"])
    assert any("runtime openvino-int8)" in c for c in result["captions"]), result["captions"]
    record = bundle_runtime_cache(verified_bundle(fresh_copy)).gate_record()
    assert record is not None and "prepared/" in record["keras_reference"]
