"""The model a slide run predicts with: :func:`open_slide_model`, without TensorFlow when it can.

A slide run only needs the network's forward pass. With ``auto`` (the default) on a machine
where a converted runtime has passed the accuracy gate, that is the cached OpenVINO model:
:func:`~segcore.bundles.runtime_cache.cached_runtime` opens it from the bundle's runtime cache
with the card alone, so neither TensorFlow nor the Keras model is loaded (importing TensorFlow
takes seconds and hundreds of MB of memory); the app's Predict page does the same.

Anything that needs the Keras model (see :mod:`segcore.bundles.runtime_cache` for when) loads
the bundle with Keras and opens the runtime as before (:func:`open_slide_model`), which
converts, quantises and gates where needed. Either way the same runtime runs and is recorded
under the same name, so results and resumed runs do not depend on which way it was opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from segcore.bundles.loading import Bundle, load_bundle
from segcore.bundles.runtime_cache import cached_runtime, open_bundle_runtime
from segcore.inference.runtimes.base import AUTO
from segcore.inference.runtimes.selection import Report

log = logging.getLogger(__name__)

__all__ = ["open_slide_model"]


def open_slide_model(
    ref: Any,
    requested: str = AUTO,
    *,
    report: Report = log.info,
    opener: Callable[[Bundle, str], Any] | None = None,
) -> tuple[Bundle, Any]:
    """``(bundle, model)`` for :func:`~segcore.wholeslide.segment.segment_slide`: the cached
    gated runtime without Keras (:func:`cached_runtime`) when there is one, else the bundle
    loaded with Keras and its runtime opened by ``opener``.

    Args:
        ref: the bundle ref.
        requested: the runtime asked for (``auto``, ``keras``, an OpenVINO one).
        report: told of slow first-use steps (conversion, gate) on the full way.
        opener: ``(bundle, requested) -> model`` for the full way, defaults to
            :func:`~segcore.bundles.runtime_cache.open_bundle_runtime` with ``report``.

    Raises:
        ConfigError: ``requested`` is not a runtime name.
        BundleError: the bundle cannot be loaded.
    """
    found = cached_runtime(ref, requested)
    if found is not None:
        return found
    bundle = load_bundle(ref)
    if opener is None:
        return bundle, open_bundle_runtime(bundle, requested, report=report)
    return bundle, opener(bundle, requested)
