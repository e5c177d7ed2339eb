"""What every command shares: the recorded command line and the console progress bar."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def command_line(argv: Sequence[str] | None = None) -> str:
    """The ``python -m segcore ...`` command line (recorded in bundle cards), shell-quoted.

    Args:
        argv: the arguments after ``python -m segcore``; defaults to ``sys.argv[1:]``.
    """
    return "python -m segcore " + shlex.join(sys.argv[1:] if argv is None else argv)


class Progress:
    """A console progress bar (Keras' Progbar) driven by ``done, total`` callbacks."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet, self.bar = label, quiet, None

    def __call__(self, done: int, total: int, *_ignored) -> None:
        if self.quiet:
            return
        import keras

        if self.bar is None:
            print(self.label, file=sys.stderr)
            self.bar = keras.utils.Progbar(total, unit_name="tile")
        self.bar.update(done)
