"""A validation-only proxy for sparse tissue: does the preprocessing survive an empty slide?

The central 500×500 of each MoNuSeg validation tile (``open_dataset(data, seed=1).val``, the
4 tiles the default was validated on) is placed on a 1000×1000 canvas of slide-coloured
background (RGB ≈ (236, 231, 238) with a little noise), so three quarters of the image is empty,
as on fat or lumen. Each equalisation variant is scored on the tissue part (pooled Dice at the
bundle's threshold) twice: the crop alone, and the crop on the canvas. Used in docs/quality.md
to choose the contrast-limited equalisation of v4.1 without looking at an evaluation set.

Usage::

    python scripts/experiments/sparse_tissue_proxy.py [--model default]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from segcore.bundles.loading import load_bundle
from segcore.data.datasets import open_dataset
from segcore.inference.predict import predict_probabilities
from segcore.metrics.counts import ConfusionCounts, confusion_counts

BACKGROUND = (236, 231, 238)
VARIANTS = {"global": {"equalize": "global"}} | {
    f"clahe1-{clip:g}": {"equalize": "clahe", "clahe_tile_grid": 1, "clahe_clip_limit": clip}
    for clip in (2.0, 3.0, 4.0, 6.0, 8.0)
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="../shared/data/monuseg")
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    val = open_dataset(args.data, seed=1).val
    rng = np.random.default_rng(0)
    zero = ConfusionCounts(0, 0, 0, 0)
    scores = {name: [zero, zero] for name in VARIANTS}
    for index in range(len(val)):
        image, mask = val.load(index)
        crop, truth = image[250:750, 250:750], mask[250:750, 250:750]
        canvas = np.clip(rng.normal(BACKGROUND, 3, (1000, 1000, 3)), 0, 255).astype(np.uint8)
        canvas[250:750, 250:750] = crop
        for name, fields in VARIANTS.items():
            preprocess = dataclasses.replace(bundle.preprocess, **fields)
            alone = predict_probabilities(bundle.model, crop, preprocess)
            sparse = predict_probabilities(bundle.model, canvas, preprocess)[250:750, 250:750]
            dense_counts, sparse_counts = scores[name]
            scores[name] = [
                dense_counts + confusion_counts(truth, alone >= bundle.threshold),
                sparse_counts + confusion_counts(truth, sparse >= bundle.threshold),
            ]
    for name, (dense, sparse) in scores.items():
        print(f"{name:12s} crop alone: Dice {dense.dice:.4f}; on an empty slide: {sparse.dice:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
