"""appkit.script_runs: Streamlit's end-of-run clean-up without the Keras reset, and the loaded
model exempt from the per-run garbage collection. Real script runs through AppTest."""

from __future__ import annotations

import gc
import textwrap

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
    if current is script_runs._close_pyplot_figures:  # a page run in this process replaced it
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
def unfrozen():
    yield
    gc.unfreeze()


def test_settle_exempts_what_lives_and_release_undoes_it(unfrozen):
    long_lived = [object()]
    assert tracked(long_lived)
    assert script_runs.settle_long_lived() > 0
    assert not tracked(long_lived)  # later collections skip it
    later = [object()]
    assert tracked(later)  # objects made after are collected as usual
    script_runs.release_long_lived()
    assert gc.get_freeze_count() == 0
    assert tracked(long_lived)


def test_settle_collects_garbage_first(unfrozen):
    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    probe = __import__("weakref").ref(cycle)
    del cycle
    script_runs.settle_long_lived()
    assert probe() is None  # collected, not frozen


def test_loading_a_model_settles_and_switching_releases(monkeypatch, unfrozen):
    from segcore.bundles import loading

    loaded = [object()]
    monkeypatch.setattr(loading, "load_bundle", lambda ref: loaded)
    monkeypatch.setattr(state.catalog, "set_active_ref", lambda ref: "card")
    monkeypatch.setattr(state.access, "require_editor", lambda what: None)
    state.load_bundle_cached.clear()
    try:
        assert state.load_bundle_cached("some-ref") is loaded
        assert gc.get_freeze_count() > 0 and not tracked(loaded)
        assert state.switch_model("other-ref") == "card"
        assert gc.get_freeze_count() == 0 and tracked(loaded)
    finally:
        state.load_bundle_cached.clear()
