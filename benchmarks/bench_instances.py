"""Times turning a 1000×1000 probability map into nuclei, their table and their GeoJSON.

Run with ``python benchmarks/bench_instances.py [--model default] [--tiles 3]``: the first
``--tiles`` MoNuSeg test tiles (``../shared/data/monuseg/test``; 1000×1000, 40×) are predicted
once with the model, then each step is timed 7 times per tile:

* ``label_instances`` — threshold, fill holes, distance transform, h-maxima markers,
  watershed, minimum area (the "instance post-processing" of issue 9; target ≤ 0.3 s);
* ``nuclei_table`` — the per-nucleus measurements;
* ``geojson_bytes`` — the QuPath export;
* ``instance_scores`` — PQ, AJI and detection F1 against the annotation.

Prints the median over all runs of each step, the nuclei per tile and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.analysis.exports import geojson_bytes
from segcore.analysis.nuclei import nuclei_table
from segcore.bundles.loading import load_bundle
from segcore.data.images import read_image, read_mask_array
from segcore.inference.instances import label_instances
from segcore.inference.predict import predict_probabilities
from segcore.metrics.instances import instance_scores
from segcore.metrics.labels import ground_truth_instances

RUNS = 7


def timed(function, *args, **kwargs):
    """``(median seconds over RUNS calls, last result)``."""
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="../shared/data/monuseg/test", type=Path)
    parser.add_argument("--tiles", type=int, default=3)
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    images = sorted((args.data / "images").iterdir())[: args.tiles]
    steps: dict[str, list[float]] = {}
    counts = []
    for path in images:
        image = read_image(path)
        truth, _ = ground_truth_instances(read_mask_array(args.data / "masks" / f"{path.stem}.png"))
        probs = predict_probabilities(bundle.model, image, bundle.preprocess)
        times, labels = timed(label_instances, probs, bundle.threshold, bundle.instances)
        steps.setdefault("label_instances", []).extend(times)
        times, table = timed(nuclei_table, labels, image, 0.25)
        steps.setdefault("nuclei_table", []).extend(times)
        times, _ = timed(geojson_bytes, labels, table)
        steps.setdefault("geojson_bytes", []).extend(times)
        times, _ = timed(instance_scores, truth, labels)
        steps.setdefault("instance_scores", []).extend(times)
        counts.append(int(labels.max()))
    print(f"{len(images)} MoNuSeg test tiles (1000×1000), {RUNS} runs each; nuclei: {counts}")
    for name, times in steps.items():
        print(f"{name:16s} median {statistics.median(times) * 1000:7.1f} ms")
    total = sum(statistics.median(times) for times in steps.values())
    print(f"{'all four':16s} {total * 1000:7.1f} ms (sum of medians)")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
