"""The app's byte-bounded caches: an LRU store measured in bytes, and its budget.

:class:`AnalysisStore` keeps values by key, measures each (:func:`approximate_nbytes`: the
``nbytes`` of an :class:`~segcore.analysis.analyse.ImageAnalysis`, or of the arrays inside an
evaluation result) and drops the least recently used while the total is over its budget.
:func:`appkit.state.analysis_store` and :func:`appkit.state.result_store` are the process's two
stores; together they hold at most :func:`cache_bytes`, set by the server's environment variable
:data:`CACHE_MB_ENV`.

No Streamlit here: the stores are plain thread-safe objects (sessions run in threads).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

CACHE_MB_ENV = "SEGCORE_CACHE_MB"
"""Environment variable: the byte budget of the process's analysis and result stores, in MiB."""

DEFAULT_CACHE_MB = 512
"""The budget without :data:`CACHE_MB_ENV`: 512 MiB, about seventeen 1000×1000 uploads explored
(28 MB each once the page has shown the baseline, the nuclei and a mask; about 40 MB with
ground truth) — the current image of every session when ten use the server at once. The soak
benchmark (10 sessions × 10 rounds of new 1000² uploads) fills it in round 2 and stays flat
after; 1024 keeps twice as many and levels off two rounds later, about 400 MB higher. An
8000×8000 scan takes more than the budget alone; it is kept while it is the latest (see
:class:`AnalysisStore`)."""

MAX_STORED = 64
"""Most entries a store keeps, whatever their size."""

log = logging.getLogger(__name__)


def cache_bytes() -> int:
    """The byte budget of the analysis and result stores: ``$SEGCORE_CACHE_MB`` MiB, else
    :data:`DEFAULT_CACHE_MB` (also when the variable is not a number, with a warning)."""
    text = os.environ.get(CACHE_MB_ENV, "").strip()
    megabytes = float(DEFAULT_CACHE_MB)
    if text:
        try:
            megabytes = max(0.0, float(text))
        except ValueError:
            log.warning("%s=%r is not a number of MiB; using %d", CACHE_MB_ENV, text, megabytes)
    return int(megabytes * 2**20)


def approximate_nbytes(value: Any) -> int:
    """About how many bytes ``value`` holds: its ``nbytes`` when it has one (NumPy arrays,
    :class:`~segcore.analysis.analyse.ImageAnalysis`), else the sum over a dataclass's fields or
    a dict's, list's or tuple's items, else ``sys.getsizeof``."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, field.name) for field in dataclasses.fields(value)]
        return sys.getsizeof(value) + sum(approximate_nbytes(item) for item in items)
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
        return sys.getsizeof(value) + sum(approximate_nbytes(item) for item in items)
    if isinstance(value, (list, tuple)):
        return sys.getsizeof(value) + sum(approximate_nbytes(item) for item in value)
    return sys.getsizeof(value)


class AnalysisStore:
    """A thread-safe LRU store bounded by bytes (and by entries).

    Every value is measured again with ``sizeof`` whenever any value is put or read: an
    analysis's caches grow as it is explored *after* it was stored (the classical baseline, the
    nuclei's label image, the last mask: a 1000×1000 upload explored once holds about 28 MB,
    three times what it held when put), so sizes taken only at ``put`` let the store hold three
    times its budget. While the total is over ``max_bytes``, or there are more than
    ``max_items`` entries, the least recently used are dropped — except the most recently used
    one, which is kept even if alone it is over ``max_bytes``: a session exploring a huge image
    would otherwise run the model again at each slider move.

    Args:
        max_bytes: the byte budget.
        max_items: the most entries kept, defaults to :data:`MAX_STORED`.
        sizeof: measures a value in bytes, defaults to :func:`approximate_nbytes`.
    """

    def __init__(
        self,
        max_bytes: int,
        max_items: int = MAX_STORED,
        sizeof: Callable[[Any], int] = approximate_nbytes,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.max_items = int(max_items)
        self._sizeof = sizeof
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """The stored values' total size, as measured at the last ``put`` or ``get``."""
        with self._lock:
            return sum(self._sizes.values())

    def get(self, key: tuple) -> Any | None:
        """The value stored under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._store(key, value)
            return value

    def put(self, key: tuple, value: Any) -> None:
        """Stores ``value`` under ``key`` as the most recently used, then evicts."""
        with self._lock:
            self._store(key, value)

    def _store(self, key: tuple, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        for stored_key, stored in self._items.items():  # any of them may have grown
            self._sizes[stored_key] = int(self._sizeof(stored))
        total = sum(self._sizes.values())
        while len(self._items) > 1 and (
            total > self.max_bytes or len(self._items) > self.max_items
        ):
            oldest, _ = self._items.popitem(last=False)
            total -= self._sizes.pop(oldest)
