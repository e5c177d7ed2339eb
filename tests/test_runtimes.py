"""Runtimes (segcore.inference.runtimes): the gate's rules, the OpenVINO conversion cache and
its checks, the fallbacks to Keras, ``auto``'s choice, and the real model through the gate."""

from __future__ import annotations

import json
import threading

import keras
import numpy as np
import pytest

from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.predict import predict_probabilities
from segcore.inference.runtimes import gate as gating
from segcore.inference.runtimes import openvino_runtime as ovr
from segcore.inference.runtimes import selection
from segcore.inference.runtimes.base import (
    KERAS,
    OPENVINO,
    OPENVINO_BF16,
    OPENVINO_INT8,
    RUNTIMES,
    RuntimeModel,
)
from segcore.inference.runtimes.cpu import CpuInfo, parse_cpuinfo, supports_bf16
from segcore.inference.runtimes.selection import RuntimeCache, choose, open_runtime
from segcore.network.model import build_deeplabv3plus

openvino = pytest.importorskip("openvino")

RAW = PreprocessConfig(equalize="none", blur_kernel=0)
SHA = "a" * 64


def pointwise_model() -> keras.Model:
    """A 1×1 convolution + sigmoid: tiny, converts in well under a second."""
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1, activation="sigmoid")]
    )
    model.layers[0].set_weights([np.array([[[[3.0], [-2.0], [1.5]]]]), np.array([-0.7])])
    return model


@pytest.fixture(scope="module")
def tiny_deeplab() -> keras.Model:
    """The real architecture (ResNet50, DSPP, decoder) with narrow heads, random weights."""
    keras.utils.set_random_seed(0)
    return build_deeplabv3plus(
        (None, None, 3), aspp_filters=8, low_level_filters=8, decoder_filters=8, aspp_rates=(2, 4)
    )


def numpy_runtime(name: str, function) -> RuntimeModel:
    return RuntimeModel(name=name, predict=function)


