"""A bundle's runtime: where its converted models are cached, and opening the one asked for.

:func:`runtime_cache_dir` is the bundle's own ``.runtimes/`` folder
(:data:`~segcore.bundles.store.RUNTIME_CACHE_DIR`) when the bundle folder is writable and not a
Hugging Face cache snapshot; otherwise ``$SEGCORE_RUNTIME_CACHE``, else
``~/.cache/segcore/runtimes``. Either way the model's SHA-256 keys the entries, so bundles
never share or confuse converted models.

:func:`open_bundle_runtime` hands :func:`segcore.inference.runtimes.open_runtime` the bundle's
model, hash, preprocessing, threshold and tile size. The classical baseline has no network and
runs as it is.

:func:`cached_runtime` (and :func:`open_cached_runtime`, for a bundle already verified) opens
the runtime from the cache **without TensorFlow or the Keras model** — importing TensorFlow and
loading the model take seconds and hundreds of MB — when the cache already holds what
:func:`~segcore.inference.runtimes.selection.open_runtime` would use without building anything:
a gate record that still holds (same model, CPU, library versions, every IR it gated unchanged
on disk) — or, when there is none, the runtime the bundle ships in ``prepared/``, gated here
against the Keras masks shipped with it (:func:`segcore.bundles.prepared.seed_cache`) — the
runtime it picks (``auto``) or the one named there, having passed, and that runtime's IR
intact. Anything else — ``keras``, no or a stale record, a runtime that failed its
gate or is not faster than Keras, a missing IR, the classical baseline — gives ``None``: the
caller loads the bundle with Keras and opens the runtime with :func:`open_bundle_runtime`, which
converts, quantises and gates where needed. Either way the same runtime runs under the same
name. Slide runs (:mod:`segcore.wholeslide.model`) and the app (``appkit.runtime``) use it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from segcore.bundles.hub import hub_cache_dir
from segcore.bundles.loading import Bundle, verified_bundle
from segcore.bundles.prepared import seed_cache
from segcore.bundles.store import RUNTIME_CACHE_DIR
from segcore.inference.classical import BASELINE_REF, ClassicalBaseline
from segcore.inference.runtimes import AUTO, open_runtime
from segcore.inference.runtimes.base import KERAS
from segcore.inference.runtimes.selection import Report, check_runtime_name, choose, gate_result

log = logging.getLogger(__name__)

RUNTIME_CACHE_ENV = "SEGCORE_RUNTIME_CACHE"
"""Environment variable naming the converted-model cache for bundles that cannot hold one."""


def shared_cache_dir() -> Path:
    """``$SEGCORE_RUNTIME_CACHE``, else ``~/.cache/segcore/runtimes``."""
    configured = os.environ.get(RUNTIME_CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "segcore" / "runtimes"


def runtime_cache_dir(bundle: Bundle) -> Path | None:
    """Where ``bundle``'s converted models are cached (see the module docstring); ``None`` for
    the classical baseline."""
    if bundle.path is None:
        return None
    folder = Path(bundle.path)
    try:
        in_hub_cache = folder.resolve().is_relative_to(hub_cache_dir().resolve())
    except OSError:
        in_hub_cache = True
    if not in_hub_cache and os.access(folder, os.W_OK):
        return folder / RUNTIME_CACHE_DIR
    return shared_cache_dir()


def open_bundle_runtime(bundle: Bundle, requested: str = AUTO, report: Report = log.info) -> Any:
    """The model to predict with: ``bundle``'s network in the ``requested`` runtime (a
    :class:`~segcore.inference.runtimes.base.RuntimeModel`; see
    :func:`~segcore.inference.runtimes.selection.open_runtime` for ``auto``, the fallbacks
    and their notices), or the classical baseline itself.

    Raises:
        ConfigError: ``requested`` is not a runtime name.
    """
    if isinstance(bundle.model, ClassicalBaseline):
        check_runtime_name(requested)
        return bundle.model
    return open_runtime(
        bundle.model,
        requested,
        model_sha256=bundle.card.model_sha256,
        cache_dir=runtime_cache_dir(bundle),
        preprocess=bundle.preprocess,
        threshold=bundle.threshold,
        tile_size=bundle.input_size,
        report=report,
    )


def bundle_runtime_cache(bundle: Bundle):
    """The :class:`~segcore.inference.runtimes.selection.RuntimeCache` of ``bundle``'s network
    (its hash, cache folder, preprocessing, threshold and tile size), or ``None`` for the
    classical baseline. ``bundle.model`` may be ``None`` when only records are read."""
    from segcore.inference.runtimes.selection import RuntimeCache

    cache_dir = runtime_cache_dir(bundle)
    if cache_dir is None or not bundle.card.model_sha256:
        return None
    return RuntimeCache(
        bundle.model,
        model_sha256=bundle.card.model_sha256,
        cache_dir=cache_dir,
        preprocess=bundle.preprocess,
        threshold=bundle.threshold,
        tile_size=bundle.input_size,
    )


def gate_record(folder, card) -> dict | None:
    """The accuracy-gate record of the bundle at ``folder`` (with ``card``) on this CPU, if one
    holds (:meth:`~segcore.inference.runtimes.selection.RuntimeCache.gate_record`); reads files
    only — no model is loaded, so the Models page can show it."""
    cache = bundle_runtime_cache(Bundle(path=Path(folder), card=card, model=None))
    return None if cache is None else cache.gate_record()


def open_cached_runtime(bundle: Bundle, requested: str = AUTO) -> Any | None:
    """``bundle``'s runtime opened from the runtime cache without Keras, or ``None`` when that
    would need the Keras model (see the module docstring). ``bundle`` is verified already
    (:func:`~segcore.bundles.loading.verified_bundle`); its ``model`` is not used.

    Raises:
        ConfigError: ``requested`` is not a runtime name.
    """
    requested = check_runtime_name(requested)
    if requested == KERAS or bundle.path is None:
        return None
    cache = bundle_runtime_cache(bundle)
    if cache is None:
        return None
    record, gated = cache.gate_record(), None
    if record is None:
        record, gated = seed_cache(bundle, cache)
    if record is None:
        return None
    name = choose(record) if requested == AUTO else requested
    result = gate_result(record, name)
    if name == KERAS or result is None or not result.get("passed"):
        return None
    if gated is not None and gated.name == name:
        return dataclasses.replace(gated, gate=result, notice=None)  # compiled for its gate
    if cache.ir(name).meta() is None:
        return None
    try:
        runtime = cache.compiled(name)  # the IR is there: loaded, never built (no model)
    except Exception as exc:  # e.g. removed meanwhile: the full way rebuilds it
        log.warning("%s from the cache failed (%s); loading the Keras model", name, exc)
        return None
    log.info("%s: %s from the runtime cache, without Keras", bundle.card.name, name)
    return dataclasses.replace(runtime, gate=result, notice=None)


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
    bundle = verified_bundle(ref)
    runtime = open_cached_runtime(bundle, requested)
    return None if runtime is None else (bundle, runtime)
