"""Whole-slide segmentation: throughput end to end, and memory whatever the slide's size.

Run: ``python benchmarks/bench_slides.py [--runtime auto] throughput [--grid 5x5] [--repeats 3]
[--compare] [--flips]``, ``python benchmarks/bench_slides.py [--runtime auto] memory [--sides
10000,40000]`` and ``python benchmarks/bench_slides.py [--runtime auto] startup``.

No real slide can be downloaded here, so both build slides from real tissue (MoNuSeg tiles,
``../shared/data/monuseg`` or ``$SEGCORE_MONUSEG``; :mod:`devtools.slides`) in a temporary
folder, as JPEG-compressed Aperio SVS like a scanner writes them:

1. **throughput**: a ``rows × cols`` mosaic of 1000² MoNuSeg tiles on glass, segmented
   ``--repeats`` times by :func:`segcore.wholeslide.segment.segment_slide` in this process (the
   default model, loaded once, in ``--runtime``): median seconds end to end (read, resample,
   model, nuclei, outlines, merged GeoJSON, CSV and heat map), tissue megapixels per second
   (the tissue mask's area), and the model's own throughput in the same runs (megapixels of
   tile cores per second of model time) with the ratio of the two. Issue 18's targets:
   ≥ 1.0 megapixel of tissue per second and ≥ 0.6× the model-only throughput. ``--compare``
   alternates each run with one that splits the nuclei over every tile's whole box (the way
   before :mod:`segcore.wholeslide.nuclei_region`), so both are measured under the same load,
   and checks that their outputs are the same bytes; ``--flips`` alternates each run with one
   with test-time flips (``SlideRunConfig.flips``) and gives the ratio of their times;
2. **memory**: square slides of each side in ``--sides`` with islands of tissue (2000² of
   repeated MoNuSeg tissue at the centre of every 10,000² cell, so the larger slide also holds
   more tissue), each segmented by ``python -m segcore slide run`` as its own process; its
   peak resident memory (polled every 0.1 s, and the kernel's ``ru_maxrss``). Targets: ≤ 2.5 GB
   for 40,000², and within 10 % of the 10,000² slide's;
3. **startup**: ``python -m segcore slide run`` of a small slide (a 2 × 2 mosaic) as its own
   process, as shipped (the gated runtime from the cache, without TensorFlow:
   :mod:`segcore.wholeslide.model`) and forced the way before (the Keras model loaded, then
   the runtime opened), alternately ``--repeats`` times: wall seconds, peak resident memory
   and whether TensorFlow was imported.

The runtime's converted model is prepared (and cached beside the bundle) before anything is
timed. Prints Markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from devtools.slides import RegionSource, monuseg_mosaic, write_aperio_tiff  # noqa: E402

MONUSEG = Path(os.environ.get("SEGCORE_MONUSEG", REPO.parent / "shared" / "data" / "monuseg"))
ISLAND, CELL = 2000, 10_000


def _model(runtime: str):
    from segcore.bundles.loading import load_bundle
    from segcore.bundles.runtime_cache import open_bundle_runtime

    bundle = load_bundle("default")
    model = open_bundle_runtime(bundle, runtime, report=lambda line: print(f"  {line}"))
    return bundle, model


def _load() -> str:
    """The load average and the CPU count, for the record: timings under load do not count."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def _segment_once(
    slide: Path, out: Path, bundle, model, runtime: str, whole_box: bool, flips: bool = False
) -> dict:
    """One timed :func:`segment_slide`; ``whole_box`` splits each tile's whole box; ``flips``
    averages the model over each tile's mirror images."""
    import functools

    from segcore.wholeslide import pipeline, tiles
    from segcore.wholeslide.config import SlideRunConfig
    from segcore.wholeslide.segment import segment_slide

    shipped = pipeline.tile_nuclei
    if whole_box:
        pipeline.tile_nuclei = functools.partial(tiles.tile_nuclei, whole_box=True)
    try:
        started = time.perf_counter()
        summary = segment_slide(
            slide,
            out,
            bundle=bundle,
            model=model,
            config=SlideRunConfig(runtime=runtime, flips=flips),
        )
        seconds = time.perf_counter() - started
    finally:
        pipeline.tile_nuclei = shipped
    timings = summary["timings"]
    return {
        "seconds": seconds,
        "tissue_mp_s": summary["tissue_megapixels"] / seconds,
        "core_mp_s": timings["megapixels_per_s"],
        "model_mp_s": timings["model_megapixels_per_s"],
        "model_s": timings.get("model_s", 0.0),
        "nuclei_s": timings.get("nuclei_s", 0.0),
        "wait_nuclei_s": timings.get("wait_nuclei_s", 0.0),
        "nuclei": summary["nuclei"],
        "tiles": summary["tiles"],
        "tissue_mp": summary["tissue_megapixels"],
    }


