"""Times tiled prediction of a 1000×1000 image against one batched call on the same tiles.

Run with ``python benchmarks/bench_tiled_predict.py`` (CPU; the full-size DeepLabV3+ of
``build_deeplabv3plus()`` with random weights). After a warm-up of each method it times

* ``predict_probabilities`` on a seeded random 1000×1000 RGB image (tile 256, the default
  overlap and batch size): preprocessing, tiling, batched model calls and blending;
* one call of the same cached ``tf.function`` on as many 256×256 tiles as the tiled run
  predicts, stacked into one batch (model time only, no tiling work),

and prints the median of the runs, their ratio, the number of tiles, the peak RSS of the
process (after the tiled runs, then after the batched ones) and the machine.

Options: ``--runs N`` (default 3), ``--size S`` (default 1000), ``--overlap O`` (default that of
``predict_probabilities``), ``--batch-size B``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

from segcore.data.preprocessing import PreprocessConfig
from segcore.data.tiling import tile_starts
from segcore.inference import predict as inference
from segcore.network.model import build_deeplabv3plus

TILE = 256
SEED = 0


def median_time(fn, runs: int) -> tuple[float, list[float]]:
    """Calls ``fn`` once to warm up, then ``runs`` times; returns the median and all times."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def main(argv: list[str] | None = None) -> int:
    """Runs the measurement and prints it. One straight-line script on purpose (longer than
    the project's ~60-line rule): the timed steps read top to bottom, in the order they run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=inference.DEFAULT_OVERLAP)
    parser.add_argument("--batch-size", type=int, default=inference.DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)

    model = build_deeplabv3plus()
    config = PreprocessConfig()
    image = np.random.default_rng(SEED).integers(0, 256, (args.size, args.size, 3), np.uint8)
    stride = TILE - args.overlap
    n_tiles = len(tile_starts(max(args.size, TILE), TILE, stride)) ** 2
    tiles = np.random.default_rng(SEED).random((n_tiles, TILE, TILE, 3), dtype=np.float32)
    function = inference.keras_function(model, TILE, TILE)  # the one tiled prediction uses

    def tiled() -> np.ndarray:
        return inference.predict_probabilities(
            model,
            image,
            config,
            tile_size=TILE,
            overlap=args.overlap,
            batch_size=args.batch_size,
        )

    def batched() -> np.ndarray:
        return function(tiles).numpy()

    tiled_s, tiled_all = median_time(tiled, args.runs)
    rss_tiled = peak_rss_mib()
    batched_s, batched_all = median_time(batched, args.runs)

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}")
    print(
        f"  CPUs: {os.cpu_count()}, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, NumPy {np.__version__}"
    )
    print(f"  load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"model: DeepLabV3+ (ResNet50, random weights), {model.count_params():,} parameters, "
        "float32"
    )
    print(
        f"image: {args.size}×{args.size}, tile {TILE}, overlap {args.overlap}, "
        f"batch {args.batch_size} -> {n_tiles} tiles"
    )
    print(
        f"tiled predict_probabilities: median {tiled_s:.2f} s of {args.runs} "
        f"({', '.join(f'{t:.2f}' for t in tiled_all)}); {tiled_s / n_tiles * 1000:.0f} ms/tile"
    )
    print(
        f"one batched call on {n_tiles} tiles: median {batched_s:.2f} s of {args.runs} "
        f"({', '.join(f'{t:.2f}' for t in batched_all)}); "
        f"{batched_s / n_tiles * 1000:.0f} ms/tile"
    )
    print(f"ratio tiled / batched: {tiled_s / batched_s:.2f}")
    print(
        f"peak RSS: {rss_tiled:.0f} MiB after the tiled runs, "
        f"{peak_rss_mib():.0f} MiB after the {n_tiles}-tile batch too"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
