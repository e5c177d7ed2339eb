"""Pixel size from the nuclei (``--pixel-size auto``, :mod:`segcore.inference.scale`): what it
estimates and what it costs or gains in pooled Dice, at 40× and at 20×.

For every image of each set (``../shared/data``; roles and licences in its README), at its
native 40× (≈0.25 µm/px) and resampled to half size (≈0.5 µm/px, what a 20× scan looks like: the
image with ``INTER_AREA``, its labels with ``INTER_NEAREST``, as ``bench_quality.py`` does):

* **as is** — predicted at the model's pixel size (what happens when nothing gives one and auto
  is off): this is also auto's first pass;
* **told** — predicted with its true pixel size (0.25 at 40×, i.e. as is; 0.5 at half size);
* **auto** — what :func:`segcore.inference.scale.predict_auto` returns: the first pass when the
  estimate is the model's 0.25 µm/px, else the image predicted at the estimate (told's
  probabilities are reused where the estimate equals the true pixel size: the same call);
* the estimator's reading per image (how many read 40×, 20×, or had too few nuclei), the
  median and range of the measured (continuous) pixel size, and the one estimate for the whole
  set that ``evaluate --pixel-size auto`` makes (the median over up to 16 images).

Sets: ``monuseg-test`` (the 14 test tiles), ``monuseg-train`` (the 30 training tiles: what the
estimator was calibrated on), and the **validation parts** (``split.json``) of ``tnbc``,
``cryonuseg``, ``pannuke-breast`` and ``consep``. The keras runtime (the reference).

Usage::

    python benchmarks/bench_scale.py [--sets monuseg-test tnbc ...] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.bundles.loading import load_bundle
from segcore.data.datasets import open_dataset
from segcore.inference.predict import predict_probabilities
from segcore.inference.resolution import predict_at_pixel_size
from segcore.inference.scale import (
    REFERENCE_NUCLEUS_AREA_UM2,
    SNAP_BOUNDARY,
    combine_estimates,
    estimate_from_probabilities,
)
from segcore.metrics.counts import ConfusionCounts, confusion_counts
from segcore.metrics.labels import ground_truth_instances

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SETS = {  # name -> (folder, split)
    "monuseg-test": ("monuseg", "test"),
    "monuseg-train": ("monuseg", "train+val"),
    "tnbc-val": ("tnbc", "val"),
    "cryonuseg-val": ("cryonuseg", "val"),
    "pannuke-breast-val": ("pannuke-breast", "val"),
    "consep-val": ("consep", "val"),
}


def samples_of(name: str):
    """``(sample_id, image, instance labels)`` of a set, in id order."""
    folder, split = SETS[name]
    splits = open_dataset(DATA / folder, seed=1)
    parts = [splits.train, splits.val] if split == "train+val" else [splits.split(split)]
    for part in parts:
        for index, sample_id in enumerate(part.ids):
            image, truth = part.load_truth(index)
            labels, _ = ground_truth_instances(truth, name=sample_id)
            yield sample_id, image, labels


def half(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels at half size (≈0.5 µm/px)."""
    size = (labels.shape[1] // 2, labels.shape[0] // 2)
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST),
    )


def score_set(bundle, name: str) -> dict:
    """Pooled counts (as is, told, auto) and the estimates, at 40× and at half size."""
    tiling = {"tile_size": bundle.input_size}
    threshold = bundle.threshold

    def predict(image, pixel_size):
        return predict_at_pixel_size(
            bundle.model,
            image,
            bundle.preprocess,
            pixel_size=pixel_size,
            model_pixel_size=bundle.pixel_size,
            **tiling,
        )

    rows = {}
    for scale in ("40x", "20x"):
        rows[scale] = {
            "counts": {k: ConfusionCounts(0, 0, 0, 0) for k in ("as is", "told", "auto")},
            "estimates": [],
        }
    for sample_id, image, labels in samples_of(name):
        for scale, true_size in (("40x", 0.25), ("20x", 0.5)):
            img, lab = (image, labels) if scale == "40x" else half(image, labels)
            mask = (lab > 0).astype(np.uint8)
            first = predict_probabilities(bundle.model, img, bundle.preprocess, **tiling)
            told = first if true_size == 0.25 else predict(img, true_size)
            estimate = estimate_from_probabilities(
                first, threshold, model_pixel_size=bundle.pixel_size
            )
            if estimate.pixel_size == 0.25:
                auto = first
            elif estimate.pixel_size == true_size:
                auto = told
            else:
                auto = predict(img, estimate.pixel_size)
            row = rows[scale]
            for key, probs in (("as is", first), ("told", told), ("auto", auto)):
                row["counts"][key] = row["counts"][key] + confusion_counts(mask, probs >= threshold)
            row["estimates"].append(estimate)
            print(f"{name} {scale} {sample_id}: {estimate.describe()}", file=sys.stderr, flush=True)
    return rows


def set_line(name: str, scale: str, row: dict) -> str:
    estimates = row["estimates"]
    measured = [e.measured for e in estimates if e.measured is not None]
    reads = {size: sum(e.measured is not None and e.pixel_size == size for e in estimates)
             for size in (0.25, 0.5)}  # fmt: skip
    none = sum(e.measured is None for e in estimates)
    spread = np.linspace(0, len(estimates) - 1, min(len(estimates), 16)).round().astype(int)
    whole = combine_estimates([estimates[i] for i in sorted(set(spread))])
    dice = {k: c.dice for k, c in row["counts"].items()}
    return (
        f"| {name} | {scale} | {len(estimates)} | {reads[0.25]} / {reads[0.5]} / {none} | "
        f"{np.median(measured):.3f} ({min(measured):.3f}–{max(measured):.3f}) | "
        f"{whole.pixel_size:g} | {dice['as is']:.4f} | {dice['told']:.4f} | "
        f"**{dice['auto']:.4f}** | {dice['auto'] - dice['as is']:+.4f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    start = time.perf_counter()
    lines = [
        "| set | scale | images | read 40× / 20× / none | measured µm/px, median (range) | "
        "set estimate | as is Dice | told Dice | auto Dice | auto − as is |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.sets:
        rows = score_set(bundle, name)
        for scale in ("40x", "20x"):
            lines.append(set_line(name, scale, rows[scale]))
            print(lines[-1], flush=True)
    seconds = time.perf_counter() - start
    text = (
        "\n".join(lines)
        + f"\n\n`{bundle.card.name}` at threshold {bundle.threshold:g}, keras runtime; pooled "
        f"Dice. Reference nucleus area {REFERENCE_NUCLEUS_AREA_UM2:g} µm², snap boundary "
        f"{SNAP_BOUNDARY:g} µm/px. Command: `python benchmarks/bench_scale.py "
        f"--sets {' '.join(args.sets)}` ({seconds / 60:.0f} min on {platform.machine()}, "
        f"Python {platform.python_version()}).\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
