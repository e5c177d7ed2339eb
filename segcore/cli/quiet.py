"""TensorFlow's start-up noise, kept off a command-line user's terminal.

On import, TensorFlow's C++ libraries log before their logging is configured, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach those lines: "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom operations are on",
"Could not find cuda drivers on your machine" (each twice: two libraries); then, on a machine
without a GPU, the first look at the devices logs "failed call to cuInit: ... CUDA error" as an
error although nothing is wrong.

:func:`quiet_tensorflow` (called by ``python -m segcore`` before anything can import
TensorFlow) sets ``TF_CPP_MIN_LOG_LEVEL=2`` (TensorFlow's own filter: errors only) unless it is
set already, and runs the first ``import tensorflow`` — and the first look at the devices —
with the process's stderr (file descriptor 2) held in a temporary file, then writes back every
line but those below that level and the cuInit failure of a machine without CUDA drivers or
GPU. A failed import writes back everything. ``SEGCORE_DEBUG=1`` turns all of this off;
``TF_CPP_MIN_LOG_LEVEL=0`` keeps TensorFlow's every line.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterable, MutableMapping

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEBUG_ENV = "SEGCORE_DEBUG"
DEFAULT_LEVEL = 2
"""TensorFlow's C++ log level for command-line users: 0 all, 1 no INFO, 2 errors only."""

_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_CUDA = ("Could not find cuda drivers", "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device")
_CONTINUED = "To enable the following instructions"


def debug_requested(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether ``SEGCORE_DEBUG`` asks for TensorFlow's every line (set, and not 0/false/no)."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def log_level(environ: MutableMapping[str, str] | None = None) -> int:
    """The ``TF_CPP_MIN_LOG_LEVEL`` in effect (0, TensorFlow's default, when unset or bad)."""
    try:
        return int((os.environ if environ is None else environ).get(LEVEL_ENV, "0"))
    except ValueError:
        return 0


def filter_lines(lines: Iterable[str], level: int) -> list[str]:
    """The lines of TensorFlow's start-up output worth showing at log level ``level``.

    Dropped: records (``I0000 00:00:... file.cc:12] ...``) of a severity below ``level`` with
    their continuation lines, the "before absl::InitializeLog()" banner (``level`` ≥ 1), and a
    failed cuInit when the same output says there is no CUDA driver or device (``level`` ≥ 1).
    Everything else is kept, in order.
    """
    lines = list(lines)
    no_cuda = any(marker in line for line in lines for marker in _NO_CUDA)
    kept: list[str] = []
    dropping = False
    for line in lines:
        record = _RECORD.match(line)
        if record is not None:
            severity = _SEVERITY[record.group(1)]
            expected = no_cuda and "failed call to cuInit" in line and severity < 3
            dropping = severity < level or (expected and level >= 1)
        elif line.rstrip("\r\n") == _BANNER:
            dropping = level >= 1
        elif not (dropping and (line[:1].isspace() or line.startswith(_CONTINUED))):
            dropping = False
        if not dropping:
            kept.append(line)
    return kept


class _StderrHeld:
    """File descriptor 2 redirected to a temporary file while the ``with`` block runs; on leaving
    it, the held output is written back (filtered at ``level``, or whole after an exception)."""

    def __init__(self, level: int):
        self.level = level

    def __enter__(self) -> _StderrHeld:
        _flush_stderr()
        self.held = tempfile.TemporaryFile()
        try:
            self.saved: int | None = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep quiet
            self.saved = None
            return self
        os.dup2(self.held.fileno(), 2)
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if self.saved is None:
            self.held.close()
            return
        _flush_stderr()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.held.seek(0)
        text = self.held.read().decode("utf-8", errors="replace")
        self.held.close()
        lines = text.splitlines(keepends=True)
        if kind is None:
            lines = filter_lines(lines, self.level)
        if lines and sys.stderr is not None:
            sys.stderr.write("".join(lines))
            sys.stderr.flush()


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):  # None, or closed
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with stderr held; then the devices are looked at once."""

    def __init__(self, loader, level: int):
        self.loader, self.level = loader, level

    def __getattr__(self, name):  # get_filename, is_package, get_resource_reader, ...
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _StderrHeld(self.level):
            self.loader.exec_module(module)
            # The first look at the devices is where a machine without a GPU logs its failed
            # cuInit; any use of TensorFlow does it, so doing it here costs nothing.
            with contextlib.suppress(Exception):  # TensorFlow says it again when used
                module.config.list_physical_devices()


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``name`` once (then leaves ``sys.meta_path``) and gives it a quiet loader."""

    def __init__(self, level: int, name: str = "tensorflow"):
        self.level, self.name = level, name

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return None  # not installed: the usual ImportError
        spec.loader = _QuietLoader(spec.loader, self.level)
        return spec


def uninstall() -> None:
    """Removes the import hook of :func:`quiet_tensorflow` (nothing if it is not there)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]


def quiet_tensorflow(environ: MutableMapping[str, str] | None = None) -> bool:
    """Keeps TensorFlow's start-up noise off stderr for the rest of the process (see the module
    docstring); call it before TensorFlow is imported. Returns whether it did anything (not
    with ``SEGCORE_DEBUG`` set, nor once TensorFlow is imported)."""
    environ = os.environ if environ is None else environ
    if debug_requested(environ) or "tensorflow" in sys.modules:
        return False
    environ.setdefault(LEVEL_ENV, str(DEFAULT_LEVEL))
    uninstall()
    sys.meta_path.insert(0, _QuietFinder(log_level(environ)))
    return True
