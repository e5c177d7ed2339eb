"""Preprocessing and tf.data pipeline throughput against the model's training step.

Run: ``python benchmarks/bench_pipeline.py [--tiles 96] [--steps 5]``

Prints, for this machine:
  * preprocessing throughput (luminance equalisation + Gaussian blur) in images/s at 256×256
    and 1000×1000;
  * steady-state throughput of the training pipeline (random crops + full augmentation,
    batches of 8 at 256×256) from 256×256 synthetic tiles and, when ../shared/data/monuseg is
    present, from 1000×1000 MoNuSeg tiles;
  * the DeepLabV3+ training step (Adam, BCE, batch 8, 256×256) in images/s;
  * the ratio pipeline / model, which must be ≥ 5 so the model never waits for data.
Medians of several runs; the machine is shared, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from segcore.data.datasets import load_samples, open_dataset
from segcore.data.preprocessing import PreprocessConfig, enhance_image
from segcore.data.synthetic_set import generate_dataset

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg"


def median_rate(fn, count: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def preprocessing_rate(images: list[np.ndarray], runs: int = 5) -> float:
    config = PreprocessConfig()
    return median_rate(lambda: [enhance_image(img, config) for img in images], len(images), runs)


def pipeline_rate(samples, runs: int = 3, batches: int = 40) -> float:
    from segcore.training.pipeline import make_training_dataset

    data = make_training_dataset(
        samples, PreprocessConfig(), image_size=256, batch_size=8, crops_per_epoch=8 * batches
    )

    def one_epoch():
        for _ in data.dataset:
            pass

    one_epoch()  # warm-up: tracing
    return median_rate(one_epoch, 8 * batches, runs)


def model_rate(steps: int) -> float:
    import keras

    from segcore.network.model import build_deeplabv3plus

    model = build_deeplabv3plus()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((8, 256, 256, 3), np.float32)
    y = (rng.random((8, 256, 256, 1)) > 0.7).astype(np.float32)
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return 8 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=96, help="synthetic tiles to generate")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    args = parser.parse_args()

    import tensorflow as tf

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        synth = open_dataset(
            generate_dataset(Path(tmp) / "synth", count=args.tiles, seed=0),
            val_fraction=0,
            test_fraction=0,
        ).train
        small = [img for img, _ in load_samples(synth)]
        print(f"preprocessing 256×256: {preprocessing_rate(small):8.1f} images/s")
        if MONUSEG.is_dir():
            real = open_dataset(MONUSEG).train
            large = [img for img, _ in load_samples(real.subset(range(8)))]
            print(f"preprocessing 1000×1000: {preprocessing_rate(large, 3):6.1f} images/s")
        rates = {"synthetic 256×256": pipeline_rate(synth)}
        if MONUSEG.is_dir():
            rates["MoNuSeg 1000×1000 crops"] = pipeline_rate(real)
    for name, rate in rates.items():
        print(f"pipeline ({name}): {rate:8.1f} images/s")
    model = model_rate(args.steps)
    print(
        f"model training step (batch 8, 256×256, float32): {model:.2f} images/s "
        f"({1 / model:.3f} s/image)"
    )
    for name, rate in rates.items():
        verdict = "OK" if rate >= 5 * model else "TOO SLOW"
        print(f"ratio pipeline/model ({name}): {rate / model:.1f}×  (target ≥ 5×) {verdict}")


if __name__ == "__main__":
    main()
