"""What every command shares: the recorded command line, the console progress bar, and the
checks of output folders and file names made before any model is loaded."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from segcore.errors import ConfigError

FLIPS_HELP = (
    "average the network's probabilities over each tile and its three mirror images (four "
    "network calls per tile instead of one; for the default model +0.009 mean Dice over five "
    "labs' validation parts, most on other labs' stains)"
)
"""The help of every command's ``--flips`` (:mod:`segcore.inference.flips`)."""


def command_line(argv: Sequence[str] | None = None) -> str:
    """The ``python -m segcore ...`` command line (recorded in bundle cards), shell-quoted.

    Args:
        argv: the arguments after ``python -m segcore``; defaults to ``sys.argv[1:]``.
    """
    return "python -m segcore " + shlex.join(sys.argv[1:] if argv is None else argv)


class Progress:
    """A tile progress bar on stderr driven by ``done, total`` callbacks: redrawn in place on a
    terminal; otherwise one plain line when finished (and one at most every
    :attr:`EVERY_S` seconds before), so a log holds no control characters. Nothing when
    ``quiet``.

    Args:
        label: what is being predicted, at the start of the line.
        quiet: draw nothing.
        stream: where to draw, defaults to ``sys.stderr``.
    """

    EVERY_S = 30.0
    WIDTH = 30

    def __init__(self, label: str, quiet: bool, stream=None):
        self.label, self.quiet = label, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = time.monotonic()
        self.finished = False

    def __call__(self, done: int, total: int, *_ignored) -> None:
        if self.quiet or self.finished or total <= 0:
            return
        now = time.monotonic()
        self.finished = done >= total
        elapsed = now - self.start
        filled = self.WIDTH * min(done, total) // total
        line = f"{self.label} [{'=' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} tiles"
        if self.finished:
            line += f" in {elapsed:.1f} s"
        elif done > 0:
            line += f", ETA {elapsed * (total - done) / done:.0f} s"
        if _isatty(self.stream):
            end = "\n" if self.finished else ""
            print(f"\r{line}\x1b[K", end=end, file=self.stream, flush=True)
        elif self.finished or now - self.last >= self.EVERY_S:
            self.last = now
            print(line, file=self.stream, flush=True)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def output_folder(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Creates the output folder ``path`` if missing and checks that files can be written in it.

    Raises:
        ConfigError: ``path`` is a file, or the folder cannot be made or written (one line
            naming ``flag`` and the path).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: is a file, not a folder; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the permission bits do not tell root's case
            pass
    except OSError as exc:
        raise ConfigError(
            f"{flag} {folder}: cannot write there ({exc.strerror or exc}); give a writable folder"
        ) from exc
    return folder


def check_unique_stems(
    paths: Sequence[str],
    *,
    writes: str = "{stem}_prob.png, {stem}_mask.png, ...",
    fix: str = "predict them into different --out folders",
) -> None:
    """Refuses input files whose outputs would overwrite each other: two with the same name
    without extension (ignoring case, as file systems on macOS and Windows do).

    Args:
        paths: the input files.
        writes: what each one writes, ``{stem}`` standing for its name without extension.
        fix: the other way out, after "rename one, or".

    Raises:
        ConfigError: naming both files.
    """
    seen: dict[str, str] = {}
    for path in paths:
        stem = Path(path).stem
        first = seen.get(stem.casefold())
        seen[stem.casefold()] = path
        if first is not None:
            raise ConfigError(
                f"{first} and {path} would both write {writes.format(stem=stem)}: "
                f"rename one, or {fix}"
            )


def runtime_model(bundle, requested: str, quiet: bool, *, flips: bool = False):
    """The model the command predicts with: ``bundle``'s network in runtime ``requested``
    (:func:`segcore.bundles.runtime_cache.open_bundle_runtime`), averaged over test-time flips
    with ``flips`` (:func:`segcore.inference.flips.with_flips`). Slow first-use steps, the
    runtime that runs and any notice (a fallback to Keras, a failed gate) go to stderr; the
    notice also when ``quiet``.

    Raises:
        ConfigError: ``flips`` for the classical baseline.
    """
    from segcore.bundles.runtime_cache import open_bundle_runtime
    from segcore.inference.flips import with_flips

    def report(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr)

    model = open_bundle_runtime(bundle, requested, report=report)
    if flips:
        model = with_flips(model)
    describe = getattr(model, "describe", None)
    if describe is not None:
        report(f"runtime: {describe()}")
    notice = getattr(model, "notice", None)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return model
