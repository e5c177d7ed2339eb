"""Every runtime of a bundle in one run: speed per tile, ``predict`` on a 1000² tile, accuracy.

Run: ``python benchmarks/bench_runtimes.py [--model default] [--rounds 9]
[--data ../shared/data/monuseg] [--instances] [--json out.json]``

1. **Per tile**: a batch of 8 real 256×256 tiles (cut from the built-in samples, preprocessed)
   through each runtime — ``keras`` (TensorFlow float32, the reference), ``openvino``,
   ``openvino-bf16`` (where the CPU has avx512_bf16 or AMX), ``openvino-int8`` — in interleaved
   rounds, so a noisy machine slows all alike; median milliseconds per tile and its ratio to
   keras's.
2. **predict**: ``python -m segcore predict``'s work on one 1000×1000 image
   (:func:`segcore.cli.predict_files.predict_files`: decode, preprocess, tile, predict, blend,
   write the probability and mask PNGs; with ``--instances`` the nuclei files too), model
   loaded, after one warm-up; median seconds and ratio to keras.
3. **Accuracy** (with ``--data``, a dataset with a ``test`` split): each runtime's pooled
   Dice against the ground truth at the bundle's threshold, its masks' Dice against keras's
   masks, and the largest probability difference from keras.
4. **First use** (``--first-use``): ``auto`` opened on an empty cache folder (conversion,
   int8 quantisation, the accuracy gate on every candidate), then opened again from the cache.
5. **Flips** (``--flips``): every runtime also as ``NAME+flips``, the mean of its four mirror-image
   predictions (``--flips`` on the command line), in the same interleaved rounds.
6. **Tiling** (with ``--data`` and ``--tilings``): the fastest runtime's pooled Dice and seconds
   per image for other tile sizes and overlaps, down to the whole image in one call — what a
   tiling policy that predicts fewer redundant pixels would cost in Dice.

Runtimes not installed are listed as such. Converted models come from the bundle's cache
(built first if needed, which is not timed). Prints Markdown tables and the CPU's flags; on a
machine with a GPU, keras runs there (TensorFlow's default device), so the same command gives
the GPU's figures.
"""

from __future__ import annotations

import argparse
import json
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

from segcore.bundles.loading import load_bundle
from segcore.bundles.runtime_cache import bundle_runtime_cache, open_bundle_runtime
from segcore.cli.predict_files import PredictJob, predict_files
from segcore.data import samples
from segcore.data.datasets import open_dataset
from segcore.data.images import encode_png
from segcore.data.preprocessing import enhance_image, to_model_input
from segcore.inference.flips import with_flips
from segcore.inference.predict import predict_probabilities
from segcore.inference.runtimes import open_runtime, selection
from segcore.inference.runtimes.base import KERAS, RUNTIMES
from segcore.inference.runtimes.cpu import cpu_info
from segcore.metrics.counts import ConfusionCounts, confusion_counts

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg"


