"""The model of a slide run (segcore.wholeslide.model): the gated runtime from the cache
without TensorFlow, and every case that needs the Keras model instead.

The bundle here has a real card and runtime cache but no real Keras model: ``model.keras`` is a
few stray bytes (with their SHA-256 in the card) and the cached OpenVINO IR is a tiny network
built with OpenVINO's own operations. A run that reached for Keras would fail to load it, so a
run that succeeds did not.

Only the subprocess test compiles the IR: OpenVINO 2026.4 leaves a process that compiled two
models crashing (SIGSEGV) on the next signal it handles, which would break the Ctrl-C and
SIGTERM tests that run later in the same pytest process. The tests here stand in for the
compilation (:func:`stand_in_compile`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devtools.slides import write_aperio_tiff
from segcore.bundles.card import ModelCard
from segcore.bundles.loading import Bundle
from segcore.bundles.runtime_cache import bundle_runtime_cache, cached_runtime
from segcore.inference.runtimes import openvino_runtime as ovr
from segcore.inference.runtimes.base import RuntimeModel
from segcore.inference.runtimes.selection import RuntimeCache
from segcore.wholeslide import model as slide_model
from segcore.wholeslide.model import open_slide_model
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(ovr.openvino_version() is None, reason="OpenVINO not installed")


def tiny_network():
    """An OpenVINO model ``[-1, -1, -1, 3] -> [-1, -1, -1, 1]``: the sigmoid of the mean
    channel's darkness (dark pixels are nuclei)."""
    import openvino as ov
    from openvino import opset13 as ops

    image = ops.parameter([-1, -1, -1, 3], np.float32, name="image")
    mean = ops.reduce_mean(image, np.array([3], np.int64), keep_dims=True)
    logit = ops.multiply(ops.subtract(ops.constant(np.float32(0.55)), mean), np.float32(20))
    return ov.Model([ops.sigmoid(logit)], [image], "tiny")


def make_bundle(folder: Path, *, gate: dict | None = None, runtime: str = "openvino") -> Path:
    """A bundle folder with a stand-in ``model.keras``, a cached IR of :func:`tiny_network`
    for ``runtime`` and a gate record that it passed (``gate`` overrides its result)."""
    folder.mkdir(parents=True)
    blob = b"not a keras model: loading it must never be needed"
    (folder / "model.keras").write_bytes(blob)
    card = ModelCard(
        name="tiny-openvino",
        threshold=0.5,
        pixel_size=0.25,
        input_size=256,
        model_sha256=hashlib.sha256(blob).hexdigest(),
    )
    (folder / "card.json").write_text(json.dumps(card.to_dict()))
    cache = bundle_runtime_cache(Bundle(path=folder, card=card, model=None))
    cache.ir(runtime).load_or_build(tiny_network)
    result = {"runtime": runtime, "passed": True, "reason": "test", "time_ratio": 0.5}
    record = {
        **cache._expected_record(),
        "ir": cache._ir_hashes([runtime]),
        "results": [{**result, **(gate or {})}],
        "failed": {},
    }
    cache.gate_path().write_text(json.dumps(record))
    assert cache.gate_record() is not None
    return folder


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(autouse=True)
def stand_in_compile(monkeypatch) -> list[str]:
    """``RuntimeCache.compiled`` without compiling (see the module docstring): the runtime's
    name once its IR is found intact; the runtimes asked for are listed."""
    asked = []

    def compiled(self, runtime, report=None):
        asked.append(runtime)
        assert self.ir(runtime).load() is not None, "the IR would have been built"
        return RuntimeModel(name=runtime, predict=lambda batch: batch[..., 0], any_size=True)

    monkeypatch.setattr(RuntimeCache, "compiled", compiled)
    return asked


def test_a_gated_cached_runtime_opens_without_the_keras_model(bundle_dir, stand_in_compile):
    bundle, model = cached_runtime(bundle_dir, "auto")
    assert bundle.model is None and bundle.card.name == "tiny-openvino"
    assert model.name == "openvino" and model.gate["passed"] and model.notice is None
    named = cached_runtime(bundle_dir, "openvino")
    assert named is not None and named[1].name == "openvino"
    assert stand_in_compile == ["openvino", "openvino"]


def test_a_runtime_that_fails_to_compile_needs_the_keras_model(bundle_dir, monkeypatch):
    def broken(self, runtime, report=None):
        raise RuntimeError("no such device")

    monkeypatch.setattr(RuntimeCache, "compiled", broken)
    assert cached_runtime(bundle_dir, "auto") is None


def test_open_slide_model_takes_the_cache_first(bundle_dir, monkeypatch):
    def no_keras(*args, **kwargs):
        raise AssertionError("the Keras model was loaded")

    monkeypatch.setattr(slide_model, "load_bundle", no_keras)
    bundle, model = open_slide_model(bundle_dir, "auto", opener=no_keras)
    assert model.name == "openvino" and bundle.model is None


@pytest.mark.parametrize(
    ("requested", "gate", "change"),
    [
        ("keras", None, None),  # Keras asked for
        ("openvino-int8", None, None),  # a runtime the record did not gate
        ("auto", {"passed": False, "reason": "masks differ"}, None),  # failed its gate
        ("auto", {"time_ratio": 1.2}, None),  # slower than Keras: auto picks Keras
        ("auto", None, "gate"),  # no gate record on this CPU
        ("auto", None, "ir"),  # the gated IR changed on disk
    ],
)
def test_anything_else_needs_the_keras_model(tmp_path, requested, gate, change):
    folder = make_bundle(tmp_path / "bundle", gate=gate)
    cache_folder = next((folder / ".runtimes").iterdir())
    if change == "gate":
        for path in cache_folder.glob("gate-*.json"):
            path.unlink()
    elif change == "ir":
        weights = cache_folder / "openvino-float32" / "model.bin"
        weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert cached_runtime(folder, requested) is None
    assert cached_runtime("baseline", "auto") is None


def test_an_altered_bundle_is_refused_before_the_cache_is_used(tmp_path):
    from segcore.errors import BundleError

    folder = make_bundle(tmp_path / "bundle")
    (folder / "model.keras").write_bytes(b"replaced")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        cached_runtime(folder, "auto")


SLIDE_RUN = """
import json, sys
from segcore.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "loaded": sorted(
    name for name in ("tensorflow", "keras") if name in sys.modules)}))
"""


@pytest.mark.slow
def test_slide_run_with_a_cached_gated_runtime_never_imports_tensorflow(bundle_dir, tmp_path):
    """The real thing, in its own process: the IR compiled and run, the outputs written."""
    from tests.test_wholeslide import synthetic_rgb

    slide = write_aperio_tiff(tmp_path / "slide.svs", synthetic_rgb())
    out = tmp_path / "run"
    argv = ["slide", "run", str(slide), "--out", str(out), "--model", str(bundle_dir)]
    argv += ["--runtime", "auto"]
    done = subprocess.run(
        [sys.executable, "-c", SLIDE_RUN, *argv], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 0, "loaded": []}
    assert "runtime: openvino (OpenVINO" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "completed" and summary["runtime"] == "openvino"
    assert summary["nuclei"] > 0