def _row(label: str, runs: list[dict], rows: int, cols: int, name: str) -> str:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    ratio = median["core_mp_s"] / median["model_mp_s"]
    return (
        f"| {label} {platform.node()} {time.strftime('%Y-%m-%d')} | {rows}×{cols} MoNuSeg "
        f"mosaic, {median['tissue_mp']:.1f} MP tissue, {median['tiles']:.0f} tiles | {name} | "
        f"{median['seconds']:.1f} s | **{median['tissue_mp_s']:.2f}** | "
        f"{median['core_mp_s']:.2f} | {median['model_mp_s']:.2f} | **{ratio:.2f}×** | "
        f"{median['nuclei']:.0f} | nuclei step {median['nuclei_s']:.1f} s, model waited "
        f"{median['wait_nuclei_s']:.1f} s |"
    )


def throughput(args: argparse.Namespace) -> None:
    from segcore.wholeslide.outputs import OUTPUT_FILES

    rows, cols = (int(v) for v in args.grid.lower().split("x"))
    mosaic = monuseg_mosaic(MONUSEG, rows=rows, cols=cols, margin=512, split=args.split)
    bundle, model = _model(args.runtime)
    print(f"runtime: {model.describe() if hasattr(model, 'describe') else model}")
    ways = {"region": (False, False)}  # (whole box, flips)
    if args.compare:
        ways["whole box"] = (True, False)
    if args.flips:
        ways["flips"] = (False, True)
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as folder:
        slide = write_aperio_tiff(Path(folder) / "mosaic.svs", mosaic.rgb, compression="jpeg")
        for repeat in range(args.repeats):
            order = list(ways) if repeat % 2 == 0 else list(ways)[::-1]  # alternate who's first
            for way in order:
                out = Path(folder) / f"run{repeat}-{way.replace(' ', '-')}"
                runs[way].append(_segment_once(slide, out, bundle, model, args.runtime, *ways[way]))
                print(f"  run {repeat + 1} ({way}, {_load()}): {runs[way][-1]}")
        if args.compare:
            same = all(
                (Path(folder) / "run0-region" / name).read_bytes()
                == (Path(folder) / "run0-whole-box" / name).read_bytes()
                for name in OUTPUT_FILES
            )
            print(f"  outputs of the two ways: {'the same bytes' if same else 'DIFFERENT'}")
    print()
    for way in ways:
        print(_row(way, runs[way], rows, cols, model.name))
    if args.compare:
        region, whole = runs["region"], runs["whole box"]
        for key in ("seconds", "nuclei_s"):
            ratio = statistics.median(r[key] for r in region) / statistics.median(
                w[key] for w in whole
            )
            print(f"region ÷ whole box, median {key}: {ratio:.3f}")
    if args.flips:
        for key in ("seconds", "model_s"):
            ratio = statistics.median(r[key] for r in runs["flips"]) / statistics.median(
                r[key] for r in runs["region"]
            )
            print(f"flips ÷ plain, median {key}: {ratio:.2f}")


