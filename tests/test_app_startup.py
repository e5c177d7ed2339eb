"""The app's model from the server's start (appkit.runtime, appkit.state.preload): the cached,
gated fast runtime without TensorFlow when there is one, else Keras, with the fast runtime's
build waiting for the first prediction.

The builder tests use stand-ins for every slow step. The subprocess test runs the real app
(AppTest, in its own process so that ``sys.modules`` is the app's alone) on the tiny bundle of
``tests/test_slide_model.py``: a real card and runtime cache, an OpenVINO IR of a tiny network,
and a ``model.keras`` that is not a Keras model — a page that reached for Keras would fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appkit import runtime
from appkit.runtime import RuntimeBuilder
from segcore.bundles.card import ModelCard
from segcore.bundles.loading import Bundle
from segcore.errors import BundleError
from segcore.inference.runtimes import openvino_runtime as ovr
from segcore.inference.runtimes.base import RuntimeModel
from tests.conftest import REPO

CARD = ModelCard(name="stand-in", threshold=0.5, input_size=64, model_sha256="0" * 64)


def stand_in(name: str) -> RuntimeModel:
    return RuntimeModel(name=name, predict=lambda batch: batch[..., 0])


def never(*args):
    raise AssertionError("not to be called")


@pytest.fixture(autouse=True)
def no_keras(monkeypatch):
    """The builder's Keras runtime, without TensorFlow: the stand-in is named ``keras``; no
    pause for the browser after the first prediction."""
    monkeypatch.setattr(runtime, "_keras", lambda model: stand_in("keras"))
    monkeypatch.setattr(runtime, "BUILD_AFTER_PREDICTION_S", 0.0)


def unloaded() -> Bundle:
    """A bundle as the app holds it: verified, not loaded."""
    return Bundle(path=Path("stand-in"), card=CARD, model=None)


def test_a_cached_runtime_serves_without_loading_keras():
    fast = stand_in("openvino-int8")
    builder = RuntimeBuilder(
        unloaded(), "auto", opener=never, loader=never, cached=lambda bundle, asked: fast
    )
    assert not builder.usable
    assert builder.model() is fast  # starts the builder and waits for it
    assert builder.wait(10) and builder.ready
    assert builder.status().startswith("**Runtime:** openvino-int8")


def test_without_one_keras_serves_and_the_build_waits_for_the_first_prediction():
    fast, opened = stand_in("openvino-int8"), []

    def opener(bundle, requested, report):
        assert bundle.model == "the Keras model"
        opened.append(requested)
        return fast

    builder = RuntimeBuilder(
        unloaded(),
        "auto",
        opener=opener,
        loader=lambda path: Bundle(path=path, card=CARD, model="the Keras model"),
        cached=lambda bundle, asked: None,
    ).start()
    assert builder.model().name == "keras"
    assert not opened and not builder.ready
    assert "keras for now" in builder.status()
    assert "starts after the first prediction" in builder.status()
    builder.prediction_done()
    assert builder.wait(10)
    assert opened == ["auto"] and builder.model() is fast


def test_a_cached_runtime_that_fails_its_first_call_gives_way_to_keras():
    def broken(batch):
        raise RuntimeError("no such device")

    fast = RuntimeModel(name="openvino-int8", predict=broken)
    builder = RuntimeBuilder(
        unloaded(),
        "auto",
        opener=lambda bundle, requested, report: stand_in("openvino"),
        loader=lambda path: Bundle(path=path, card=CARD, model="the Keras model"),
        cached=lambda bundle, asked: fast,
    )
    assert builder.model().name == "keras"
    builder.prediction_done()
    assert builder.wait(10) and builder.model().name == "openvino"  # built again


def test_keras_asked_for_never_looks_in_the_cache():
    builder = RuntimeBuilder(
        unloaded(),
        "keras",
        opener=never,
        loader=lambda path: Bundle(path=path, card=CARD, model="the Keras model"),
        cached=never,
    )
    assert builder.model().name == "keras" and builder.wait(10)


def test_a_model_that_cannot_be_loaded_is_said_at_each_prediction():
    def broken(path):
        raise BundleError("stand-in/model.keras: sha256 mismatch")

    builder = RuntimeBuilder(
        unloaded(), "auto", opener=never, loader=broken, cached=lambda bundle, asked: None
    )
    for _ in range(2):
        with pytest.raises(BundleError, match="sha256 mismatch"):
            builder.model()
    assert "sha256 mismatch" in builder.status()


FIRST_PREDICTION = """
import json, sys
from streamlit.testing.v1 import AppTest

at = AppTest.from_file(sys.argv[1], default_timeout=120).run()  # the landing page: preloads
from appkit import state

preloaded = sorted(state._PRELOADED)  # started at the end of the landing page's run
at.switch_page("pages/predict.py").run()
print(json.dumps({
    "preloaded": preloaded,
    "problems": [e.value for e in at.exception] + [e.value for e in at.error],
    "captions": [c.value for c in at.caption] + [c.value for c in at.sidebar.caption],
    "dice": [m.value for m in at.metric if m.label == "Dice"],
    "loaded": sorted(name for name in ("tensorflow", "keras") if name in sys.modules),
}))
"""


def first_prediction(bundle_folder: Path, runs: Path) -> dict:
    """:data:`FIRST_PREDICTION` run in its own process with ``bundle_folder`` the active model
    (``auto`` runtime, offline): what it printed."""
    import os

    from segcore.analysis.catalog import set_active_ref

    set_active_ref(str(bundle_folder), runs_dir=runs, load=False)
    env = {**os.environ, "SEGCORE_RUNS_DIR": str(runs), "SEGCORE_RUNTIME": "auto"}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PREDICTION, str(REPO / "app.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(ovr.openvino_version() is None, reason="OpenVINO not installed")
def test_the_first_prediction_from_a_warm_cache_never_imports_tensorflow(tmp_path):
    from tests.test_slide_model import make_bundle

    folder = make_bundle(tmp_path / "tiny")
    result = first_prediction(folder, tmp_path / "runs")
    assert result["problems"] == []
    assert result["preloaded"] == [str(folder)]
    assert result["loaded"] == []  # neither TensorFlow nor Keras in the server's process
    assert result["dice"] and all(float(value) >= 0 for value in result["dice"])
    assert any("**Runtime:** openvino (OpenVINO" in c for c in result["captions"]), result
    assert any("runtime openvino)" in c for c in result["captions"])  # the figures' runtime


def test_the_modules_imported_while_the_model_opens_all_exist():
    """``appkit.state`` imports them while waiting for the model and ignores an ImportError
    (a missing optional package must not stop the page), so a misspelt name would go
    unnoticed: each must be found."""
    import importlib.util

    from appkit.state import PAGE_MODULES

    assert PAGE_MODULES
    for name in PAGE_MODULES:
        assert importlib.util.find_spec(name) is not None, name
