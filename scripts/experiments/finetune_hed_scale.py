"""The experiment that made the v3 default: fine-tune a bundle with HED stain and scale jitter.

A record, kept so the shipped weights can be reproduced; it is not segcore's training path
(``python -m segcore train``), which does not have these augmentations yet (issue 8 moves them
into ``segcore.training`` as config fields). What it does:

* random crops of the training split (``open_dataset(data, seed=1)``: 26 MoNuSeg training tiles,
  4 carved for validation — the split the v1/v2 defaults used);
* per crop: a context of twice the crop's side is cut from the raw tile; with probability
  ``--hed-p`` its stain is jittered in the hematoxylin–eosin–DAB optical-density space of
  ``skimage.color.rgb2hed`` (each channel × U(1 − m, 1 + m) and + U(−a, a); Tellez et al. 2019);
  it is resampled so the crop becomes 256² (scale log-uniform in [``--scale-min``,
  ``--scale-max``]; 0.5 looks like 20×), equalised and smoothed with the bundle's preprocessing
  (as inference does on a whole image), cropped, rotated by a multiple of 90° and flipped;
* BCE + Dice, Adam with cosine decay over ``--steps`` batches of 8;
* every ``--eval-every`` steps, the pooled Dice on the full-size validation tiles over the
  thresholds 0.05, 0.10, …, 0.95; the best weights are kept as a bundle in ``--out`` (with
  that threshold) and the arguments and best step in ``<out>.run.json``.

Usage (the v3 default: 1,300 steps, best at step 900, 55 min on 2 CPU cores):

    python scripts/experiments/finetune_hed_scale.py --init <v2 bundle> \\
        --data ../shared/data/monuseg --out runs/hed-scale --steps 1300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import queue
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from segcore.bundles.loading import load_bundle
from segcore.bundles.store import save_bundle
from segcore.data.datasets import load_samples, open_dataset
from segcore.data.preprocessing import enhance_image, to_model_input
from segcore.inference.predict import predict_probabilities
from segcore.metrics.counts import ConfusionCounts, confusion_counts

log = logging.getLogger("finetune_hed_scale")
SIZE = 256
LOG_ADJUST = np.log(1e-6)  # skimage's rgb2hed/hed2rgb constant
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, help="bundle ref to start from")
    p.add_argument("--data", required=True, help="dataset folder (MoNuSeg train/ + test/)")
    p.add_argument("--out", required=True, help="folder for the best bundle")
    p.add_argument("--steps", type=int, default=1300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--scale-min", type=float, default=0.5)
    p.add_argument("--scale-max", type=float, default=1.45)
    p.add_argument("--hed-mul", type=float, default=0.25)
    p.add_argument("--hed-add", type=float, default=0.04)
    p.add_argument("--hed-p", type=float, default=0.85)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--equalize",
        choices=("none", "global", "clahe"),
        help="change the bundle's luminance equalisation (recorded in the new card)",
    )
    return p.parse_args()


def hed_jitter(rgb: np.ndarray, rng: np.random.Generator, mul: float, add: float) -> np.ndarray:
    """Stain jitter in rgb2hed optical-density space; uint8 RGB in, uint8 RGB out."""
    unit = np.maximum(rgb.astype(np.float32) / 255.0, 1e-6)
    hed = np.maximum((np.log(unit) / LOG_ADJUST) @ hed_from_rgb.astype(np.float32), 0)
    hed = hed * rng.uniform(1 - mul, 1 + mul, 3).astype(np.float32)
    hed = hed + rng.uniform(-add, add, 3).astype(np.float32)
    out = np.exp(-(hed * -LOG_ADJUST) @ rgb_from_hed.astype(np.float32))
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_crop(train, pre, args, rng):
    """One augmented ``(image float32 (S, S, 3), mask float32 (S, S, 1))`` training pair."""
    image, mask = train[rng.integers(len(train))]
    height, width = mask.shape
    scale = math.exp(rng.uniform(math.log(args.scale_min), math.log(args.scale_max)))
    side = min(round(SIZE / scale), height, width)
    context = min(2 * side, height, width)
    cy, cx = rng.integers(0, height - context + 1), rng.integers(0, width - context + 1)
    region = image[cy : cy + context, cx : cx + context]
    if rng.random() < args.hed_p:
        region = hed_jitter(region, rng, args.hed_mul, args.hed_add)
    y, x = rng.integers(0, context - side + 1), rng.integers(0, context - side + 1)
    f = SIZE / side
    method = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    region = enhance_image(cv2.resize(region, None, fx=f, fy=f, interpolation=method), pre)
    top = min(round(y * f), region.shape[0] - SIZE)
    left = min(round(x * f), region.shape[1] - SIZE)
    crop = region[top : top + SIZE, left : left + SIZE]
    truth = mask[cy + y : cy + y + side, cx + x : cx + x + side]
    truth = cv2.resize(truth, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    k = rng.integers(4)
    crop, truth = np.rot90(crop, k), np.rot90(truth, k)
    if rng.random() < 0.5:
        crop, truth = crop[:, ::-1], truth[:, ::-1]
    crop = to_model_input(np.ascontiguousarray(crop))
    return crop, np.ascontiguousarray(truth)[..., None].astype(np.float32)


def validation_dice(model, val, pre) -> tuple[float, float]:
    """``(best threshold, pooled Dice there)`` on full-size validation images."""
    counts = {t: ConfusionCounts(0, 0, 0, 0) for t in THRESHOLDS}
    for image, mask in val:
        prob = predict_probabilities(model, image, pre)
        for t in THRESHOLDS:
            counts[t] = counts[t] + confusion_counts(mask, prob >= t)
    best = max(counts, key=lambda t: counts[t].dice)
    return float(best), counts[best].dice


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import keras

    from segcore.network.keras_metrics import bce_dice_loss

    source = load_bundle(args.init)
    model, pre = source.model, source.preprocess
    if args.equalize:
        pre = dataclasses.replace(pre, equalize=args.equalize)
    splits = open_dataset(args.data, seed=1)
    train = [(i, (m > 0).astype(np.uint8)) for i, m in load_samples(splits.train)]
    val = [(i, (m > 0).astype(np.uint8)) for i, m in load_samples(splits.val)]
    batches: queue.Queue = queue.Queue(maxsize=6)

    def produce() -> None:
        rng = np.random.default_rng(args.seed)
        while True:
            pairs = [make_crop(train, pre, args, rng) for _ in range(args.batch)]
            batches.put((np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))

    threading.Thread(target=produce, daemon=True).start()
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, args.steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=bce_dice_loss)
    threshold, score = validation_dice(model, val, pre)
    best = {"step": 0, "threshold": threshold, "dice": score}
    start = time.monotonic()
    for step in range(1, args.steps + 1):
        model.train_on_batch(*batches.get())
        if step % args.eval_every and step != args.steps:
            continue
        threshold, score = validation_dice(model, val, pre)
        log.info("step %d: validation Dice %.4f at %.2f", step, score, threshold)
        if score > best["dice"]:
            best = {"step": step, "threshold": threshold, "dice": score}
            card = dataclasses.replace(  # the source's figures are not this model's
                source.card,
                threshold=threshold,
                preprocess=pre.to_dict(),
                model_sha256="",
                metrics={},
            )
            save_bundle(model, args.out, card)
    best["time_s"] = round(time.monotonic() - start)
    record = Path(f"{args.out}.run.json")  # beside the bundle folder, which holds two files only
    record.write_text(json.dumps({**vars(args), "best": best}, indent=1))
    log.info("done: %s", best)


if __name__ == "__main__":
    main()