def island_slide(side: int, pattern: np.ndarray) -> RegionSource:
    """A ``side`` × ``side`` slide of glass with a 2000² island of ``pattern`` (repeated) at the
    centre of every 10,000² cell."""
    ph, pw = pattern.shape[:2]
    start = (CELL - ISLAND) // 2

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        for cell_y in range(y // CELL * CELL, y + h, CELL):
            for cell_x in range(x // CELL * CELL, x + w, CELL):
                x0, y0 = max(x, cell_x + start), max(y, cell_y + start)
                x1 = min(x + w, cell_x + start + ISLAND, side)
                y1 = min(y + h, cell_y + start + ISLAND, side)
                if x0 >= x1 or y0 >= y1:
                    continue
                yy = (np.arange(y0, y1) - cell_y - start) % ph
                xx = (np.arange(x0, x1) - cell_x - start) % pw
                out[y0 - y : y1 - y, x0 - x : x1 - x] = pattern[np.ix_(yy, xx)]
        return out

    return RegionSource(side, side, region)


def _peak_rss(command: list[str]) -> tuple[float, float, float, int]:
    """Runs ``command``; returns (seconds, peak RSS polled MB, ru_maxrss MB, exit status)."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    kernel = maxrss / 1024 if maxrss > before else float("nan")
    return seconds, peak / 2**20, kernel, proc.returncode


def memory(args: argparse.Namespace) -> None:
    import json

    _model(args.runtime)  # prepares the converted model once, outside the measurement
    pattern = monuseg_mosaic(MONUSEG, rows=2, cols=2, margin=0, split=args.split).rgb
    with tempfile.TemporaryDirectory() as folder:
        for side in (int(v) for v in args.sides.split(",")):
            slide = Path(folder) / f"islands-{side}.svs"
            began = time.perf_counter()
            write_aperio_tiff(slide, island_slide(side, pattern), compression="jpeg")
            print(
                f"  wrote {slide.name} ({slide.stat().st_size / 2**20:.0f} MB) in "
                f"{time.perf_counter() - began:.0f} s"
            )
            out = Path(folder) / f"run-{side}"
            command = [sys.executable, "-m", "segcore", "slide", "run", str(slide), "--out",
                       str(out), "--runtime", args.runtime, "--quiet"]  # fmt: skip
            seconds, polled, kernel, status = _peak_rss(command)
            summary = json.loads((out / "summary.json").read_text()) if status == 0 else {}
            print(
                f"| {platform.node()} {time.strftime('%Y-%m-%d')} | {side:,}² | "
                f"{summary.get('tissue_megapixels', float('nan')):.0f} MP tissue, "
                f"{summary.get('tiles', 0)} tiles | {summary.get('nuclei', 0):,} | {seconds:.0f} s "
                f"| **{polled:,.0f} MB** | {kernel:,.0f} MB | exit {status} |"
            )
            slide.unlink()


STARTUP_RUN = """
import json, resource, sys, time
started = time.perf_counter()
if sys.argv[1] == "keras":  # the way before: the Keras model loaded, then the runtime opened
    import segcore.wholeslide.model as slide_model
    slide_model.cached_runtime = lambda ref, requested: None
from segcore.cli import main
status = main(sys.argv[2:])
print(json.dumps({"status": status, "seconds": time.perf_counter() - started,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def startup(args: argparse.Namespace) -> None:
    import json

    _model(args.runtime)  # prepares the converted model and its gate once, outside the timing
    pattern = monuseg_mosaic(MONUSEG, rows=2, cols=2, margin=256, split=args.split).rgb
    results: dict[str, list[dict]] = {"cached runtime": [], "keras first": []}
    with tempfile.TemporaryDirectory() as folder:
        slide = write_aperio_tiff(Path(folder) / "small.svs", pattern, compression="jpeg")
        for repeat in range(args.repeats):
            for way in results if repeat % 2 == 0 else list(results)[::-1]:
                out = Path(folder) / f"{way.replace(' ', '-')}-{repeat}"
                argv = ["slide", "run", str(slide), "--out", str(out), "--runtime", args.runtime]
                command = [sys.executable, "-c", STARTUP_RUN, way.split()[0], *argv, "--quiet"]
                done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{way} failed:\n{done.stderr[-2000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                summary = json.loads((out / "summary.json").read_text())
                result.update(run_s=summary["seconds"], runtime=summary["runtime"])
                results[way].append(result)
                print(f"  {way} ({_load()}): {result}")
    for way, runs in results.items():
        median = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "maxrss_mb")}
        run_s = statistics.median(r["run_s"] for r in runs)
        print(
            f"| {way} | {runs[0]['runtime']} | {median['seconds']:.1f} s "
            f"(segment_slide {run_s:.1f} s) | {median['maxrss_mb']:,.0f} MB | "
            f"TensorFlow imported: {any(r['tensorflow'] for r in runs)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--split", default="train", help="MoNuSeg split the tissue comes from")
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("throughput")
    speed.add_argument("--grid", default="5x5", help="rows x cols of 1000² tiles")
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument(
        "--compare",
        action="store_true",
        help="alternate with runs that split the nuclei over each tile's whole box",
    )
    speed.add_argument(
        "--flips", action="store_true", help="alternate with runs with test-time flips"
    )
    size = commands.add_parser("memory")
    size.add_argument("--sides", default="10000,40000")
    start = commands.add_parser("startup")
    start.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (MONUSEG / args.split / "images").is_dir():
        sys.exit(f"MoNuSeg not found at {MONUSEG} (set SEGCORE_MONUSEG)")
    {"throughput": throughput, "memory": memory, "startup": startup}[args.command](args)


if __name__ == "__main__":
    main()
