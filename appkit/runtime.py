"""The app's runtime: which engine runs the active model, prepared in the background.

The runtime asked for is ``--runtime`` after ``--`` on the command line
(``streamlit run app.py -- --runtime keras``), else ``$SEGCORE_RUNTIME``, else ``auto``
(:func:`requested_runtime`). A fast runtime's first use converts the model, quantises it and
runs the accuracy gate (about 30 s on two cores, once per model and CPU; cached beside the
bundle). That work runs in a background thread (:class:`RuntimeBuilder`), so the first page
answers at once with Keras, and every prediction after the build uses the fast runtime. One
builder per process and model (:func:`runtime_builder`, ``st.cache_resource``): sessions that
all ask for the conversion share the one build.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

import streamlit as st

from appkit import script_runs
from segcore.inference.runtimes.base import AUTO, CHOICES, KERAS, default_runtime

log = logging.getLogger(__name__)


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
    """Opens a bundle's runtime in a background thread; meanwhile Keras serves.

    Args:
        bundle: the loaded :class:`~segcore.bundles.loading.Bundle`.
        requested: the runtime asked for (``auto``, ``keras`` or a fast one).
        opener: ``opener(bundle, requested, report)`` returning the model to predict with;
            defaults to :func:`segcore.bundles.runtime_cache.open_bundle_runtime` (tests pass
            another).
    """

    def __init__(self, bundle: Any, requested: str, opener=None) -> None:
        from segcore.bundles.runtime_cache import open_bundle_runtime
        from segcore.inference.classical import ClassicalBaseline
        from segcore.inference.runtimes.keras_runtime import keras_runtime

        self.bundle = bundle
        self.requested = requested
        self._opener = opener or open_bundle_runtime
        self._lock = threading.Lock()
        self._ready: Any = None
        self._error: str | None = None
        self._step = "waiting to start"
        self._thread: threading.Thread | None = None
        if isinstance(bundle.model, ClassicalBaseline):
            self._ready = bundle.model
            self._fallback = bundle.model
        else:
            self._fallback = keras_runtime(bundle.model)
            if requested == KERAS:
                self._ready = self._fallback

    def start(self) -> RuntimeBuilder:
        """Starts the build once (later calls do nothing); returns ``self``."""
        with self._lock:
            if self._ready is not None or self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._build, name="segcore-runtime-build", daemon=True
            )
            self._thread.start()
        return self

    def _report(self, line: str) -> None:
        with self._lock:
            self._step = line

    def _build(self) -> None:
        try:
            model = self._opener(self.bundle, self.requested, self._report)
        except Exception as exc:  # the app keeps running on Keras, and says why
            log.exception("preparing the %s runtime failed", self.requested)
            with self._lock:
                self._error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
                self._ready = self._fallback.with_notice(
                    f"preparing {self.requested} failed ({self._error}); running Keras"
                )
            return
        with self._lock:
            self._ready = model
        script_runs.request_settle()  # the compiled runtime's objects live as long

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

    def model(self) -> Any:
        """The model to predict with now: the prepared runtime once ready, else Keras."""
        with self._lock:
            return self._ready if self._ready is not None else self._fallback

    def status(self) -> str:
        """One line for the page: what runs now, and what is being prepared."""
        with self._lock:
            ready, step = self._ready, self._step
        if ready is None:
            return (
                f"**Runtime:** keras for now — preparing {self.requested} in the background "
                f"({step}); the next image after that uses it"
            )
        describe = getattr(ready, "describe", None)
        text = f"**Runtime:** {describe() if describe else 'classical (no network)'}"
        notice = getattr(ready, "notice", None)
        return text + (f". Note: {notice}" if notice else "")


@st.cache_resource(max_entries=1, show_spinner=False)
def runtime_builder(ref: str, requested: str, _bundle: Any) -> RuntimeBuilder:
    """The process's :class:`RuntimeBuilder` for model ``ref`` (started); one per process, so
    every session shares one conversion. Asks for a settle
    (:func:`appkit.script_runs.request_settle`): by the end of the run the builder this one
    replaces, and the model it held, are out of the cache and can be collected."""
    script_runs.request_settle()
    return RuntimeBuilder(_bundle, requested).start()
