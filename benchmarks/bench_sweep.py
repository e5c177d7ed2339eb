"""Times segcore.metrics.sweep.threshold_sweep against a per-threshold loop.

Run with ``python benchmarks/bench_sweep.py``: 67 seeded random 256×256 probability maps and
masks, the default 101-threshold grid. Prints the median time of the one-pass sweep (7 runs)
and of a loop that binarises and counts once per threshold (3 runs), their ratio, and the
machine. Both must give identical counts; the script checks that.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.metrics.counts import ConfusionCounts, confusion_counts
from segcore.metrics.sweep import DEFAULT_THRESHOLDS, threshold_sweep

N_IMAGES, SIZE, SEED = 67, 256, 0
SWEEP_RUNS, LOOP_RUNS = 7, 3


def make_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Returns float32 probabilities and uint8 masks of shape (67, 256, 256)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((N_IMAGES, SIZE, SIZE)) < 0.3).astype(np.uint8)
    noise = rng.random((N_IMAGES, SIZE, SIZE), dtype=np.float32)
    probs = np.clip(0.6 * truth + 0.5 * noise - 0.05, 0.0, 1.0).astype(np.float32)
    return truth, probs


def per_threshold_loop(truth: np.ndarray, probs: np.ndarray) -> list[ConfusionCounts]:
    """The naive method: binarise and count every image once per threshold (pooled counts)."""
    pooled = []
    for t in DEFAULT_THRESHOLDS:
        total = ConfusionCounts(0, 0, 0, 0)
        for y, p in zip(truth, probs, strict=True):
            total = total + confusion_counts(y, p >= t)
        pooled.append(total)
    return pooled


def median_time(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    truth, probs = make_data()
    threshold_sweep(truth[:2], probs[:2])  # warm-up
    sweep_s, sweep = median_time(lambda: threshold_sweep(truth, probs), SWEEP_RUNS)
    loop_s, loop = median_time(lambda: per_threshold_loop(truth, probs), LOOP_RUNS)
    for i, counts in enumerate(loop):
        if sweep.counts_at(sweep.thresholds[i]) != counts:
            raise SystemExit(f"mismatch at threshold {sweep.thresholds[i]}")

    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (affinity: {len(os.sched_getaffinity(0))})"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"data: {N_IMAGES} images of {SIZE}×{SIZE} float32, {DEFAULT_THRESHOLDS.size} thresholds")
    print(f"threshold_sweep (one pass): median {sweep_s * 1e3:8.1f} ms over {SWEEP_RUNS} runs")
    print(f"per-threshold loop:         median {loop_s * 1e3:8.1f} ms over {LOOP_RUNS} runs")
    print(f"speed-up: {loop_s / sweep_s:.1f}×; counts identical at all thresholds")
    target = 0.2
    print(f"target < {target:.1f} s: {'met' if sweep_s < target else 'NOT met'}")


if __name__ == "__main__":
    main()
