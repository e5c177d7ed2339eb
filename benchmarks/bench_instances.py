"""Times turning a 1000×1000 probability map into nuclei, their table and their GeoJSON.

Run with ``python benchmarks/bench_instances.py [--model default] [--tiles 3]``: the first
``--tiles`` MoNuSeg test tiles (``../shared/data/monuseg/test``; 1000×1000, 40×) are predicted
once with the model, then each step is timed 7 times per tile:

* ``label_instances`` — threshold, fill holes, distance transform, h-maxima markers,
  watershed, minimum area (the "instance post-processing" of issue 9; target ≤ 0.3 s);
* ``nuclei_table`` — the per-nucleus measurements;
* ``geojson_bytes`` — the QuPath export;
* ``instance_scores`` — PQ, AJI and detection F1 against the annotation.

Then two comparisons that justify how the code does it, on the same machine in the same run:

* the h-maxima reconstruction per blob on its bounding box (what ``label_instances`` does)
  against one reconstruction over the whole image, on the first tile;
* 20,020 nuclei (4×4-pixel squares on a 1000×1000 image): ``nuclei_table`` and
  ``geojson_bytes``, and ``skimage.measure.regionprops_table`` with the same measurements (the
  tests' reference).

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


def reconstruction_comparison(probs, threshold: float, depth_px: float) -> tuple[list, list]:
    """Times the per-blob h-domes against one whole-image reconstruction (same result)."""
    import cv2
    import numpy as np
    from skimage.morphology import reconstruction

    from segcore.inference.instances import _h_domes

    mask = (probs >= threshold).astype(np.uint8)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = cv2.GaussianBlur(distance, (0, 0), 1.0) * mask
    per_blob, domes = timed(_h_domes, distance, depth_px)
    seed = np.maximum(distance - depth_px, 0)
    whole, rebuilt = timed(reconstruction, seed, distance)
    if not np.allclose(domes, distance - rebuilt, atol=1e-4):
        raise AssertionError("per-blob and whole-image reconstructions differ")
    return per_blob, whole


def many_nuclei() -> dict[str, list[float]]:
    """20,020 4×4 squares on 1000×1000: the table, the GeoJSON and regionprops_table."""
    import numpy as np
    from skimage.color import rgb2hed
    from skimage.measure import regionprops_table

    labels = np.zeros((1000, 1000), np.int32)
    ys, xs = np.meshgrid(np.arange(0, 1000, 7)[:143], np.arange(0, 1000, 7)[:140])
    for number, (y, x) in enumerate(zip(ys.ravel(), xs.ravel(), strict=True), start=1):
        labels[y : y + 4, x : x + 4] = number
    image = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    hematoxylin = rgb2hed(image)[..., 0]
    properties = (
        "label",
        "centroid",
        "area",
        "perimeter_crofton",
        "equivalent_diameter_area",
        "eccentricity",
        "solidity",
        "intensity_mean",
    )
    times: dict[str, list[float]] = {}
    times["nuclei_table"], table = timed(nuclei_table, labels, image, 0.25)
    times["geojson_bytes"], _ = timed(geojson_bytes, labels, table)
    times["regionprops_table"], _ = timed(
        regionprops_table, labels, hematoxylin, properties=properties
    )
    if len(table) != labels.max():
        raise AssertionError("the table lost nuclei")
    return times


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
        if path == images[0]:
            depth_px = bundle.instances.split_depth_um / 0.25
            comparison = reconstruction_comparison(probs, bundle.threshold, depth_px)
    print(f"{len(images)} MoNuSeg test tiles (1000×1000), {RUNS} runs each; nuclei: {counts}")
    for name, times in steps.items():
        print(f"{name:16s} median {statistics.median(times) * 1000:7.1f} ms")
    total = sum(statistics.median(times) for times in steps.values())
    print(f"{'all four':16s} {total * 1000:7.1f} ms (sum of medians)")
    per_blob, whole = comparison
    print(
        f"h-maxima reconstruction, first tile: per blob {statistics.median(per_blob) * 1000:.0f} "
        f"ms, whole image {statistics.median(whole) * 1000:.0f} ms"
    )
    for name, times in many_nuclei().items():
        print(f"20,020 nuclei: {name:18s} median {statistics.median(times) * 1000:7.1f} ms")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
