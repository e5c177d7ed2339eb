"""Command-line interface: ``python -m segcore <command> ...``.

Commands:
    synth   write a synthetic H&E nuclei dataset in the ``images/`` + ``masks/`` layout.

Errors of type :class:`~segcore.errors.SegcoreError` are printed as one line on stderr with exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from segcore.errors import SegcoreError

log = logging.getLogger("segcore")


def _cmd_synth(args: argparse.Namespace) -> int:
    from segcore.synthetic import generate_dataset

    start = time.perf_counter()
    out = generate_dataset(args.out, count=args.count, size=args.size, seed=args.seed)
    log.info(
        "wrote %d tiles of %d×%d to %s in %.1f s",
        args.count,
        args.size,
        args.size,
        out,
        time.perf_counter() - start,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser for every ``python -m segcore`` command."""
    parser = argparse.ArgumentParser(prog="python -m segcore", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="write a synthetic H&E nuclei dataset")
    synth.add_argument("--out", required=True, help="folder to create (images/ and masks/ inside)")
    synth.add_argument("--count", type=int, default=760, help="number of tiles (default 760)")
    synth.add_argument("--size", type=int, default=256, help="tile side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(func=_cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except SegcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
