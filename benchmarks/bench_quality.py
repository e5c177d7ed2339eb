"""Quality on every evaluation set: pooled Dice and Jaccard of models beside the classical baseline.

Every image of each set in ``../shared/data`` (see its README: roles and licences) is predicted at
full size and scored at the model's card threshold; pixel counts are summed over the set
(pooled). Rows:

* ``monuseg-test`` — the 14 MoNuSeg test tiles (40×, ≈0.25 µm/px);
* ``monuseg-test@20x`` — the same tiles resampled to half size (≈0.5 µm/px, what a 20× scan
  looks like), predicted as they are;
* ``monuseg-test@20x→40x`` — the half-size tiles predicted with their pixel size given (0.5
  µm/px, as ``--pixel-size 0.5`` does): resampled ×2 to the model's 0.25 µm/px and the
  probabilities back to the half-size grid;
* ``monuseg-test@20x (auto)`` — the half-size tiles given *as is*, with no pixel size anywhere:
  what ``predict`` and the app do then (``--pixel-size auto``,
  :func:`segcore.inference.scale.predict_auto`: the pixel size estimated from the nuclei);
* ``pannuke-breast``, ``tnbc``, ``cryonuseg``, ``consep`` — evaluation-only sets from other labs,
  scored on their **test parts** (``split.json``; their validation parts are for choosing
  settings: ``python -m segcore choose-threshold``).

The ``reference`` column quotes ``../shared/data/README.md``'s classical figure on the same images
(hematoxylin, Gaussian 5×5 σ 1, Otsu); ``--model classical=baseline`` is this project's
implementation with σ 2, measured here.

Models run in the keras runtime (the reference) unless ``--runtime NAME=RUNTIME`` says otherwise
(e.g. ``--model int8=default --runtime int8=openvino-int8``); ``--flips NAME`` makes model NAME
predict the mean of its four flips (``--flips`` on the command line).

Usage (``--model`` may repeat; ``baseline`` is the classical hematoxylin + Otsu reference)::

    python benchmarks/bench_quality.py --model classical=baseline --model v3=default \\
        --model v2=/tmp/v2 --out docs/quality.md

(an older default from git history: ``mkdir /tmp/v2 && git show 16be8e4:weights/default/card.json
> /tmp/v2/card.json && git show 16be8e4:weights/default/model.keras > /tmp/v2/model.keras``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.bundles.loading import load_bundle
from segcore.bundles.runtime_cache import open_bundle_runtime
from segcore.data.images import read_image, read_mask_array
from segcore.inference.classical import ClassicalBaseline
from segcore.inference.flips import FLIPS_DETAIL, with_flips
from segcore.inference.instances import label_instances
from segcore.inference.resolution import DEFAULT_MODEL_PIXEL_SIZE
from segcore.inference.scale import AUTO, predict_at_given_pixel_size
from segcore.metrics.counts import ConfusionCounts, confusion_counts
from segcore.metrics.instances import combine_instance_scores, instance_scores
from segcore.metrics.labels import ground_truth_instances
from segcore.metrics.sweep import threshold_sweep

ROWS = [
    # (row, folder, mode, part of split.json or None for every image)
    ("monuseg-test", "monuseg/test", None, None),
    ("monuseg-test@20x", "monuseg/test", "half", None),
    ("monuseg-test@20x→40x", "monuseg/test", "half-resampled", None),
    ("monuseg-test@20x (auto)", "monuseg/test", "half-auto", None),
    ("pannuke-breast test", "pannuke-breast", None, "test"),
    ("tnbc test", "tnbc", None, "test"),
    ("cryonuseg test", "cryonuseg", None, "test"),
    ("consep test", "consep", None, "test"),
]

REFERENCE = {
    "monuseg-test": 0.767,
    "pannuke-breast test": 0.550,
    "tnbc test": 0.682,
    "cryonuseg test": 0.752,
    "consep test": 0.654,
}
"""``../shared/data/README.md``'s classical pooled Dice (σ 1) on each row's images."""


def pairs(folder: Path, part: str | None = None) -> list[tuple[Path, Path]]:
    """``(image, mask)`` files of a set: ``images/<stem>.*`` with ``masks/<stem>.png``; only
    the stems ``split.json`` puts in ``part`` when one is named."""
    images = sorted(p for p in (folder / "images").iterdir() if not p.name.startswith("."))
    if part is not None:
        stems = set(json.loads((folder / "split.json").read_text())[part])
        images = [image for image in images if image.stem in stems]
    return [(image, folder / "masks" / f"{image.stem}.png") for image in images]


def probabilities(bundle, image: np.ndarray, mode: str | None) -> tuple[np.ndarray, float]:
    """The bundle's probabilities for ``image`` and the pixel size they are taken to be at
    (for splitting nuclei): for ``half-resampled``, seen at the model's pixel size (the
    half-size image is 0.5 µm/px), as ``--pixel-size 0.5`` does; for ``half-auto``, at the
    pixel size estimated from the nuclei (the classical baseline has none: as is)."""
    if mode == "half-auto" and not isinstance(bundle.model, ClassicalBaseline):
        pixel_size = AUTO
    else:
        pixel_size = 0.5 if mode == "half-resampled" else None
    probs, used, _ = predict_at_given_pixel_size(
        bundle.model,
        image,
        bundle.preprocess,
        pixel_size=pixel_size,
        threshold=bundle.threshold,
        model_pixel_size=bundle.pixel_size,
    )
    return probs, used or bundle.pixel_size or DEFAULT_MODEL_PIXEL_SIZE


def score_row(
    bundles: dict, files: list, mode: str | None, sweeps: dict | None = None
) -> tuple[dict, dict]:
    """Pooled pixel counts and per-image instance scores of every model on one row; with
    ``sweeps`` (model name → list), each image's threshold sweep is appended there too, from
    the same probabilities."""
    counts = {name: ConfusionCounts(0, 0, 0, 0) for name in bundles}
    objects: dict[str, list] = {name: [] for name in bundles}
    for image_path, mask_path in files:
        image = read_image(image_path)
        truth, _ = ground_truth_instances(read_mask_array(mask_path), name=mask_path.name)
        if mode is not None:  # half size: ≈0.5 µm/px
            height, width = truth.shape
            size = (width // 2, height // 2)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            truth = cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST)
        mask = (truth > 0).astype(np.uint8)
        for name, bundle in bundles.items():
            prob, pixel_size = probabilities(bundle, image, mode)
            counts[name] = counts[name] + confusion_counts(mask, prob >= bundle.threshold)
            split = bundle.instances
            labels = label_instances(prob, bundle.threshold, split, pixel_size=pixel_size)
            objects[name].append(instance_scores(truth, labels))
            if sweeps is not None:
                sweeps[name].append(threshold_sweep(mask, prob))
    return counts, {name: combine_instance_scores(scores) for name, scores in objects.items()}


def instance_table(results: dict, names: list[str]) -> str:
    """Mean PQ, mean AJI and the median count error per set and model."""
    head = "| set | " + " | ".join(f"{n} PQ | {n} AJI | {n} count error" for n in names) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(names)]
    for row, (_, _, objects) in results.items():
        cells = " | ".join(
            f"{objects[n]['mean_pq']:.3f} | {objects[n]['mean_aji']:.3f} | "
            f"{objects[n]['median_count_error']:.1%}"
            for n in names
        )
        lines.append(f"| {row} | {cells} |")
    return "\n".join(lines)


def markdown(results: dict, bundles: dict, command: str, seconds: float) -> str:
    names = list(bundles)
    head = "| set | images | reference | "
    head += " | ".join(f"{n} Dice | {n} Jaccard" for n in names) + " |"
    lines = [head, "|---|---|---|" + "---|---|" * len(names)]
    for row, (images, counts, _) in results.items():
        cells = " | ".join(f"{counts[n].dice:.3f} | {counts[n].jaccard:.3f}" for n in names)
        reference = f"{REFERENCE[row]:.3f}" if row in REFERENCE else "–"
        lines.append(f"| {row} | {images} | {reference} | {cells} |")
    models = "\n".join(
        f"- **{n}**: `{b.card.name}` at threshold {b.threshold:g}"
        + (f" (sha256 `{b.card.model_sha256[:12]}`)" if b.card.model_sha256 else "")
        for n, b in bundles.items()
    )
    return (
        "\n".join(lines)
        + f"\n\n{models}\n\nPooled over all pixels of each set, full-size tiled inference; "
        "*reference*: `../shared/data/README.md`'s classical figure (σ 1) on the same images.\n"
        "\nNuclei as objects (each model's mask split with its card's instance setting; "
        "PQ and AJI averaged over images; count error = median over images of "
        "|predicted − true| / true):\n\n" + instance_table(results, names) + "\n\n"
        f"Command: `{command}` ({seconds / 60:.0f} min on {platform.machine()}, "
        f"{platform.system()}, Python {platform.python_version()}).\n"
    )


def main() -> int:
    """Scores every model on every row and prints (or writes) the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=REF")
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        help="NAME=RUNTIME: run model NAME in that runtime (keras, openvino, openvino-bf16, "
        "openvino-int8, auto); default keras for every model",
    )
    parser.add_argument(
        "--flips",
        action="append",
        default=[],
        metavar="NAME",
        help="model NAME predicts the mean of its four flips (segcore.inference.flips)",
    )
    parser.add_argument("--data", default="../shared/data", help="folder of the sets")
    parser.add_argument("--out", help="write the Markdown table here (default: print it)")
    parser.add_argument("--json", help="also write the counts as JSON")
    args = parser.parse_args()
    bundles = dict(spec.split("=", 1) for spec in args.model)
    bundles = {name: load_bundle(ref) for name, ref in bundles.items()}
    for name, runtime in (spec.split("=", 1) for spec in args.runtime):
        model = open_bundle_runtime(bundles[name], runtime, report=print)
        bundles[name] = dataclasses.replace(bundles[name], model=model)  # predicts in that runtime
        print(f"{name}: runtime {getattr(model, 'name', 'classical')}")
    for name in args.flips:  # after --runtime: the flips wrap whichever runtime NAME runs in
        model = with_flips(bundles[name].model)
        bundles[name] = dataclasses.replace(bundles[name], model=model)
        print(f"{name}: {FLIPS_DETAIL}")
    start = time.monotonic()
    results = {}
    for row, folder, mode, part in ROWS:
        folder = Path(args.data) / folder
        if not folder.is_dir():
            print(f"{row}: {folder} not found, skipped", file=sys.stderr)
            continue
        files = pairs(folder, part)
        results[row] = (len(files), *score_row(bundles, files, mode))
        dice = {n: round(c.dice, 4) for n, c in results[row][1].items()}
        pq = {n: round(o["mean_pq"], 4) for n, o in results[row][2].items()}
        print(f"{row}: Dice {dice}, PQ {pq}", file=sys.stderr)
    command = "python benchmarks/bench_quality.py " + " ".join(sys.argv[1:])
    text = markdown(results, bundles, command, time.monotonic() - start)
    if args.json:
        data = {
            r: {n: {**c.as_dict(), "instances": objects[n]} for n, c in counts.items()}
            for r, (_, counts, objects) in results.items()
        }
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
