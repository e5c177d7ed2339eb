"""Training throughput: the full training path against a bare ``model.fit`` on arrays.

Run: ``python benchmarks/bench_training.py [--image-size 256] [--batch-size 8] [--steps 12]``

Both measurements use the same DeepLabV3+, compiled the same way as ``segcore.training.trainer``
(Adam with cosine decay, BCE, the Dice/Jaccard/accuracy/pooled-Dice metrics), in the same
process:

* **full path** — the ``segcore.training.pipeline`` training pipeline (random crops + augmentation
  from
  the synthetic set, batched, prefetched) and the run callback that writes status, metrics,
  checkpoints and previews, exactly as ``python -m segcore train`` uses them;
* **bare** — ``model.fit`` on in-memory NumPy arrays of the same shape, no callbacks.

Each is timed over the second of two epochs of ``--steps`` batches (the first epoch traces), so
checkpoint and preview writing at the end of the epoch are included in the full path. Prints
images/s of each, the ratio (target ≥ 0.95), the device and the peak resident memory. On a GPU
the precision is ``mixed_float16`` (as in training); ``--precision`` overrides it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    """Runs the measurement and prints it. One straight-line script on purpose (longer than
    the project's ~60-line rule): the timed steps read top to bottom, in the order they run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="batches per timed epoch")
    parser.add_argument("--precision", help="float32, mixed_float16 or mixed_bfloat16")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from segcore.data.datasets import open_dataset
    from segcore.data.preprocessing import PreprocessConfig
    from segcore.data.synthetic_set import generate_dataset
    from segcore.network.model import build_deeplabv3plus
    from segcore.training import devices
    from segcore.training.callback import make_callback
    from segcore.training.config import AugmentConfig, TrainConfig
    from segcore.training.models import compile_model
    from segcore.training.pipeline import make_training_dataset
    from segcore.training.runs import RunDir

    n_gpus = devices.configure_gpus()
    precision = args.precision or devices.choose_precision(n_gpus)
    devices.apply_precision(precision)
    size, batch, steps = args.image_size, args.batch_size, args.steps
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    print(
        f"device: {devices.device_summary()}, precision {precision}; "
        f"{size}×{size}, batch {batch}, {steps} steps per epoch"
    )

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    def model_for(config: TrainConfig):
        model = build_deeplabv3plus()
        compile_model(model, config, 2 * steps)
        return model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = max(32, batch * steps // 4)
        data = generate_dataset(tmp / "synth", count=count, size=max(256, size), seed=0)
        splits = open_dataset(data, val_fraction=0, test_fraction=0)
        config = TrainConfig(
            data=str(data),
            epochs=2,
            batch_size=batch,
            image_size=size,
            crops_per_epoch=batch * steps,
            run_dir=str(tmp / "run"),
        )
        train = make_training_dataset(
            splits.train,
            PreprocessConfig(),
            image_size=size,
            batch_size=batch,
            augment=AugmentConfig(),
            crops_per_epoch=batch * steps,
        )
        run = RunDir(tmp / "run")
        run.write_status(state="running", epoch=0)
        x, y = next(iter(train.dataset.unbatch().batch(2)))
        callback = make_callback(
            run,
            config,
            history=[],
            best=None,
            preview=(x.numpy(), y.numpy()),
            stop_flag={"requested": False},
            clock={"start": time.monotonic(), "steps_per_epoch": steps, "initial_epoch": 0},
        )
        full_timer = EpochTimer()
        full = model_for(config)
        full.fit(
            train.dataset, epochs=2, callbacks=[callback, full_timer], shuffle=False, verbose=0
        )
        rng = np.random.default_rng(0)
        xs = rng.random((batch * steps, size, size, 3), np.float32)
        ys = (rng.random((batch * steps, size, size, 1)) > 0.7).astype(np.float32)
        bare_timer = EpochTimer()
        bare = model_for(config)
        bare.fit(
            xs, ys, batch_size=batch, epochs=2, callbacks=[bare_timer], shuffle=False, verbose=0
        )

    full_rate = batch * steps / full_timer.seconds
    bare_rate = batch * steps / bare_timer.seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"full path (pipeline + callbacks + checkpoint): {full_rate:.3f} images/s")
    print(f"bare model.fit on arrays:                      {bare_rate:.3f} images/s")
    print(f"ratio full / bare: {full_rate / bare_rate:.3f}  (target ≥ 0.95)")
    print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
