"""Command-line interface: ``python -m segcore <command> ...``.

Owns: :mod:`~segcore.cli.main` (the parser, the commands and :func:`main`),
:mod:`~segcore.cli.common` (the recorded command line, the progress bar),
:mod:`~segcore.cli.objects` (the nucleus-level commands and outputs: ``tune-instances``,
``predict --instances``) and :mod:`~segcore.cli.quiet` (TensorFlow's start-up noise kept off
stderr, by ``python -m segcore``).

May import: every segcore package (the CLI sits above the library, below the facade). Never
Streamlit.
"""

from segcore.cli.common import command_line
from segcore.cli.main import build_parser, main

__all__ = ["build_parser", "command_line", "main"]