def test_cpuinfo_keeps_the_flags_that_decide_the_fast_paths():
    text = (
        "processor\t: 0\nmodel name\t: AMD EPYC 9B45\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni sha_ni\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    info = parse_cpuinfo(text, cores=2)
    assert info.model == "AMD EPYC 9B45"
    assert info.flags == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert supports_bf16(info)
    assert not supports_bf16(CpuInfo("old", 2, ("avx2",)))
    assert supports_bf16(CpuInfo("sapphire", 2, ("amx_bf16",)))
    assert info.key != CpuInfo("AMD EPYC 9B45", 4, info.flags).key  # cores count too
    assert "avx512_bf16" in info.describe()


@pytest.mark.parametrize(
    ("runtime", "figures", "passed", "words"),
    [
        (OPENVINO, (1e-3, 1.0, 0.8, 0.8), True, "≤ 0.001"),
        (OPENVINO, (1.1e-3, 1.0, 0.8, 0.8), False, "> 0.001"),
        (OPENVINO, (float("nan"), 1.0, 0.8, 0.8), False, "> 0.001"),
        (OPENVINO_INT8, (0.4, 0.991, 0.800, 0.804), True, "within 0.005"),
        (OPENVINO_INT8, (0.01, 0.989, 0.800, 0.800), False, "Dice 0.9890 < 0.99"),
        (OPENVINO_BF16, (0.01, 0.999, 0.794, 0.800), False, "change 0.0060 > 0.005"),
        (OPENVINO_BF16, (0.01, 0.999, 0.806, 0.800), False, "change 0.0060 > 0.005"),
    ],
)
def test_judge_applies_the_gate_of_each_precision(runtime, figures, passed, words):
    ok, reason = gating.judge(runtime, *figures)
    assert ok is passed
    assert words in reason


def test_auto_chooses_the_fastest_runtime_that_passed_and_beats_keras():
    def result(name, passed, ratio):
        return {"runtime": name, "passed": passed, "time_ratio": ratio}

    record = {
        "results": [
            result(OPENVINO, True, 0.83),
            result(OPENVINO_BF16, True, 0.45),
            result(OPENVINO_INT8, False, 0.27),  # fastest, but failed the gate
        ]
    }
    assert choose(record) == OPENVINO_BF16
    assert choose({"results": [result(OPENVINO, True, 1.14)]}) == KERAS  # slower than keras
    assert choose({"results": []}) == KERAS


def test_run_gate_measures_differences_masks_and_speed():
    rng = np.random.default_rng(0)
    samples = [
        (rng.integers(0, 256, (96, 80, 3), dtype=np.uint8), rng.random((96, 80)) > 0.5)
        for _ in range(2)
    ]

    def reference(batch):
        return batch.mean(axis=-1)

    noisy_mask_rng = np.random.default_rng(1)

    def flips_some_pixels(batch):  # about 5 % of the mask changes: fails the 0.99 mask gate
        out = batch.mean(axis=-1)
        flip = noisy_mask_rng.random(out.shape) < 0.05
        return np.where(flip, 1.0 - out, out)

    results = gating.run_gate(
        numpy_runtime(KERAS, reference),
        [
            numpy_runtime(OPENVINO, lambda b: reference(b) + 5e-4),
            numpy_runtime(OPENVINO_BF16, lambda b: np.clip(reference(b) + 0.01, 0, 1)),
            numpy_runtime(OPENVINO_INT8, flips_some_pixels),
        ],
        samples,
        RAW,
        0.5,
        tile_size=64,
    )
    by_name = {r.runtime: r for r in results}
    assert by_name[OPENVINO].passed and by_name[OPENVINO].max_abs_diff == pytest.approx(5e-4)
    assert by_name[OPENVINO].mask_dice == 1.0
    assert by_name[OPENVINO_BF16].mask_dice < 1.0  # 0.01 moves a few pixels over 0.5
    assert not by_name[OPENVINO_INT8].passed and "0.99" in by_name[OPENVINO_INT8].reason
    for result in results:
        assert result.tiles == 2 * 4  # 96×80 at tile 64, overlap 16: 2×2 tiles per image
        assert result.ms_per_tile > 0 and result.keras_ms_per_tile > 0
        assert result.time_ratio == pytest.approx(
            result.ms_per_tile / result.keras_ms_per_tile, rel=0.01
        )
        assert gating.GateResult.from_dict(result.to_dict()) == result


def test_calibration_tiles_are_synthetic_and_preprocessed():
    tiles = gating.calibration_tiles(RAW, count=3, size=64)
    assert len(tiles) == 3
    assert all(t.shape == (1, 64, 64, 3) and t.dtype == np.float32 for t in tiles)
    assert min(t.min() for t in tiles) >= 0.0 and max(t.max() for t in tiles) <= 1.0
    again = gating.calibration_tiles(RAW, count=3, size=64)
    assert all(np.array_equal(a, b) for a, b in zip(tiles, again, strict=True))  # seeded


def test_openvino_float32_matches_keras_within_the_gate_on_the_real_architecture(
    tiny_deeplab, tmp_path
):
    runtime = open_runtime(
        tiny_deeplab, OPENVINO, model_sha256=SHA, cache_dir=tmp_path, preprocess=RAW
    )
    assert runtime.name == OPENVINO, runtime.notice
    assert runtime.notice is None and runtime.any_size
    reference = open_runtime(tiny_deeplab, KERAS)
    rng = np.random.default_rng(0)
    for shape in ((2, 64, 64, 3), (1, 96, 128, 3)):  # any size in one call
        batch = rng.random(shape, dtype=np.float32)
        got = np.asarray(runtime(batch)).reshape(shape[:3])
        want = np.asarray(reference(batch)).reshape(shape[:3])
        assert np.abs(got - want).max() <= gating.MAX_ABS_DIFF_FLOAT32


def counting_conversions(cache_dir, monkeypatch):
    """``(opened, calls)``: ``opened()`` opens :func:`pointwise_model`'s OpenVINO runtime with
    its cache in ``cache_dir``; ``calls`` grows by one for each conversion (a (re)build)."""
    model = pointwise_model()
    calls = []
    real_convert = ovr.convert
    monkeypatch.setattr(ovr, "convert", lambda m: calls.append(1) or real_convert(m))

    def opened():
        return open_runtime(model, OPENVINO, model_sha256=SHA, cache_dir=cache_dir)

    return opened, calls


def test_the_converted_model_is_built_once_and_checked_before_use(tmp_path, monkeypatch):
    opened, calls = counting_conversions(tmp_path, monkeypatch)
    batch = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    first = np.asarray(opened()(batch))
    assert len(calls) == 1
    opened()
    assert len(calls) == 1  # cached
    folder = tmp_path / SHA / "openvino-float32"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["model_sha256"] == SHA and meta["versions"]["openvino"]

    # a corrupt weights file is rebuilt, never used
    with open(folder / "model.bin", "r+b") as handle:
        handle.seek(8)
        handle.write(b"\x7f\x7f\x7f\x7f")
    assert np.allclose(np.asarray(opened()(batch)), first, atol=1e-6)
    assert len(calls) == 2

    # a stale cache (made with another OpenVINO, or for another model) is rebuilt
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "versions": {"openvino": "2020.1"}}))
    opened()
    assert len(calls) == 3
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "model_sha256": "b" * 64}))
    opened()
    assert len(calls) == 4
    (folder / "meta.json").write_text("{not json")
    opened()
    assert len(calls) == 5
    assert not list(tmp_path.glob(f"{SHA}/.*.tmp"))  # no half-built folder left behind


