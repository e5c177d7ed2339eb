"""``batch`` on a local Ray against ``slide run``: what Ray costs, and what a second worker
brings on this machine.

Run: ``python benchmarks/bench_batch.py [--grid 4x4] [--runtime auto] [--region-tiles 2]``.

A ``rows × cols`` mosaic of 1000² MoNuSeg tiles on glass (``../shared/data/monuseg`` or
``$SEGCORE_MONUSEG``; :mod:`devtools.slides`), written as a JPEG Aperio SVS, is segmented
three ways, each a fresh ``python -m segcore`` process with the default model in ``--runtime``
(its converted model cached beforehand):

1. ``slide run`` (one process; the model uses every core);
2. ``batch --workers 1 --cpus-per-worker <all cores>`` (a local Ray, one worker);
3. ``batch --workers 2 --cpus-per-worker <half>`` with ``--region-tiles`` small enough that
   the slide is shared by both workers.

For each: the wall time of the whole command (process start, model load, Ray start) and the
work time (``slide run``: its summary's ``seconds``; ``batch``: its CSV row's ``seconds``,
from the first task to the merge), and tissue megapixels per second of each. The outputs of
every run must be the same bytes (checked). Issue 23's target: ``batch`` with 1 worker
≥ 0.9× the throughput of ``slide run``. Prints Markdown rows for docs/scaling.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.slides import monuseg_mosaic, write_aperio_tiff  # noqa: E402

MONUSEG = Path(os.environ.get("SEGCORE_MONUSEG", REPO.parent / "shared" / "data" / "monuseg"))
OUTPUTS = ("nuclei.geojson.gz", "nuclei.csv", "density.npy", "density.png")


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _row(name: str, wall: float, work: float, tissue_mp: float, base: float | None) -> str:
    rate = tissue_mp / work
    ratio = "" if base is None else f"{rate / base:.2f}×"
    return (
        f"| {name} | {wall:.1f} s | {work:.1f} s | {tissue_mp / wall:.2f} | **{rate:.2f}** "
        f"| {ratio} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="4x4", help="rows x cols of 1000² tiles")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--region-tiles", type=int, default=2, help="for the 2-worker run")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    if not (MONUSEG / args.split / "images").is_dir():
        sys.exit(f"MoNuSeg not found at {MONUSEG} (set SEGCORE_MONUSEG)")
    rows, cols = (int(v) for v in args.grid.lower().split("x"))
    cores = os.cpu_count() or 1
    segcore = [sys.executable, "-m", "segcore", "-q"]
    subprocess.run([*segcore, "runtimes", "--prepare"], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        mosaic = monuseg_mosaic(MONUSEG, rows=rows, cols=cols, margin=512, split=args.split)
        slide = write_aperio_tiff(root / "mosaic.svs", mosaic.rgb, compression="jpeg")
        runtime = ["--runtime", args.runtime]
        single = root / "single"
        wall = _timed([*segcore, "slide", "run", str(slide), "--out", str(single), *runtime])
        summary = json.loads((single / "summary.json").read_text())
        tissue_mp = summary["tissue_megapixels"]
        lines = [_row("slide run", wall, summary["seconds"], tissue_mp, None)]
        base = tissue_mp / summary["seconds"]
        for workers, cpus, regions in ((1, cores, 32), (2, max(1, cores // 2), args.region_tiles)):
            out = root / f"batch{workers}"
            wall = _timed(
                [*segcore, "batch", str(slide), "--out", str(out), *runtime,
                 "--workers", str(workers), "--cpus-per-worker", str(cpus),
                 "--region-tiles", str(regions)]
            )  # fmt: skip
            with open(out / "batch.csv", newline="") as handle:
                row = next(csv.DictReader(handle))
            assert row["status"] == "completed", row
            for name in OUTPUTS:
                same = (out / "mosaic" / name).read_bytes() == (single / name).read_bytes()
                assert same, f"{name} differs with {workers} worker(s)"
            label = f"batch, {workers} worker{'s' * (workers > 1)} × {cpus:g} CPU"
            lines.append(_row(label, wall, float(row["seconds"]), tissue_mp, base))
    print(
        f"\n{platform.node()} {time.strftime('%Y-%m-%d')}, {cores} cores, {rows}×{cols} MoNuSeg "
        f"mosaic, {tissue_mp:.1f} MP tissue, {summary['tiles']} tiles, {summary['runtime']}\n"
    )
    print("| command | wall | work | tissue MP/s (wall) | tissue MP/s (work) | × slide run |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