def real_tiles(preprocess, count: int = 8, size: int = 256) -> np.ndarray:
    """``count`` preprocessed tiles of real tissue from the built-in samples."""
    split = samples.open_source(samples.BUILT_IN).split("test")
    tiles = []
    for i in range(count):
        image, _ = split.load(i % len(split))
        enhanced = to_model_input(enhance_image(image, preprocess))
        y = (i // len(split)) * size % (image.shape[0] - size + 1)
        tiles.append(enhanced[y : y + size, :size])
    return np.ascontiguousarray(np.stack(tiles), dtype=np.float32)


def runtimes_here() -> tuple[list[str], dict[str, str]]:
    """The runtimes to measure and, for the others, why not."""
    why = {name: selection.why_unavailable(name) for name in RUNTIMES}
    return [n for n, w in why.items() if w is None], {n: w for n, w in why.items() if w}


def per_tile(models: dict, batch: np.ndarray, rounds: int) -> dict[str, float]:
    """Median milliseconds per tile of each model on ``batch``, rounds interleaved."""
    for model in models.values():  # warm-up: traces and compiles
        model(batch)
        model(batch)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model(batch)
            times[name].append((time.perf_counter() - start) * 1000 / len(batch))
    return {name: statistics.median(values) for name, values in times.items()}


def predict_seconds(bundle, models: dict, image: Path, repeats: int, instances: bool) -> dict:
    """Median seconds of ``predict``'s work on ``image`` per model, repeats interleaved."""
    times = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as out:
        jobs = {
            name: PredictJob(
                bundle=bundle,
                model=model,
                out=Path(out) / name,
                threshold=bundle.threshold,
                pixel_size=None,
                tile_size=None,
                overlap=64,
                batch_size=8,
                instances=instances,
                quiet=True,
            )
            for name, model in models.items()
        }
        for job in jobs.values():
            job.out.mkdir()
            assert predict_files(job, [str(image)]) == 0  # warm-up
        for _ in range(repeats):
            for name, job in jobs.items():
                start = time.perf_counter()
                predict_files(job, [str(image)])
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def accuracy(bundle, models: dict, data: Path) -> dict[str, dict[str, float]]:
    """Pooled Dice, mask Dice against keras and max |Δp| of each model on ``data``'s test
    split at the bundle's threshold."""
    split = open_dataset(data).split("test")
    empty = ConfusionCounts(0, 0, 0, 0)
    truth_counts = dict.fromkeys(models, empty)
    keras_counts = dict.fromkeys(models, empty)
    worst = dict.fromkeys(models, 0.0)
    for index in range(len(split)):
        image, truth = split.load(index)
        probs = {
            name: predict_probabilities(model, image, bundle.preprocess)
            for name, model in models.items()
        }
        reference = probs[KERAS] >= bundle.threshold
        for name, prob in probs.items():
            mask = prob >= bundle.threshold
            truth_counts[name] = truth_counts[name] + confusion_counts(truth, mask)
            keras_counts[name] = keras_counts[name] + confusion_counts(reference, mask)
            worst[name] = max(worst[name], float(np.abs(prob - probs[KERAS]).max()))
    return {
        name: {
            "pooled_dice": truth_counts[name].dice,
            "mask_dice_vs_keras": keras_counts[name].dice,
            "max_abs_diff": worst[name],
        }
        for name in models
    }


TILINGS = ((256, 64), (256, 32), (256, 8), (512, 64), (512, 24), (1024, 0))
"""(tile, overlap) pairs ``--tilings`` compares; 1024 with no overlap is a whole 1000² tile in
one call."""


def tilings(bundle, model, data: Path) -> list[dict]:
    """Pooled Dice and median seconds per image of ``model`` on ``data``'s test split for each
    of :data:`TILINGS`, with the share of pixels predicted more than once."""
    from segcore.data.tiling import tile_starts

    split = open_dataset(data).split("test")
    loaded = [split.load(i) for i in range(len(split))]
    rows = []
    for tile, overlap in TILINGS:
        counts = ConfusionCounts(0, 0, 0, 0)
        seconds, predicted = [], 0
        for image, truth in loaded:
            start = time.perf_counter()
            prob = predict_probabilities(
                model, image, bundle.preprocess, tile_size=tile, overlap=overlap
            )
            seconds.append(time.perf_counter() - start)
            counts = counts + confusion_counts(truth, prob >= bundle.threshold)
            height, width = image.shape[:2]  # padded to at least one tile, as predict does
            starts = len(tile_starts(max(height, tile), tile, tile - overlap)) * len(
                tile_starts(max(width, tile), tile, tile - overlap)
            )
            predicted += starts * tile * tile / (height * width)
        rows.append(
            {
                "tile": tile,
                "overlap": overlap,
                "pooled_dice": counts.dice,
                "seconds": statistics.median(seconds),
                "pixels_predicted": predicted / len(loaded),
            }
        )
    return rows


def first_use(bundle) -> tuple[float, float, str]:
    """Seconds for ``auto`` on an empty cache (convert, quantise, gate), seconds to open it
    again from that cache, and the runtime chosen."""
    with tempfile.TemporaryDirectory() as cache_dir:
        options = dict(
            model_sha256=bundle.card.model_sha256,
            cache_dir=cache_dir,
            preprocess=bundle.preprocess,
            threshold=bundle.threshold,
            tile_size=bundle.input_size,
        )
        start = time.perf_counter()
        chosen = open_runtime(bundle.model, "auto", **options).name
        cold = time.perf_counter() - start
        start = time.perf_counter()
        open_runtime(bundle.model, "auto", **options)
        return cold, time.perf_counter() - start, chosen


def default_image(folder: Path) -> Path:
    """The first MoNuSeg test tile when ``../shared`` has it, else a 1000² mosaic of the
    built-in samples written to ``folder``."""
    tiles = sorted((MONUSEG / "test" / "images").glob("*.tif"))
    if tiles:
        return tiles[0]
    split = samples.open_source(samples.BUILT_IN).split("test")
    crops = [split.load(i)[0] for i in range(4)]
    mosaic = np.block([[crops[0], crops[1]], [crops[2], crops[3]]])[:1000, :1000]
    path = folder / "mosaic.png"
    path.write_bytes(encode_png(mosaic))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="bundle ref (default: default)")
    parser.add_argument("--rounds", type=int, default=9, help="per-tile rounds (default 9)")
    parser.add_argument("--repeats", type=int, default=5, help="predict repeats (default 5)")
    parser.add_argument("--image", type=Path, help="the 1000² image for predict")
    parser.add_argument("--instances", action="store_true", help="predict --instances too")
    parser.add_argument("--data", type=Path, help="dataset with a test split for accuracy")
    parser.add_argument("--tilings", action="store_true", help="with --data: compare tilings")
    parser.add_argument(
        "--first-use", action="store_true", help="time auto on an empty cache, then cached"
    )
    parser.add_argument(
        "--flips", action="store_true", help="also time every runtime with test-time flips"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from segcore.inference.runtimes.openvino_runtime import nncf_version, openvino_version

    info = cpu_info()
    gpus = tf.config.list_physical_devices("GPU")
    print(f"machine: {platform.platform()}; {info.describe()}")
    print(
        f"TensorFlow {tf.__version__} (Keras {keras.__version__}; "
        f"{'GPU: ' + ', '.join(g.name for g in gpus) if gpus else 'CPU'}), "
        f"OpenVINO {openvino_version()}, NNCF {nncf_version()}"
    )
    bundle = load_bundle(args.model)
    names, skipped = runtimes_here()
    models = {name: open_bundle_runtime(bundle, name, report=print) for name in names}
    for name, model in models.items():
        if model.name != name:
            skipped[name] = model.notice or "fell back to keras"
    models = {name: model for name, model in models.items() if model.name == name}
    for name, why in skipped.items():
        print(f"{name}: skipped — {why}")
    if args.flips:  # segcore.inference.flips: the same runtime, the mean of four flips
        models.update({f"{name}+flips": with_flips(model) for name, model in list(models.items())})
    figures: dict = {"cpu": info.describe(), "bundle": bundle.card.name}

    tiles = per_tile(models, real_tiles(bundle.preprocess), args.rounds)
    figures["ms_per_tile"] = tiles
    print(f"\n| runtime | ms per 256² tile (batch 8, median of {args.rounds}) | × keras |")
    print("|---|---|---|")
    for name, ms in tiles.items():
        print(f"| {name} | {ms:.1f} | {ms / tiles[KERAS]:.2f} |")

    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or default_image(Path(tmp))
        seconds = predict_seconds(bundle, models, image, args.repeats, args.instances)
    figures["predict_seconds"] = seconds
    what = "predict --instances" if args.instances else "predict"
    print(f"\n| runtime | {what} {image.name}, s (median of {args.repeats}) | × keras |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {value / seconds[KERAS]:.2f} |")

    auto = bundle_runtime_cache(bundle).gate_record()
    if auto is not None:
        print(f"\nauto on this CPU: {selection.choose(auto)} (gate record of {auto['cpu']})")
        figures["auto"] = selection.choose(auto)

    if args.first_use:
        cold, warm, chosen = first_use(bundle)
        figures["first_use"] = {"seconds": cold, "cached_seconds": warm, "auto": chosen}
        print(
            f"\nauto on an empty cache: {cold:.1f} s (chose {chosen}); from the cache: {warm:.2f} s"
        )

    if args.data:
        scores = accuracy(bundle, models, args.data)
        figures["accuracy"] = scores
        print(f"\n| runtime | pooled Dice, {args.data.name} test | masks vs keras | max abs Δp |")
        print("|---|---|---|---|")
        for name, s in scores.items():
            print(
                f"| {name} | {s['pooled_dice']:.4f} | {s['mask_dice_vs_keras']:.4f} | "
                f"{s['max_abs_diff']:.4f} |"
            )
        if args.tilings:
            fastest = min(tiles, key=tiles.get)
            rows = tilings(bundle, models[fastest], args.data)
            figures["tilings"] = rows
            print(f"\n| tile | overlap | pixels predicted (× image) | pooled Dice | s per image "
                  f"({fastest}) |")  # fmt: skip
            print("|---|---|---|---|---|")
            for row in rows:
                print(
                    f"| {row['tile']} | {row['overlap']} | {row['pixels_predicted']:.2f} | "
                    f"{row['pooled_dice']:.4f} | {row['seconds']:.2f} |"
                )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
