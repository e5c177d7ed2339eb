"""The app's runtime: which engine runs the active model, loaded and prepared in the background.

The runtime asked for is ``--runtime`` after ``--`` on the command line
(``streamlit run app.py -- --runtime keras``), else ``$SEGCORE_RUNTIME``, else ``auto``
(:func:`requested_runtime`). Everything slow happens in one background thread per process and
model (:class:`RuntimeBuilder`, :func:`runtime_builder`, ``st.cache_resource``), started at
the end of the server's first page run (:func:`appkit.state.preload`) or by the first page
that needs the model, so the first visit to Predict finds the model ready or on its way:

* **a warm runtime cache** — a fast runtime of this model gated on this CPU is cached
  (:func:`segcore.bundles.runtime_cache.open_cached_runtime`): it is opened from the cache
  alone, in about a second; neither TensorFlow nor the Keras model is loaded;
* **otherwise** Keras loads the model (importing TensorFlow: seconds), traces its call once at
  the tile size, and predicts; the fast runtime's first use — conversion, int8 quantisation and
  the accuracy gate, about 30 s on two cores, once per model and CPU, cached beside the
  bundle — starts :data:`BUILD_AFTER_PREDICTION_S` after the page that showed the first
  prediction has been sent (or :data:`BUILD_DELAY_S` after Keras is ready), so it slows neither
  that prediction nor its page; every prediction after the build uses it.

Sessions that all ask share the one load and the one build.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

import numpy as np
import streamlit as st

from appkit import script_runs
from segcore.errors import BundleError, SegcoreError
from segcore.inference.runtimes.base import AUTO, CHOICES, KERAS, default_runtime

log = logging.getLogger(__name__)

PRELOAD_DELAY_S = 1.0
"""How long the load started after the server's first page (:func:`appkit.state.preload`)
waits before it begins, unless a page asks for the model sooner: the browser is still drawing
that page, and the load's imports hold the GIL the server's event loop needs (begun at once,
the landing page took 0.2–0.3 s longer)."""

BUILD_DELAY_S = 30.0
"""How long after Keras is ready the fast runtime's build waits for the first prediction to be
shown before it starts anyway. The build (conversion, quantisation, gate) takes both cores and
the GIL for tens of seconds: started at once, it made the first visit to Predict on a fresh
clone 7 s slower (the page's nuclei and pictures, and the browser drawing them, waited)."""

BUILD_AFTER_PREDICTION_S = 3.0
"""How long the build waits after the run that showed the first prediction has ended: the
browser draws that page in about 0.7 s on two quiet cores, 3.7 s when the build competes."""


def requested_runtime(argv: list[str] | None = None) -> tuple[str, str | None]:
    """The runtime the app was asked for, and a warning if the request was not understood.

    Args:
        argv: the script's arguments (default ``sys.argv[1:]``: what follows ``--`` in
            ``streamlit run app.py -- --runtime NAME``).

    Returns:
        ``(name, warning)``: ``name`` is one of :data:`~segcore.inference.runtimes.base.CHOICES`;
        an unknown name gives ``auto`` and a warning saying so.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runtime")
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    asked = known.runtime or default_runtime()
    if asked in CHOICES:
        return asked, None
    return AUTO, f"Unknown runtime {asked!r} (choose one of {', '.join(CHOICES)}); using auto."


class RuntimeBuilder:
    """Loads a bundle's model and opens its runtime in a background thread.

    With a loaded Keras model (``bundle.model``), Keras serves at once while the runtime is
    prepared. With a bundle verified but not loaded (``bundle.model`` None, as the app holds
    it: :func:`appkit.state.load_bundle_cached`), the thread first opens the cached, gated
    fast runtime without Keras if there is one (``cached``); else it loads the Keras model
    (``loader``), which then serves, and prepares the runtime after the first prediction
    (:meth:`prediction_done`) or :data:`BUILD_DELAY_S`. :meth:`model` waits until something
    can predict.

    Args:
        bundle: the :class:`~segcore.bundles.loading.Bundle`.
        requested: the runtime asked for (``auto``, ``keras`` or a fast one).
        opener: ``opener(bundle, requested, report)`` returning the model to predict with;
            defaults to :func:`segcore.bundles.runtime_cache.open_bundle_runtime` (tests pass
            another).
        loader: ``loader(path)`` returning the bundle loaded with Keras (defaults to
            :func:`load_keras_bundle`).
        cached: ``cached(bundle, requested)`` returning the runtime opened from the cache
            without Keras, or None (defaults to
            :func:`segcore.bundles.runtime_cache.open_cached_runtime`).
    """

    def __init__(self, bundle: Any, requested: str, opener=None, loader=None, cached=None) -> None:
        from segcore.bundles.runtime_cache import open_bundle_runtime, open_cached_runtime
        from segcore.inference.classical import ClassicalBaseline

        self.bundle = bundle
        self.requested = requested
        self._opener = opener or open_bundle_runtime
        self._loader = loader or load_keras_bundle
        self._cached = cached or open_cached_runtime
        self._lock = threading.Lock()
        self._usable = threading.Event()
        self._predicted = threading.Event()
        self._wanted = threading.Event()
        self._ready: Any = None
        self._fallback: Any = None
        self._failure: SegcoreError | None = None
        self._error: str | None = None
        self._step = "waiting to start"
        self._thread: threading.Thread | None = None
        if isinstance(bundle.model, ClassicalBaseline):
            self._ready = self._fallback = bundle.model
        elif bundle.model is not None:
            self._fallback = _keras(bundle.model)
            if requested == KERAS:
                self._ready = self._fallback
        if self._fallback is not None:
            self._usable.set()

    def start(self, delay: float = 0.0) -> RuntimeBuilder:
        """Starts the load and build once (later calls do nothing); returns ``self``.

        Args:
            delay: seconds the thread waits before it begins, unless :meth:`model` asks for
                the model sooner (:func:`runtime_builder`'s ``_delay``).
        """
        with self._lock:
            if self._ready is not None or self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._build, args=(delay,), name="segcore-runtime-build", daemon=True
            )
            self._thread.start()
        return self

    def _report(self, line: str) -> None:
        with self._lock:
            self._step = line

    def _load(self) -> Any:
        """The bundle loaded with Keras (this builder's when it holds the model); None when
        the cached runtime was opened instead."""
        if self.bundle.model is not None:
            return self.bundle
        if self.requested != KERAS:
            self._report("opening the cached runtime")
            runtime = self._cached(self.bundle, self.requested)
            if runtime is not None and _warmed_up(runtime, self.bundle.input_size):
                with self._lock:
                    self._ready = runtime
                self._usable.set()
                return None
        self._report("loading the Keras model (TensorFlow)")
        loaded = self._loader(self.bundle.path)
        fallback = _keras(loaded.model)
        self._report("tracing the Keras model")
        _warm_up(fallback, self.bundle.input_size)  # traced once here, not in the first call
        with self._lock:
            self._fallback = fallback
            if self.requested == KERAS:
                self._ready = fallback
            else:
                self._step = "starts after the first prediction"
        self._usable.set()
        if self.requested != KERAS and self._predicted.wait(BUILD_DELAY_S):
            time.sleep(BUILD_AFTER_PREDICTION_S)  # the browser draws the first prediction
        return loaded

    def _build(self, delay: float = 0.0) -> None:
        if delay > 0:
            self._wanted.wait(delay)
        loaded = None
        try:
            loaded = self._load()
            if loaded is None or self.requested == KERAS:
                return
            model = self._opener(loaded, self.requested, self._report)
        except Exception as exc:  # the app keeps running on Keras, and says why
            log.exception("preparing the %s runtime failed", self.requested)
            with self._lock:
                self._error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
                if self._fallback is None:  # nothing loaded: predictions say why
                    self._failure = (
                        exc
                        if isinstance(exc, SegcoreError)
                        else BundleError(f"the model could not be loaded ({self._error})")
                    )
                else:
                    self._ready = self._fallback.with_notice(
                        f"preparing {self.requested} failed ({self._error}); running Keras"
                    )
            self._usable.set()
            return
        finally:
            script_runs.request_settle()  # the loaded model and runtimes live as long
        with self._lock:
            self._ready = model

    def prediction_done(self) -> None:
        """Says a prediction has been made: a build waiting for it starts now."""
        self._predicted.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the build; True when it has finished."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        """Whether the requested runtime (or its fallback, with a notice) is in place."""
        with self._lock:
            return self._ready is not None

    @property
    def usable(self) -> bool:
        """Whether :meth:`model` answers at once (a model is loaded, or loading it failed)."""
        return self._usable.is_set()

    def model(self) -> Any:
        """The model to predict with now: the prepared runtime once ready, else Keras; waits
        while neither is loaded yet (starting the load if needed).

        Raises:
            SegcoreError: the model could not be loaded (a :class:`BundleError` for anything
                that is not a segcore error).
        """
        if not self._usable.is_set():
            self._wanted.set()
            self.start()
            self._usable.wait()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            return self._ready if self._ready is not None else self._fallback

    def status(self) -> str:
        """One line for the page: what runs now, and what is being prepared."""
        with self._lock:
            ready, fallback, step, failure = self._ready, self._fallback, self._step, self._failure
        if failure is not None:
            return f"**Runtime:** none — {self._error}"
        if ready is None and fallback is None:
            return f"**Runtime:** loading the model ({step})…"
        if ready is None:
            return (
                f"**Runtime:** keras for now — preparing {self.requested} in the background "
                f"({step}); the next image after that uses it"
            )
        describe = getattr(ready, "describe", None)
        text = f"**Runtime:** {describe() if describe else 'classical (no network)'}"
        notice = getattr(ready, "notice", None)
        return text + (f". Note: {notice}" if notice else "")


def _keras(model: Any) -> Any:
    from segcore.inference.runtimes.keras_runtime import keras_runtime

    return keras_runtime(model)


def _warm_up(runtime: Any, tile_size: int) -> None:
    """One call on a blank tile, so that the first prediction neither traces (Keras) nor sets
    up its first inference request (OpenVINO)."""
    runtime(np.zeros((1, tile_size, tile_size, 3), np.float32))


def _warmed_up(runtime: Any, tile_size: int) -> bool:
    """:func:`_warm_up`, False (logged) when the runtime fails: Keras is loaded instead."""
    try:
        _warm_up(runtime, tile_size)
    except Exception:
        log.exception("%s from the cache failed its first call; loading the Keras model", runtime)
        return False
    return True


def load_keras_bundle(path: Any) -> Any:
    """The bundle at ``path`` loaded with Keras, GPU memory growth on first (so the app's
    model takes only the GPU memory it uses and a training started from the Train page can
    have the rest)."""
    from segcore.bundles.loading import load_bundle
    from segcore.training.devices import configure_gpus

    configure_gpus()
    return load_bundle(path)


@st.cache_resource(max_entries=1, show_spinner=False)
def runtime_builder(ref: str, requested: str, _bundle: Any, _delay: float = 0.0) -> RuntimeBuilder:
    """The process's :class:`RuntimeBuilder` for model ``ref`` (started, after ``_delay``
    seconds unless a page asks for the model sooner); one per process, so every session shares
    one load and one conversion. Asks for a settle (:func:`appkit.script_runs.request_settle`):
    by the end of the run the builder this one replaces, and the model it held, are out of the
    cache and can be collected."""
    script_runs.request_settle()
    return RuntimeBuilder(_bundle, requested).start(_delay)
