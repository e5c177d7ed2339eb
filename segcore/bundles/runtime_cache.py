"""A bundle's runtime: where its converted models are cached, and opening the one asked for.

:func:`runtime_cache_dir` is the bundle's own ``.runtimes/`` folder
(:data:`~segcore.bundles.store.RUNTIME_CACHE_DIR`) when the bundle folder is writable and not a
Hugging Face cache snapshot; otherwise ``$SEGCORE_RUNTIME_CACHE``, else
``~/.cache/segcore/runtimes``. Either way the model's SHA-256 keys the entries, so bundles
never share or confuse converted models.

:func:`open_bundle_runtime` hands :func:`segcore.inference.runtimes.open_runtime` the bundle's
model, hash, preprocessing, threshold and tile size. The classical baseline has no network and
runs as it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from segcore.bundles.hub import hub_cache_dir
from segcore.bundles.loading import Bundle
from segcore.bundles.store import RUNTIME_CACHE_DIR
from segcore.inference.classical import ClassicalBaseline
from segcore.inference.runtimes import AUTO, open_runtime
from segcore.inference.runtimes.selection import Report

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
        from segcore.inference.runtimes import check_runtime_name

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