def test_two_threads_asking_for_the_same_conversion_build_it_once(tmp_path, monkeypatch):
    model = pointwise_model()
    calls = []
    real_convert = ovr.convert
    monkeypatch.setattr(ovr, "convert", lambda m: calls.append(1) or real_convert(m))
    results = []

    def worker():
        results.append(open_runtime(model, OPENVINO, model_sha256=SHA, cache_dir=tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert [r.name for r in results] == [OPENVINO] * 3


def test_missing_or_failing_runtimes_fall_back_to_keras_with_a_notice(tmp_path, monkeypatch):
    model = pointwise_model()
    monkeypatch.setattr(ovr, "openvino_version", lambda: None)
    named = open_runtime(model, OPENVINO_INT8, model_sha256=SHA, cache_dir=tmp_path)
    assert named.name == KERAS and "openvino" in named.notice and "pip install" in named.notice
    auto = open_runtime(model, "auto", model_sha256=SHA, cache_dir=tmp_path)
    assert auto.name == KERAS and "no fast runtime is installed" in auto.notice
    monkeypatch.undo()

    def broken(_model):
        raise RuntimeError("conversion exploded")

    monkeypatch.setattr(ovr, "convert", broken)
    failed = open_runtime(model, OPENVINO, model_sha256=SHA, cache_dir=tmp_path)
    assert failed.name == KERAS and "conversion exploded" in failed.notice
    no_cache = open_runtime(model, OPENVINO)  # no hash, no folder: nowhere to cache
    assert no_cache.name == KERAS and "no cache folder" in no_cache.notice
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        open_runtime(model, "tensorrt")


def test_auto_gates_once_records_the_figures_and_regates_a_changed_ir(tmp_path, monkeypatch):
    model = pointwise_model()
    gates = []
    real_gate = gating.run_gate
    monkeypatch.setattr(gating, "run_gate", lambda *a, **k: gates.append(1) or real_gate(*a, **k))
    monkeypatch.setattr(gating, "gate_samples", lambda count=2: _few_samples())
    monkeypatch.setattr(gating, "CALIBRATION_TILES", 4)

    def auto():
        return open_runtime(
            model, "auto", model_sha256=SHA, cache_dir=tmp_path, preprocess=RAW, tile_size=64
        )

    first = auto()
    assert len(gates) == 1
    cache = RuntimeCache(
        model, model_sha256=SHA, cache_dir=tmp_path, preprocess=RAW, threshold=0.5, tile_size=64
    )
    record = cache.gate_record()
    assert record is not None
    gated = {r["runtime"] for r in record["results"]}
    assert gated == set(selection.auto_candidates())
    assert first.name == choose(record)  # whatever was fastest and passed on this CPU
    if first.name != KERAS:
        assert first.gate["passed"]
    auto()
    assert len(gates) == 1  # the record holds
    # the float32 IR is rebuilt differently (here: edited) -> the record no longer holds
    meta_path = tmp_path / SHA / "openvino-float32" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["model.bin"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert cache.gate_record() is None
    auto()
    assert len(gates) == 2


def _few_samples():
    rng = np.random.default_rng(3)
    return [
        (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.random((64, 64)) > 0.5)
        for _ in range(2)
    ]


def test_predict_probabilities_takes_a_runtime_model(tmp_path):
    model = pointwise_model()
    image = np.random.default_rng(0).integers(0, 256, (70, 101, 3), dtype=np.uint8)
    fast = open_runtime(model, OPENVINO, model_sha256=SHA, cache_dir=tmp_path)
    reference = predict_probabilities(model, image, RAW, tile_size=32, overlap=8)
    got = predict_probabilities(fast, image, RAW, tile_size=32, overlap=8)
    assert got.shape == (70, 101)
    assert np.abs(got - reference).max() <= gating.MAX_ABS_DIFF_FLOAT32


# --- bundles, CLI, app ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pointwise_bundle(tmp_path_factory):
    from segcore.bundles.card import ModelCard
    from segcore.bundles.store import save_bundle

    card = ModelCard(name="pointwise", input_size=32, preprocess=RAW.to_dict(), threshold=0.5)
    return save_bundle(pointwise_model(), tmp_path_factory.mktemp("bundles") / "pw", card)


def test_a_bundle_caches_its_converted_models_inside_itself_or_in_the_shared_folder(
    pointwise_bundle, tmp_path, monkeypatch
):
    from segcore.bundles.loading import baseline_bundle, load_bundle
    from segcore.bundles.runtime_cache import open_bundle_runtime, runtime_cache_dir
    from segcore.bundles.store import save_bundle
    from segcore.inference.classical import ClassicalBaseline

    bundle = load_bundle(pointwise_bundle)
    assert runtime_cache_dir(bundle) == pointwise_bundle / ".runtimes"
    model = open_bundle_runtime(bundle, OPENVINO)
    assert model.name == OPENVINO
    assert (pointwise_bundle / ".runtimes" / bundle.card.model_sha256 / "openvino-float32").is_dir()
    # the cache does not stop the bundle from being replaced by a new save
    save_bundle(pointwise_model(), pointwise_bundle, bundle.card)
    # a bundle folder that cannot be written uses $SEGCORE_RUNTIME_CACHE
    monkeypatch.setenv("SEGCORE_RUNTIME_CACHE", str(tmp_path / "shared"))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert runtime_cache_dir(bundle) == tmp_path / "shared"
    baseline = baseline_bundle()
    assert runtime_cache_dir(baseline) is None
    assert isinstance(open_bundle_runtime(baseline, "auto"), ClassicalBaseline)


def test_cli_predict_with_a_named_runtime_says_which_runs(pointwise_bundle, tmp_path, capsys):
    from segcore.cli import main
    from tests.conftest import write_png

    image = np.random.default_rng(0).integers(0, 256, (70, 101, 3), dtype=np.uint8)
    write_png(tmp_path / "odd.png", image)
    outputs = {}
    for runtime in (KERAS, OPENVINO):
        out = tmp_path / runtime
        argv = ["predict", "--model", str(pointwise_bundle), "--runtime", runtime, "--overlap", "8"]
        assert main([*argv, "--out", str(out), str(tmp_path / "odd.png")]) == 0
        assert f"runtime: {runtime}" in capsys.readouterr().err
        outputs[runtime] = (out / "odd_prob.png").read_bytes()
    from segcore.data.images import read_mask_array

    keras_prob = read_mask_array(tmp_path / KERAS / "odd_prob.png").astype(int)
    fast_prob = read_mask_array(tmp_path / OPENVINO / "odd_prob.png").astype(int)
    assert np.abs(keras_prob - fast_prob).max() <= 1  # 8-bit PNGs of probabilities ≤ 1e-3 apart
    with pytest.raises(SystemExit):
        main(["predict", "--runtime", "tensorrt", "--out", str(tmp_path), "x.png"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_the_app_serves_keras_until_the_runtime_is_ready_and_builds_it_once(pointwise_bundle):
    from appkit.runtime import RuntimeBuilder, requested_runtime
    from segcore.bundles.loading import load_bundle

    bundle = load_bundle(pointwise_bundle)
    release = threading.Event()
    opened = []

    def opener(bundle, requested, report):
        opened.append(requested)
        report("converting…")
        release.wait(10)
        return open_runtime(bundle.model, OPENVINO, model_sha256=SHA, cache_dir=pointwise_bundle)

    builder = RuntimeBuilder(bundle, "auto", opener=opener)
    for _ in range(3):  # three sessions asking
        builder.start()
    assert builder.model().name == KERAS
    assert "keras for now" in builder.status()
    release.set()
    assert builder.wait(30)
    assert opened == ["auto"]
    assert builder.model().name == OPENVINO
    assert "**Runtime:** openvino" in builder.status()

    def broken(bundle, requested, report):
        raise RuntimeError("no compiler")

    failing = RuntimeBuilder(bundle, "openvino-int8", opener=broken).start()
    assert failing.wait(30)
    assert failing.model().name == KERAS and "no compiler" in failing.status()
    assert RuntimeBuilder(bundle, KERAS).ready  # nothing to build

    assert requested_runtime(["--runtime", "openvino-bf16"]) == ("openvino-bf16", None)
    name, warning = requested_runtime(["--runtime", "cuda"])
    assert name == "auto" and "Unknown runtime 'cuda'" in warning


# --- the real model through the gate --------------------------------------------------------


@pytest.mark.slow
def test_the_default_model_passes_the_gate_in_every_fast_runtime(tmp_path):
    """The accuracy gate on the shipped model and the built-in samples: OpenVINO float32 within
    1e-3 of Keras; bfloat16 (where native) and int8 with masks at Dice ≥ 0.99 of Keras's and
    pooled Dice within 0.005. Also checks auto picks a runtime that passed."""
    from segcore.bundles.loading import load_bundle

    bundle = load_bundle("default")
    cache = RuntimeCache(
        bundle.model,
        model_sha256=bundle.card.model_sha256,
        cache_dir=tmp_path,
        preprocess=bundle.preprocess,
        threshold=bundle.threshold,
    )
    record = cache.run_gate()
    results = {r["runtime"]: r for r in record["results"]}
    assert set(results) == set(selection.auto_candidates()) and not record["failed"]
    for name, result in results.items():
        assert result["passed"], (name, result["reason"])
    assert results[OPENVINO]["max_abs_diff"] <= 1e-3
    if OPENVINO_INT8 in results:
        assert results[OPENVINO_INT8]["mask_dice"] >= 0.99
        assert abs(results[OPENVINO_INT8]["dice"] - results[OPENVINO_INT8]["dice_keras"]) <= 0.005
    assert choose(record) in {KERAS, *results}


def test_cli_runtimes_prepares_the_gate_and_names_autos_choice(
    pointwise_bundle, capsys, monkeypatch
):
    from segcore.cli import main

    monkeypatch.setattr(gating, "gate_samples", lambda count=2: _few_samples())
    monkeypatch.setattr(gating, "CALIBRATION_TILES", 4)
    assert main(["runtimes", "--model", str(pointwise_bundle)]) == 0
    out = capsys.readouterr().out
    assert "keras          available" in out and "no gate record" in out
    assert main(["runtimes", "--model", str(pointwise_bundle), "--prepare"]) == 0
    out = capsys.readouterr().out
    from segcore.bundles.runtime_cache import gate_record
    from segcore.bundles.store import read_card

    record = gate_record(pointwise_bundle, read_card(pointwise_bundle))  # the Models page reads it
    assert record is not None and {r["runtime"] for r in record["results"]} >= {OPENVINO}
    assert "openvino       pass" in out
    assert out.strip().splitlines()[-1] in {f"auto: {n}" for n in RUNTIMES}


def test_an_ir_corrupted_in_place_with_its_mtime_restored_is_never_run(tmp_path, monkeypatch):
    """Issue 21: same size, same inode, modification time put back — the memo of hashes
    would not see it, so every load hashes the files in full."""
    import os

    opened, calls = counting_conversions(tmp_path, monkeypatch)
    batch = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    first = np.asarray(opened()(batch))
    opened()  # the hashes are now remembered by path, inode, size and mtime
    assert len(calls) == 1
    weights = tmp_path / SHA / "openvino-float32" / "model.bin"
    before = weights.stat()
    data = weights.read_bytes()
    where = data.find(np.float32(3.0).tobytes())  # pointwise_model's first weight
    assert where >= 0
    with open(weights, "r+b") as handle:  # still a valid IR, with another weight
        handle.seek(where)
        handle.write(np.float32(-30.0).tobytes())
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert np.allclose(np.asarray(opened()(batch)), first, atol=1e-6)
    assert len(calls) == 2  # noticed and rebuilt, never run
