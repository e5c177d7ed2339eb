"""The model a slide run predicts with: :func:`open_slide_model`, without TensorFlow when it can.

A slide run only needs the network's forward pass. With ``auto`` (the default) on a machine
where a converted runtime has passed the accuracy gate, that is the cached OpenVINO model:
:func:`cached_runtime` opens it from the bundle's runtime cache
(:mod:`segcore.bundles.runtime_cache`) with the card alone, so neither TensorFlow nor the
Keras model is loaded (importing TensorFlow takes seconds and hundreds of MB of memory).

It does so only when the cache already holds what
:func:`~segcore.inference.runtimes.selection.open_runtime` would use without building
anything: a gate record that still holds (same model, CPU, library versions, every IR it gated
unchanged on disk), the runtime it picks (``auto``) or the one named there, having passed, and
that runtime's IR intact. Anything else — ``keras``, no or a stale record, a runtime that
failed its gate or is not faster than Keras, a missing IR, the classical baseline — loads the
bundle with Keras and opens the runtime as before (:func:`open_slide_model`), which converts,
quantises and gates where needed. Either way the same runtime runs and is recorded under the
same name, so results and resumed runs do not depend on which way it was opened.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from segcore.bundles.loading import Bundle, load_bundle
from segcore.bundles.refs import resolve_bundle_ref
from segcore.bundles.runtime_cache import bundle_runtime_cache, open_bundle_runtime
from segcore.bundles.store import read_card, verify_bundle
from segcore.inference.classical import BASELINE_REF
from segcore.inference.runtimes.base import AUTO, KERAS
from segcore.inference.runtimes.selection import Report, check_runtime_name, choose

log = logging.getLogger(__name__)

__all__ = ["cached_runtime", "open_slide_model"]


def _gate_result(record: dict[str, Any], runtime: str) -> dict[str, Any] | None:
    for result in record.get("results", []):
        if isinstance(result, dict) and result.get("runtime") == runtime:
            return result
    return None


def cached_runtime(ref: Any, requested: str = AUTO) -> tuple[Bundle, Any] | None:
    """``(bundle, runtime)`` opened from the runtime cache without Keras, or None when that
    would need the Keras model (see the module docstring).

    The bundle is resolved and its ``model.keras`` checked against the card's SHA-256 (the
    cache's key), as :func:`~segcore.bundles.loading.load_bundle` does, but not loaded:
    ``bundle.model`` is None.

    Args:
        ref: the bundle ref (a folder, a name under ``weights/``, ``hf://...``).
        requested: the runtime asked for.

    Raises:
        ConfigError: ``requested`` is not a runtime name.
        BundleError: the ref does not resolve, or the bundle is incomplete or altered.
    """
    requested = check_runtime_name(requested)
    if requested == KERAS or str(ref) == BASELINE_REF:
        return None
    path = resolve_bundle_ref(ref)
    bundle = Bundle(path=path, card=verify_bundle(path, read_card(path)), model=None)
    cache = bundle_runtime_cache(bundle)
    record = None if cache is None else cache.gate_record()
    if record is None:
        return None
    name = choose(record) if requested == AUTO else requested
    result = _gate_result(record, name)
    if name == KERAS or result is None or not result.get("passed"):
        return None
    if cache.ir(name).meta() is None:
        return None
    try:
        runtime = cache.compiled(name)  # the IR is there: loaded, never built (no model)
    except Exception as exc:  # e.g. removed meanwhile: the full way rebuilds it
        log.warning("%s from the cache failed (%s); loading the Keras model", name, exc)
        return None
    log.info("%s: %s from the runtime cache, without Keras", bundle.card.name, name)
    return bundle, dataclasses.replace(runtime, gate=result, notice=None)


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
