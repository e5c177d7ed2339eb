"""``python -m segcore batch``: many slides and images on a Ray cluster, local by default.

    batch INPUTS... --out DIR [--ray ADDRESS] [--workers N] [--cpus-per-worker C]
          [--runtime R] [--pixel-size UM] [--model REF] [--threshold T] [--region-tiles N]
          [--quiet] [--job JOB_DIR]

INPUTS are slides, image files or folders of either; each input's outputs go to
``DIR/<stem>/`` (a slide's as ``slide run`` writes them, an image's as ``predict
--instances``, with a ``summary.json``), and ``DIR/batch.csv`` has one row per input
(:mod:`segcore.batch.engine`). Without ``--ray`` a local Ray starts on this machine. A missing
Ray, an address that does not answer, a bad option: one line on stderr, exit status 2; so is
a batch in which any input failed (each named in the CSV and on stderr).

``--job JOB_DIR`` runs the batch as the background job of that folder, which
:func:`segcore.batch.jobs.start_batch_job` made (the app's batch section): it waits for the
slide jobs' lock, writes its status and progress there, and SIGTERM or ``stop.request`` stop it
between tasks (:func:`segcore.batch.jobs.run_batch_job`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from segcore.cli.common import FLIPS_HELP, output_folder
from segcore.cli.slides_cmd import _pixel_size, _threshold, summary_line
from segcore.errors import ConfigError
from segcore.inference.runtimes.base import CHOICES, default_runtime


def add_batch(commands) -> None:
    """Registers ``batch``."""
    batch = commands.add_parser(
        "batch",
        help="segment many slides and images on a Ray cluster",
        description="Segments slides (split into regions shared by the workers) and images on "
        "a pool of Ray workers, each holding the model once; a re-run skips what is finished. "
        "The input paths must be readable at the same path on every worker (a shared file "
        "system).",
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="slides, images or folders")
    batch.add_argument("--out", required=True, help="output folder (DIR/<stem>/, DIR/batch.csv)")
    batch.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="join this cluster: auto (ray start ran on this machine), ray://HOST:10001 or "
        "HOST:6379. Default: start a local Ray on this machine",
    )
    batch.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    batch.add_argument(
        "--cpus-per-worker",
        type=float,
        help="CPUs each worker asks for and its model uses (default: this machine's CPUs / "
        "workers)",
    )
    batch.add_argument(
        "--runtime",
        default=default_runtime(),
        choices=CHOICES,
        help="what runs the network (see 'python -m segcore predict --help'); name one on a "
        "cluster of mixed CPUs. Default: $SEGCORE_RUNTIME, else auto",
    )
    batch.add_argument("--pixel-size", metavar="UM", help="µm per pixel (slides: level 0)")
    batch.add_argument("--model", default="default", help="bundle (default: weights/default)")
    batch.add_argument("--threshold", metavar="T", help="default: the bundle's threshold")
    batch.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    batch.add_argument(
        "--region-tiles",
        type=int,
        default=32,
        metavar="N",
        help="tissue tiles per region task of a slide (default 32)",
    )
    batch.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )
    batch.add_argument(
        "--job",
        metavar="JOB_DIR",
        help="run as the background batch job of this folder (made by the app's batch "
        "section): wait for the slide jobs' lock, write status and progress there",
    )
    batch.set_defaults(func=cmd_batch)


class BatchBar:
    """The batch's progress on stderr: inputs and regions done, redrawn in place on a terminal,
    else one line whenever a count changes."""

    def __init__(self, quiet: bool, stream=None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.last: tuple | None = None
        self._drawn = False

    def __call__(self, info: dict[str, Any]) -> None:
        key = tuple(info[k] for k in ("inputs_done", "regions_done", "regions_total", "failed"))
        if self.quiet or key == self.last:
            return
        self.last = key
        done, total = info["inputs_done"], info["inputs_total"]
        filled = 30 * done // max(total, 1)
        line = f"batch [{'=' * filled}{'.' * (30 - filled)}] {done}/{total} inputs"
        if info["regions_total"]:
            line += f", {info['regions_done']}/{info['regions_total']} slide regions"
        if info["failed"]:
            line += f", {info['failed']} failed"
        if self.stream.isatty():
            print(f"\r{line}\x1b[K", end="", file=self.stream, flush=True)
            self._drawn = True
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False


def _check(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: give at least 1")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker {args.cpus_per_worker:g}: give a positive number")
    if args.region_tiles < 1:
        raise ConfigError(f"--region-tiles {args.region_tiles}: give at least 1")


def _batch(args: argparse.Namespace, progress, should_stop=None) -> tuple[list[dict], Path]:
    """Runs the batch the arguments describe; returns its rows and the output folder."""
    from segcore.batch.cluster import require_ray
    from segcore.batch.engine import BatchConfig, run_batch
    from segcore.batch.worker import ModelSpec
    from segcore.inference.classical import BASELINE_REF
    from segcore.inference.flips import NO_NETWORK
    from segcore.wholeslide.config import SlideRunConfig

    if args.flips and str(args.model) == BASELINE_REF:  # before Ray: workers would refuse it
        raise ConfigError(f"--flips: {NO_NETWORK}")
    require_ray()  # before anything is written
    slide = SlideRunConfig(
        threshold=_threshold(args.threshold),
        pixel_size=_pixel_size(args.pixel_size),
        runtime=args.runtime,
        flips=args.flips,
    )
    cpus = args.cpus_per_worker or max(1, (os.cpu_count() or 1) // args.workers)
    config = BatchConfig(
        workers=args.workers,
        cpus_per_worker=cpus,
        region_tiles=args.region_tiles,
        slide=slide,
        address=args.ray,
    )
    out = output_folder(args.out)
    spec = ModelSpec(ref=args.model, runtime=args.runtime)
    spec.card()  # a bad --model is one line before Ray starts
    kwargs = {} if should_stop is None else {"should_stop": should_stop}
    rows = run_batch(args.inputs, out, spec=spec, config=config, progress=progress, **kwargs)
    return rows, out


def _print_rows(rows: list[dict], out: Path) -> int:
    """A line per input (stdout; failures and stops on stderr); the exit status."""
    from segcore.batch.engine import CSV_FILE

    for row in rows:
        name = Path(row["input"]).name
        if row["status"] in ("failed", "stopped"):
            print(f"{'error' if row['status'] == 'failed' else 'stopped'}: {row['input']}: "
                  f"{row['error']}", file=sys.stderr)  # fmt: skip
        else:
            line = summary_line(name, out, {k: row[k] or None for k in row})
            print(line + (" (already finished)" if row["status"] == "skipped" else ""))
    print(f"summary: {out / CSV_FILE}")
    return 2 if any(row["status"] in ("failed", "stopped") for row in rows) else 0


def _as_job(args: argparse.Namespace) -> int:
    from segcore.batch.jobs import run_batch_job

    ended: dict[str, int] = {}

    def work(progress, should_stop) -> list[dict]:
        rows, out = _batch(args, progress, should_stop)
        ended["status"] = _print_rows(rows, out)
        return rows

    final = run_batch_job(args.job, work)
    return ended.get("status", 2) if final.get("state") == "completed" else 2


def cmd_batch(args: argparse.Namespace) -> int:
    _check(args)
    if args.job is not None:
        return _as_job(args)
    bar = BatchBar(getattr(args, "quiet", False))
    try:
        rows, out = _batch(args, bar)
    finally:
        bar.close()
    return _print_rows(rows, out)
