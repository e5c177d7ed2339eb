"""What Streamlit does after every script run, made cheap for a server that holds TensorFlow.

Streamlit ends every script run — a full page run and every fragment run, so every slider
step — with two clean-ups that assume a small process:

* **``keras.backend.clear_session()``** (``script_runner._clean_problem_modules``) whenever
  ``keras`` is imported. It runs a full garbage collection, clears TensorFlow's kernel cache and
  resets Keras's global state. It exists for apps that build a new Keras model on every run;
  this app loads a model once per process (``appkit.state.load_bundle_cached``) and trains in a
  separate process (``segcore.training.jobs``), so it only costs time — and resetting Keras under
  a model another session is running is a hazard of its own. :func:`keep_keras_state` replaces
  that step, once per process, with its other job (closing ``matplotlib.pyplot`` figures) and the
  settle below.
* **``gc.collect(2)``** (the ``runner.postScriptGC`` option, on by default): a full collection
  walks every object the interpreter tracks. With TensorFlow, Keras, OpenVINO and a model loaded
  that is about 500 000 objects and 270 ms on machine A — with the GIL held, so the server's
  event loop (an upload's HTTP request, other sessions' messages) waits too. Nearly all of them
  live as long as the process. :func:`settle_long_lived` makes every object collectable again,
  collects, and moves the survivors to the interpreter's permanent generation (``gc.freeze()``),
  which later collections skip; the per-run collection then walks only what the runs created
  (≈0 ms). Whatever loads a model or prepares a runtime asks for it (:func:`request_settle`),
  and the replaced end-of-run step does it at the end of the run: by then the run's caches
  have dropped what they replaced (Streamlit evicts an old entry only after the new one is
  made), so a model switched away from is collected, not frozen.

Measured with ``py-spy`` on the Predict page (``docs/benchmarks.md``): the two took 0.3–0.7 s of
every 256² upload's 0.8–1.0 s. ``tests/test_script_runs.py`` drives real script runs and fails
if Streamlit clears Keras again (the hook is a private Streamlit function; a version that drops
it is left unchanged, with one warning in the server log).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

_LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()
_warned = False
_settle_requested = False
_replaced: Any = None
"""Streamlit's own clean-up function, once :func:`keep_keras_state` has replaced it."""
_after_run: list[Callable[[], None]] = []
"""What :func:`call_after_run` asked to call at the end of the current run."""


def _close_pyplot_figures() -> None:
    """Streamlit's other clean-up step, kept: closes every ``matplotlib.pyplot`` figure."""
    plt: Any = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        try:
            plt.close("all")
        except Exception:
            _LOGGER.debug("could not close matplotlib figures", exc_info=True)


def _end_of_run() -> None:
    """What replaces Streamlit's end-of-run clean-up: pyplot figures closed, no Keras reset,
    :func:`settle_long_lived` when :func:`request_settle` asked for it, and what
    :func:`call_after_run` asked for. (Streamlit calls it once the browser has been told that
    the run finished.)"""
    _close_pyplot_figures()
    if _settle_requested:
        settle_long_lived()
    with _LOCK:
        callbacks = list(_after_run)
        _after_run.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _LOGGER.exception("an end-of-run callback failed")


def keep_keras_state() -> bool:
    """Replaces Streamlit's end-of-run clean-up with :func:`_end_of_run`: Keras left alone, and
    :func:`settle_long_lived` when asked (idempotent, thread-safe).

    Returns whether the replacement is in place. When the Streamlit in use has no such hook (a
    version that dropped or renamed it), nothing is changed and a warning is logged once; the
    settles asked for then never happen, so the per-run collection stays as slow as before.
    """
    global _warned, _replaced
    from streamlit.runtime.scriptrunner import script_runner

    with _LOCK:
        current = getattr(script_runner, "_clean_problem_modules", None)
        if current is _end_of_run:
            return True
        if current is None:
            if not _warned:
                _warned = True
                _LOGGER.warning(
                    "streamlit %s has no script_runner._clean_problem_modules: its per-run "
                    "Keras reset could not be switched off",
                    getattr(sys.modules.get("streamlit"), "__version__", "?"),
                )
            return False
        _replaced = current
        script_runner._clean_problem_modules = _end_of_run
        return True


def call_after_run(callback: Callable[[], None]) -> None:
    """Calls ``callback`` once, at the end of the current script run (or of another
    session's run that ends first), after the browser has been told the run finished — e.g.
    to start background work that would otherwise slow the run down. It runs in the script
    thread: keep it quick. Without the hook (:func:`keep_keras_state` returned False) it is
    never called (nor kept): callers must not depend on it."""
    with _LOCK:
        if _replaced is not None:  # else nothing would ever empty the list
            _after_run.append(callback)


def request_settle() -> None:
    """Asks for :func:`settle_long_lived` at the end of the current script run (or of the next
    one, from a background thread). Call it after creating objects that live as long as the
    process: a model loaded, a runtime prepared."""
    global _settle_requested
    _settle_requested = True


def settle_long_lived() -> int:
    """Makes every object collectable again, collects garbage, then exempts every surviving
    object from later collections; returns how many are exempt.

    Objects that become garbage in reference cycles after this (a replaced Keras model) stay
    until the next settle; objects freed by reference counting (most of them, arrays included)
    are freed as usual.
    """
    global _settle_requested
    with _LOCK:
        _settle_requested = False
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()
