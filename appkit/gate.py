"""One model prediction at a time in the server, and the freed heap handed back after it.

Every Streamlit session runs its script in its own thread, so ten sessions uploading at once
would run ten predictions at once: on a 2-core machine they share the same cores (no faster in
all) while each holds its own model working memory — tiles, activations, blended
probabilities — in its own glibc malloc arena, where most of it stays after it is freed.
:func:`prediction_slot` lets at most :func:`prediction_slots` predictions run at a time (half the
cores, at least one; ``$SEGCORE_PREDICTION_SLOTS`` overrides) and makes the others wait, and
when the last running prediction ends it asks glibc to return the free heap pages to the system
(:func:`release_free_memory`, ``malloc_trim(0)``). When the gate is made (the first
prediction), :func:`limit_heap_fragmentation` has glibc map every block of
:data:`MMAP_THRESHOLD` or more on its own, so that an image-sized array goes back to the system
when it is freed instead of leaving a hole in an arena. Both are no-ops elsewhere than glibc.

Measured with ``benchmarks/bench_soak.py`` (10 sessions uploading new 1000² images at once,
round after round, on 2 cores; see ``docs/benchmarks.md``): with the gate the first round added
540–580 MB to the server's RSS instead of 790 MB, and the rounds were no slower; with the fixed
threshold RSS stayed within 32 MB of round 2's through round 10, where glibc's default (its
threshold rises to 32 MB once a large block is freed) left it 75–150 MB above.

No Streamlit here: the gate is a plain thread-safe object, the caller shows the waiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator

SLOTS_ENV = "SEGCORE_PREDICTION_SLOTS"
"""Environment variable: how many predictions may run at once in the server process."""

log = logging.getLogger(__name__)


def prediction_slots() -> int:
    """How many predictions may run at once: ``$SEGCORE_PREDICTION_SLOTS``, else half the
    CPUs (at least 1; also when the variable is not a positive integer, with a warning).

    One prediction already uses every core (TensorFlow's and OpenVINO's thread pools), so more
    at once only adds working memory."""
    default = max(1, (os.cpu_count() or 2) // 2)
    text = os.environ.get(SLOTS_ENV, "").strip()
    if not text:
        return default
    try:
        slots = int(text)
    except ValueError:
        slots = 0
    if slots < 1:
        log.warning("%s=%r is not a positive integer; using %d", SLOTS_ENV, text, default)
        return default
    return slots


MMAP_THRESHOLD = 1 << 20
"""Blocks of this many bytes or more get their own memory map (glibc's ``M_MMAP_THRESHOLD``):
1 MiB, so every image-sized array (a 1000×1000 RGB image is 3 MB) is returned to the system
when it is freed; small objects stay in the arenas."""

_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def _glibc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    """The C library's function ``name`` where it is glibc on Linux, else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = getattr(libc, name)  # malloc_trim and mallopt: glibc only (not musl)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _glibc_function("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system (glibc's ``malloc_trim(0)``, which walks
    every arena); ``False`` where there is no such call (not glibc), else ``True``.

    Takes milliseconds; the memory comes back on the next prediction's first touch."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def limit_heap_fragmentation(threshold: int = MMAP_THRESHOLD) -> bool:
    """Has glibc map blocks of ``threshold`` bytes or more on their own, from now on in this
    process (``mallopt(M_MMAP_THRESHOLD)``; this also stops glibc raising the threshold itself).
    ``False`` where there is no such call (not glibc) or it refused, else ``True``."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, int(threshold)))


class PredictionGate:
    """Lets at most ``slots`` blocks run at once; calls ``after`` when the last running one ends.

    Not reentrant: a thread holding a slot must not ask for another one.

    Args:
        slots: how many may run at once (at least 1).
        after: called (in the thread whose block ended) when no block is running any more,
            defaults to :func:`release_free_memory`; ``None`` calls nothing.
    """

    def __init__(self, slots: int, after: Callable[[], object] | None = release_free_memory):
        if int(slots) < 1:
            raise ValueError(f"a prediction gate needs at least 1 slot, got {slots!r}")
        self.slots = int(slots)
        self._after = after
        self._semaphore = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        """How many blocks hold a slot now."""
        return self._running

    @property
    def waiting(self) -> int:
        """How many blocks wait for a slot now."""
        return self._waiting

    @contextlib.contextmanager
    def slot(self, on_wait: Callable[[], object] | None = None) -> Iterator[None]:
        """Runs the block in a slot: at once if one is free, else after calling ``on_wait``
        (e.g. to say so on the page) and waiting for one."""
        if not self._semaphore.acquire(blocking=False):
            with self._lock:
                self._waiting += 1
            try:
                if on_wait is not None:
                    on_wait()
                self._semaphore.acquire()
            finally:
                with self._lock:
                    self._waiting -= 1
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            self._semaphore.release()
            if last and self._after is not None:
                self._after()


_GATE: PredictionGate | None = None
_GATE_LOCK = threading.Lock()


def prediction_gate() -> PredictionGate:
    """The server process's gate, made on first use with :func:`prediction_slots` slots (and
    :func:`limit_heap_fragmentation` then, once)."""
    global _GATE
    with _GATE_LOCK:
        if _GATE is None:
            limit_heap_fragmentation()
            _GATE = PredictionGate(prediction_slots())
        return _GATE


def prediction_slot(on_wait: Callable[[], object] | None = None):
    """:meth:`PredictionGate.slot` of the process's gate (:func:`prediction_gate`): wrap every
    model prediction the app starts in it."""
    return prediction_gate().slot(on_wait)
