"""appkit.gate: at most N predictions at once, and the free heap handed back after them."""

from __future__ import annotations

import platform
import sys
import threading
import time

import pytest

from appkit import gate


def run_in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_one_slot_makes_the_second_wait_and_trims_when_none_runs():
    trims = []
    one = gate.PredictionGate(1, after=lambda: trims.append("trim"))
    first_in, first_may_end, second_waits, second_ran = (threading.Event() for _ in range(4))

    def first():
        with one.slot(on_wait=pytest.fail):  # a free slot: no waiting
            first_in.set()
            first_may_end.wait()

    def second():
        with one.slot(on_wait=second_waits.set):
            second_ran.set()

    threads = [run_in_thread(first)]
    first_in.wait()
    threads.append(run_in_thread(second))
    second_waits.wait()  # told to wait, so it did not enter
    assert not second_ran.is_set() and one.running == 1 and one.waiting == 1
    first_may_end.set()
    for thread in threads:
        thread.join()
    assert second_ran.is_set() and one.running == 0 and one.waiting == 0
    assert trims == ["trim", "trim"]  # after each block: none was running when it ended


def test_two_slots_let_two_run_and_trim_once_the_last_ends():
    trims = []
    two = gate.PredictionGate(2, after=lambda: trims.append(two.running))
    with two.slot(on_wait=pytest.fail):
        with two.slot(on_wait=pytest.fail):  # another caller's slot (not reentrancy)
            assert two.running == 2
        assert trims == []  # one still runs
    assert trims == [0] and two.running == 0


def test_a_failing_block_frees_its_slot():
    one = gate.PredictionGate(1, after=None)
    with pytest.raises(RuntimeError), one.slot():
        raise RuntimeError("the model failed")
    with one.slot(on_wait=pytest.fail):
        assert one.running == 1


def test_a_gate_needs_a_slot():
    with pytest.raises(ValueError, match="at least 1 slot"):
        gate.PredictionGate(0)


@pytest.mark.parametrize(
    ("value", "cpus", "expected"),
    [(None, 2, 1), (None, 16, 8), (None, None, 1), ("3", 2, 3), ("0", 2, 1), ("two", 16, 8)],
)
def test_slots_are_half_the_cores_unless_configured(monkeypatch, value, cpus, expected):
    monkeypatch.setattr(gate.os, "cpu_count", lambda: cpus)
    if value is None:
        monkeypatch.delenv(gate.SLOTS_ENV, raising=False)
    else:
        monkeypatch.setenv(gate.SLOTS_ENV, value)
    assert gate.prediction_slots() == expected


def test_the_process_gate_is_made_once(monkeypatch):
    tuned = []
    monkeypatch.setattr(gate, "_GATE", None)
    monkeypatch.setattr(gate, "limit_heap_fragmentation", lambda: tuned.append(1))
    monkeypatch.setenv(gate.SLOTS_ENV, "2")
    assert gate.prediction_gate() is gate.prediction_gate()
    assert gate.prediction_gate().slots == 2 and tuned == [1]
    with gate.prediction_slot():
        assert gate.prediction_gate().running == 1


def test_the_allocator_calls_are_no_ops_without_glibc(monkeypatch):
    monkeypatch.setattr(gate, "_MALLOC_TRIM", None)
    monkeypatch.setattr(gate, "_MALLOPT", None)
    assert gate.release_free_memory() is False
    assert gate.limit_heap_fragmentation() is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc_trim and mallopt",
)
def test_the_allocator_calls_work_on_glibc():
    assert gate.release_free_memory() is True
    assert gate.limit_heap_fragmentation() is True  # what the app's server process does


def _slow_stores(monkeypatch, state) -> None:
    """Stores that take 0.2 s to put: a result stored after the slot is given up would let the
    waiting session in first (the race these tests failed on about 1 run in 10)."""
    from appkit.caches import AnalysisStore

    class SlowStore(AnalysisStore):
        def put(self, key, value):
            time.sleep(0.2)
            return super().put(key, value)

    analyses, results = SlowStore(1 << 30), SlowStore(1 << 30)
    monkeypatch.setattr(state, "analysis_store", lambda: analyses)
    monkeypatch.setattr(state, "result_store", lambda: results)


def _one_then_another(session, started: threading.Event, release: threading.Event) -> None:
    """Runs ``session`` in a thread until it predicts, a second one until it waits for the
    slot, then lets the first finish and waits for both."""
    first = threading.Thread(target=session)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=session)
    second.start()
    while gate.prediction_gate().waiting == 0:  # the second waits for the slot
        time.sleep(0.01)
    release.set()
    first.join(10)
    second.join(10)


def test_two_sessions_evaluating_the_same_split_run_it_once(monkeypatch, tmp_path):
    """The second Evaluate waits for the gate, then finds the first one's result instead of
    evaluating the split again."""
    import types

    from appkit import state
    from segcore.evaluation import evaluate as evaluation

    monkeypatch.setattr(gate, "_GATE", gate.PredictionGate(1, after=None))
    _slow_stores(monkeypatch, state)
    started, release, calls = threading.Event(), threading.Event(), []

    def slow_evaluate(model, samples, *args, **kwargs):
        calls.append(model)
        started.set()
        release.wait(10)
        return "result"

    monkeypatch.setattr(evaluation, "evaluate", slow_evaluate)
    bundle = types.SimpleNamespace(
        path=None, card=types.SimpleNamespace(name="baseline"), model=object(),
        preprocess=None, input_size=256, pixel_size=None, instances=None,
    )  # fmt: skip
    splits = types.SimpleNamespace(root=tmp_path, split=lambda name: name)
    results = []

    def session() -> None:
        results.append(state.split_evaluation(bundle, splits, "test", 0.5, run=True))

    _one_then_another(session, started, release)
    assert results == ["result", "result"]
    assert len(calls) == 1


def test_two_sessions_uploading_the_same_image_predict_it_once(monkeypatch):
    """The second upload of the same bytes waits for the gate, then finds the first one's
    analysis instead of predicting again; each session keeps its own name."""
    import types

    import numpy as np

    from appkit import state
    from segcore.analysis import analyse
    from segcore.data.preprocessing import PreprocessConfig

    monkeypatch.setattr(gate, "_GATE", gate.PredictionGate(1, after=None))
    _slow_stores(monkeypatch, state)
    started, release, calls = threading.Event(), threading.Event(), []
    real_analyse = analyse.analyse_image

    def slow_analyse(model, image, *args, **kwargs):
        calls.append(model)
        started.set()
        release.wait(10)
        return real_analyse(model, image, *args, **kwargs)

    monkeypatch.setattr(analyse, "analyse_image", slow_analyse)
    model = lambda batch: np.full(batch.shape[:3], 0.7, np.float32)  # noqa: E731
    bundle = types.SimpleNamespace(
        path=None, card=types.SimpleNamespace(name="stand-in", model_sha256="ab" * 32),
        model=model, preprocess=PreprocessConfig(), input_size=256, pixel_size=None,
        instances=None, threshold=0.5,
    )  # fmt: skip
    monkeypatch.setattr(state, "predicting_model", lambda _bundle: model)
    image = np.full((64, 64, 3), 200, np.uint8)
    names = []

    def session() -> None:
        name = f"upload-{threading.get_ident()}.png"
        key = ("upload", "same-bytes", "")
        found = state.analysis_for(bundle, key, name, lambda: (image, None))
        names.append((name, found.name))

    _one_then_another(session, started, release)
    assert len(calls) == 1
    assert len(names) == 2 and all(asked == shown for asked, shown in names)
