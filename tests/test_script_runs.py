"""appkit.script_runs: Streamlit's end-of-run clean-up without the Keras reset, and the loaded
model exempt from the per-run garbage collection. Real script runs through AppTest."""

from __future__ import annotations

import gc
import textwrap
import weakref

import keras
import pytest
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from appkit import script_runs, state

SCRIPT = textwrap.dedent(
    """
    import keras
    import streamlit as st

    st.session_state.setdefault("runs", 0)
    st.session_state["runs"] += 1
    st.write(keras.__version__)
    """
)


@pytest.fixture
def clear_session_calls(monkeypatch) -> list[int]:
    """Counts calls of ``keras.backend.clear_session`` (what Streamlit's clean-up calls)."""
    calls: list[int] = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    return calls


def two_runs(tmp_path) -> AppTest:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    app = AppTest.from_file(str(script), default_timeout=60).run()
    app.run()
    assert not app.exception
    assert app.session_state["runs"] == 2
    return app


def test_streamlit_clears_keras_after_every_run_unless_told(
    tmp_path, monkeypatch, clear_session_calls
):
    # the control: the pinned Streamlit resets Keras at the end of each run by itself
    current = getattr(script_runner, "_clean_problem_modules", None)
    assert current is not None, "Streamlit has no _clean_problem_modules: update script_runs"
    if current is script_runs._end_of_run:  # a page run in this process replaced it
        monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runs._replaced)
    two_runs(tmp_path)
    assert len(clear_session_calls) == 2


def test_keep_keras_state_stops_the_reset(tmp_path, monkeypatch, clear_session_calls):
    monkeypatch.setattr(
        script_runner, "_clean_problem_modules", script_runner._clean_problem_modules
    )  # restored after the test
    assert script_runs.keep_keras_state()
    assert script_runs.keep_keras_state()  # idempotent
    two_runs(tmp_path)
    assert clear_session_calls == []


def test_keep_keras_state_still_closes_pyplot_figures(monkeypatch):
    closed = []

    class Pyplot:
        @staticmethod
        def close(which):
            closed.append(which)

    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", Pyplot)
    script_runs._close_pyplot_figures()
    assert closed == ["all"]


def test_keep_keras_state_without_the_hook_changes_nothing(monkeypatch, caplog):
    monkeypatch.delattr(script_runner, "_clean_problem_modules")
    monkeypatch.setattr(script_runs, "_warned", False)
    with caplog.at_level("WARNING"):
        assert not script_runs.keep_keras_state()
        assert not script_runs.keep_keras_state()
    assert not hasattr(script_runner, "_clean_problem_modules")
    assert len([r for r in caplog.records if "Keras reset" in r.getMessage()]) == 1


def tracked(obj) -> bool:
    """Whether the garbage collector's generations (not the frozen one) hold ``obj``."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture
def unfrozen(monkeypatch):
    monkeypatch.setattr(script_runs, "_settle_requested", False)
    yield
    gc.unfreeze()


class Node:
    """An object in a reference cycle: freed by the collector only (as a Keras model is)."""

    def __init__(self) -> None:
        self.self = self


def test_settle_exempts_what_lives_and_the_next_settle_collects_what_died(unfrozen):
    long_lived = [object()]
    assert tracked(long_lived)
    assert script_runs.settle_long_lived() > 0
    assert not tracked(long_lived)  # later collections skip it
    later = [object()]
    assert tracked(later)  # objects made after are collected as usual
    replaced = Node()
    probe = weakref.ref(replaced)
    script_runs.settle_long_lived()  # frozen while alive
    del replaced
    gc.collect()
    assert probe() is not None  # a frozen cycle outlives the per-run collection...
    script_runs.settle_long_lived()
    assert probe() is None  # ...until the next settle, which unfreezes first
    assert tracked(long_lived) is False


def test_settle_collects_garbage_first(unfrozen):
    cycle = Node()
    probe = weakref.ref(cycle)
    del cycle
    script_runs.settle_long_lived()
    assert probe() is None  # collected, not frozen


def test_end_of_run_settles_only_when_asked(tmp_path, monkeypatch, unfrozen):
    monkeypatch.setattr(
        script_runner, "_clean_problem_modules", script_runner._clean_problem_modules
    )  # restored after the test
    assert script_runs.keep_keras_state()
    gc.unfreeze()
    two_runs(tmp_path)
    assert gc.get_freeze_count() == 0  # nothing asked: nothing frozen
    script_runs.request_settle()
    two_runs(tmp_path)  # a real script run's end does it
    assert gc.get_freeze_count() > 0 and not script_runs._settle_requested


class FakeCard:
    model_sha256 = "0" * 64


class FakeBundle:
    """What the app's caches hold of a bundle: verified (``model`` None), or loaded by the
    runtime builder (a model in a reference cycle)."""

    card = FakeCard()
    input_size = 256

    def __init__(self, ref: str, model=None) -> None:
        self.path = f"some/folder/{ref}"
        self.model = model


def test_a_replaced_model_is_collected_at_the_end_of_the_run(monkeypatch, unfrozen):
    """The runtime builder's thread loads a model and asks for a settle: the end of the run
    exempts it. Switching models makes the new model's builder, which replaces the old one (and
    the model it held) in the cache: the end of that run collects the old model instead of
    freezing it."""
    from appkit import runtime
    from segcore.bundles import loading

    loaded = []

    def load(path):
        loaded.append(weakref.ref(model := Node()))
        return FakeBundle(path, model)

    monkeypatch.setattr(loading, "verified_bundle", lambda ref: FakeBundle(ref))
    monkeypatch.setattr(runtime, "load_keras_bundle", load)
    monkeypatch.setattr(runtime, "_warm_up", lambda model, size: None)
    monkeypatch.setattr(state.catalog, "set_active_ref", lambda ref, **_: "card")
    monkeypatch.setattr(state.access, "require_editor", lambda what: None)
    state.load_bundle_cached.clear()
    runtime.runtime_builder.clear()
    try:
        builder = state._runtime_builder(state.load_bundle_cached("some-ref"))
        assert builder.wait(30)  # the suite's runtime is keras: loaded means ready
        assert script_runs._settle_requested
        script_runs._end_of_run()
        [probe] = loaded
        assert not tracked(probe())  # the loaded model is exempt
        del builder
        assert state.switch_model("other-ref") == "card"  # loads the new model
        assert len(loaded) == 2 and probe() is not None  # not collected yet
        script_runs._end_of_run()
        assert probe() is None  # the old model was collected, not frozen
        assert not tracked(loaded[1]())
    finally:
        state.load_bundle_cached.clear()
        runtime.runtime_builder.clear()
