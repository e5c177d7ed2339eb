"""The ``python -m segcore`` parser, its commands and :func:`main`.

Commands:
    synth   write a synthetic H&E nuclei dataset in the ``images/`` + ``masks/`` layout.
    train   train DeepLabV3+ in a run directory (or resume one); ends with a model bundle.
    evaluate  score a model bundle on a dataset split (per image, pooled, threshold sweep).
    predict   write probability and mask PNGs for images of any size (``--instances``: nuclei
              as labels, QuPath GeoJSON and a measurement table).
    tune-instances  choose the nucleus split and size settings on validation tiles.
    choose-threshold  choose one threshold on the validation parts of many sources.
    slide   whole-slide images: ``info``, ``run`` (segment), ``resume`` (a background job).
    batch   many slides and images on a Ray cluster (a local one by default).
    runtimes  the runtimes on this CPU, their accuracy gate, ``auto``'s choice.
    push    publish a model bundle to the Hugging Face Hub.

What ``--help`` shows a user is :data:`DESCRIPTION`, :data:`EPILOG` and each command's own
``help``/``description`` (plain text: no reST roles or markup).

Errors of type :class:`~segcore.errors.SegcoreError` are printed as one line on stderr with exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from segcore.cli.batch_cmd import add_batch
from segcore.cli.common import (
    FLIPS_HELP,
    check_unique_stems,
    command_line,
    output_folder,
    runtime_model,
)
from segcore.cli.objects import add_tune_instances, print_instance_summary
from segcore.cli.runtimes_cmd import add_runtimes
from segcore.cli.slides_cmd import add_slides
from segcore.cli.sources_cmd import add_choose_threshold
from segcore.errors import ConfigError, SegcoreError
from segcore.inference.runtimes.base import CHOICES, default_runtime

log = logging.getLogger("segcore")


def _cmd_synth(args: argparse.Namespace) -> int:
    from segcore.data.synthetic_set import generate_dataset

    start = time.perf_counter()
    out = generate_dataset(args.out, count=args.count, size=args.size, seed=args.seed)
    log.info(
        "wrote %d tiles of %d×%d to %s in %.1f s",
        args.count,
        args.size,
        args.size,
        out,
        time.perf_counter() - start,
    )
    return 0


_TRAIN_FLAGS = {
    # CLI flag -> TrainConfig field
    "data": "data",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "image_size": "image_size",
    "lr": "lr",
    "loss": "loss",
    "augment": "augment",
    "backbone_weights": "backbone_weights",
    "crops_per_epoch": "crops_per_epoch",
    "init_from": "init_from",
    "seed": "seed",
    "name": "name",
    "licence": "licence",
    "run_dir": "run_dir",
}


def _train_config(args: argparse.Namespace):
    """Defaults, then ``--config FILE``, then explicit flags (the last wins)."""
    from segcore.training.config import TrainConfig

    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    flags = {
        field: getattr(args, flag)
        for flag, field in _TRAIN_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if flags.get("backbone_weights") == "none":
        flags["backbone_weights"] = None
    return TrainConfig.from_dict({**base, **flags})


def _cmd_train(args: argparse.Namespace) -> int:
    from segcore.training.trainer import train

    if args.resume:
        run = train(run_dir=args.resume, resume=True, command=command_line(args.argv))
    else:
        run = train(_train_config(args), command=command_line(args.argv))
    status = run.read_status()
    print(
        f"{run.path}: {status.get('state')}"
        + (f", bundle {status['bundle']}" if status.get("bundle") else "")
    )
    return 0 if status.get("state") in ("completed", "stopped") else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segcore.atomic import write_json_atomic
    from segcore.bundles.loading import load_bundle
    from segcore.data.datasets import dataset_pixel_size, open_dataset
    from segcore.evaluation.evaluate import evaluate
    from segcore.inference.resolution import DEFAULT_MODEL_PIXEL_SIZE
    from segcore.inference.scale import estimate_samples, is_auto

    pixel_size = _given_pixel_size(args)
    bundle = load_bundle(args.model)
    splits = open_dataset(args.data, seed=args.seed)
    samples = splits.split(args.split)
    if pixel_size is None:  # a score is of a stated scale: auto only when asked for
        pixel_size = dataset_pixel_size(args.data)
    threshold = bundle.threshold if args.threshold is None else args.threshold

    def progress(done, total, sample_id):
        if not args.quiet:
            print(f"[{done}/{total}] {sample_id}", file=sys.stderr)

    model = runtime_model(bundle, args.runtime, args.quiet, flips=args.flips)
    estimate = None
    if is_auto(pixel_size) and len(samples) == 0:
        pixel_size = None  # evaluate says the split is empty
    elif is_auto(pixel_size):  # one estimate for the split (one scanner), printed
        estimate = estimate_samples(
            model,
            samples,
            bundle.preprocess,
            threshold=bundle.threshold,  # what the estimator is calibrated at
            model_pixel_size=bundle.pixel_size,
            tile_size=args.tile_size or bundle.input_size,
            overlap=args.overlap,
            batch_size=args.batch_size,
            progress=lambda done, total, sample_id: progress(done, total, f"{sample_id} (scale)"),
        )
        print(estimate.describe())
        native = estimate.pixel_size == (bundle.pixel_size or DEFAULT_MODEL_PIXEL_SIZE)
        pixel_size = None if native else estimate.pixel_size  # native: recorded as such
    result = evaluate(
        model,
        samples,
        bundle.preprocess,
        threshold=threshold,
        tile_size=args.tile_size or bundle.input_size,
        overlap=args.overlap,
        batch_size=args.batch_size,  # each image is logged ("evaluated ... (i/n)"): no bar
        pixel_size=pixel_size,
        model_pixel_size=bundle.pixel_size,
        instances=bundle.instances,
    )
    args.pixel_size = pixel_size  # recorded with the figures
    print(
        f"{'image':40s} {'dice':>7s} {'jaccard':>7s} {'prec':>7s} {'recall':>7s} "
        f"{'PQ':>7s} {'AJI':>7s} {'nuclei':>11s}"
    )
    for row in result.per_image:
        print(
            f"{row['id']:40s} {row['dice']:7.4f} {row['jaccard']:7.4f} "
            f"{row['precision']:7.4f} {row['recall']:7.4f} {row['pq']:7.4f} {row['aji']:7.4f} "
            f"{row['nuclei_pred']:5d}/{row['nuclei_true']:<5d}"
        )
    for label, values in (("pooled", result.pooled), ("mean", result.mean)):
        print(
            f"{label:40s} {values['dice']:7.4f} {values['jaccard']:7.4f} "
            f"{values['precision']:7.4f} {values['recall']:7.4f}"
        )
    print_instance_summary(result)
    best = result.best_threshold
    print(
        f"threshold {threshold:.2f}; best pooled Dice "
        f"{float(result.sweep.pooled.dice[result.sweep.index_of(best)]):.4f} at {best:.2f}"
    )
    if args.update_card:
        if bundle.path is None:
            raise ConfigError("--update-card: the classical baseline has no card to update")
        _record_in_card(bundle.path, args, result, threshold)
    if args.json:
        data = {
            "model": str(bundle.path or args.model),
            "data": str(args.data),
            "split": args.split,
            "pixel_size": pixel_size,
            **({"pixel_size_estimate": estimate.describe()} if estimate is not None else {}),
            **result.to_dict(),
        }
        write_json_atomic(args.json, data)
        print(f"wrote {args.json}")
    return 0


def _record_in_card(folder, args: argparse.Namespace, result, threshold: float) -> None:
    """Records the evaluation's figures in the bundle card under ``metrics[<split>]`` (the val
    split under ``"validation"``, the key training writes)."""
    from segcore.bundles.card import VALIDATION, SplitFigures
    from segcore.bundles.store import update_card

    figures = SplitFigures.from_evaluation(
        result,
        split=VALIDATION if args.split == "val" else args.split,
        threshold=threshold,
        data=str(args.data),
        pixel_size=args.pixel_size,
        command=command_line(args.argv),
    )
    path = update_card(folder, lambda card: card.with_figures(figures))
    print(f"recorded the {figures.key} figures in {path}")


def _given_pixel_size(args: argparse.Namespace) -> float | str | None:
    """``--pixel-size``, checked before any model is loaded (None when not given,
    :data:`~segcore.inference.scale.AUTO` for ``auto``)."""
    from segcore.inference.resolution import check_pixel_size
    from segcore.inference.scale import AUTO, is_auto

    if args.pixel_size is None:
        return None
    if is_auto(args.pixel_size):
        return AUTO
    return check_pixel_size(args.pixel_size, what="--pixel-size")


def _pixel_size_arg(text: str) -> float | str:
    """``--pixel-size`` as typed: ``auto`` or a number (its range is checked by
    :func:`_given_pixel_size`, which names the flag)."""
    from segcore.inference.scale import AUTO, is_auto

    if is_auto(text):
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 'auto' or a number of µm per pixel"
        ) from None


def _cmd_predict(args: argparse.Namespace) -> int:
    from segcore.bundles.loading import load_bundle
    from segcore.cli.predict_files import PredictJob, predict_files

    given = _given_pixel_size(args)
    check_unique_stems(args.images)  # before the (slow) model, and before anything is written
    out = output_folder(args.out)
    bundle = load_bundle(args.model)
    job = PredictJob(
        bundle=bundle,
        model=runtime_model(bundle, args.runtime, args.quiet, flips=args.flips),
        out=out,
        threshold=bundle.threshold if args.threshold is None else args.threshold,
        pixel_size=given,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        instances=args.instances,
        quiet=args.quiet,
    )
    return 2 if predict_files(job, list(args.images)) else 0


def _cmd_push(args: argparse.Namespace) -> int:
    from segcore.bundles.hub import push_bundle

    commit = push_bundle(args.bundle, args.repo, private=args.private, revision=args.revision)
    print(f"pushed {args.bundle} to {args.repo}; load it with hf://{args.repo}@{commit}")
    return 0


def _add_synth(commands) -> None:
    from segcore.data.synthetic_set import SYNTHETIC_COUNT

    synth = commands.add_parser(
        "synth",
        help="write a synthetic H&E nuclei dataset",
        description="Write a synthetic H&E-like nuclei dataset (images/ and masks/ folders) to "
        "try training and evaluation without real data.",
    )
    synth.add_argument("--out", required=True, help="folder to create (images/ and masks/ inside)")
    synth.add_argument(
        "--count",
        type=int,
        default=SYNTHETIC_COUNT,
        help=f"number of tiles (default {SYNTHETIC_COUNT})",
    )
    synth.add_argument("--size", type=int, default=256, help="tile side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(func=_cmd_synth)


def _add_train(commands) -> None:
    tr = commands.add_parser(
        "train",
        help="train a model (or --resume a run); ends in a bundle",
        description="Train DeepLabV3+ in a run folder, runs/<id>/ (config, status, metrics, "
        "previews, checkpoints, train.log), ending with a model bundle in runs/<id>/bundle that "
        "--model takes. Flags override --config, which overrides the defaults. Progress goes to "
        "stderr: a bar on a terminal, one line per epoch otherwise.",
    )
    tr.add_argument("--data", help="dataset folder, or 'synthetic' (default)")
    tr.add_argument("--epochs", type=int, help="number of epochs (default 40)")
    tr.add_argument("--batch-size", type=int, help="crops per batch (default 8)")
    tr.add_argument(
        "--image-size", type=int, help="training crop side, multiple of 16 (default 256)"
    )
    tr.add_argument("--lr", type=float, help="initial learning rate of Adam (default 1e-3)")
    tr.add_argument("--loss", choices=("bce", "bce+dice"), help="loss (default bce)")
    tr.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random flips, rotations, scale and colour jitter (default on)",
    )
    tr.add_argument("--backbone-weights", help="imagenet, none (default) or a ResNet50 .h5 path")
    tr.add_argument(
        "--crops-per-epoch",
        type=int,
        help="random crops per epoch (default: each training image once)",
    )
    tr.add_argument(
        "--init-from", help="start from this bundle's weights (fine-tuning; same architecture)"
    )
    tr.add_argument("--seed", type=int, help="random seed (default 0)")
    tr.add_argument("--name", help="name recorded in the bundle's card")
    tr.add_argument("--licence", help="licence of the weights (that of the training data)")
    tr.add_argument("--run-dir", help="run folder (default runs/<new id>)")
    tr.add_argument("--config", help="JSON file of training settings (a run's config.json)")
    tr.add_argument("--resume", metavar="RUN", help="resume the run in this folder")
    tr.set_defaults(func=_cmd_train)


def _add_inference_args(sub, *, auto: bool = False, pixel_default: str = "") -> None:
    sub.add_argument(
        "--model",
        default="default",
        help="the model: a bundle folder, a name under weights/, or hf://org/name@rev "
        "(default: weights/default); 'baseline' for the classical hematoxylin + Otsu reference",
    )
    sub.add_argument(
        "--runtime",
        default=default_runtime(),
        choices=CHOICES,
        help="what runs the network: keras (TensorFlow float32, the reference), openvino "
        "(float32), openvino-bf16, openvino-int8, or auto: the fastest installed one that "
        "passed the accuracy gate on this CPU (the first use converts and checks, once per "
        "model). Default: $SEGCORE_RUNTIME, else auto",
    )
    sub.add_argument(
        "--threshold", type=float, help="mask threshold on the probability (default: the model's)"
    )
    sub.add_argument("--tile-size", type=int, help="tile side in pixels (default: the model's)")
    sub.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default 64)")
    sub.add_argument("--batch-size", type=int, default=8, help="tiles per batch (default 8)")
    sub.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    if not auto:
        sub.add_argument(
            "--pixel-size",
            type=float,
            metavar="UM",
            help="µm per pixel of the images (40x ≈ 0.25, 20x ≈ 0.5); they are resampled to "
            "the model's and the outputs back. Default: the dataset's dataset.json, else the "
            "model's",
        )
        return
    sub.add_argument(
        "--pixel-size",
        type=_pixel_size_arg,
        metavar="UM|auto",
        help="µm per pixel of the images (40x ≈ 0.25, 20x ≈ 0.5); they are resampled to the "
        "model's and the outputs back; 'auto' estimates it from the nuclei (a first pass at "
        f"the model's pixel size, read as 40x or 20x). Default: {pixel_default}",
    )


def _add_evaluate(commands) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="score a model on a dataset split (Dice, PQ, AJI)",
        description="Score a model on one split of a dataset: per-image and pooled Dice, "
        "Jaccard, precision and recall at the model's threshold, a threshold sweep, and the "
        "nuclei as objects (PQ, AJI, detection F1, counts). The tables go to stdout, progress "
        "to stderr.",
    )
    _add_inference_args(ev, auto=True, pixel_default="the dataset's dataset.json, else the model's")
    ev.add_argument("--data", required=True, help="dataset folder (any supported layout)")
    ev.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="the split to score (default test)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of splits made here (default 0)")
    ev.add_argument("--json", help="also write the full result (per image, sweep) to this file")
    ev.add_argument(
        "--update-card",
        action="store_true",
        help="record the figures and this command in the bundle's card.json",
    )
    ev.set_defaults(func=_cmd_evaluate)


def _add_predict(commands) -> None:
    pr = commands.add_parser(
        "predict",
        help="segment images: probability, mask and nuclei files",
        description="Segment image files of any size (overlapping tiles, blended). For each "
        "image, writes <stem>_prob.png (probability × 255) and <stem>_mask.png (0/255) into "
        "--out; --instances adds the nuclei. A progress bar per image goes to stderr.",
    )
    _add_inference_args(
        pr, auto=True, pixel_default="the image's own metadata (TIFF resolution, OME), else auto"
    )
    pr.add_argument("--out", required=True, help="output folder (made if missing; checked first)")
    pr.add_argument(
        "--instances",
        action="store_true",
        help="also split the mask into nuclei and write <stem>_labels.png (uint16 labels), "
        "<stem>.geojson (QuPath detections) and <stem>_nuclei.csv (one row per nucleus)",
    )
    pr.add_argument(
        "images",
        nargs="+",
        help="image files (PNG, JPEG, TIFF, BMP; any size). Their names without extension must "
        "differ: a/x.png and b/x.tif would write the same x_* files, so they are refused",
    )
    pr.set_defaults(func=_cmd_predict)


def _add_push(commands) -> None:
    pu = commands.add_parser(
        "push",
        help="publish a model bundle to the Hugging Face Hub",
        description="Upload a model bundle folder to a model repository on the Hugging Face "
        "Hub; the printed hf://org/name@commit loads exactly that version.",
    )
    pu.add_argument("bundle", help="bundle folder")
    pu.add_argument("--repo", required=True, help="org/name of the model repository")
    pu.add_argument("--revision", help="branch to push to (default main)")
    pu.add_argument("--private", action="store_true", help="create the repository as private")
    pu.set_defaults(func=_cmd_push)


DESCRIPTION = """\
Segment cell nuclei in H&E-stained microscopy images with a DeepLabV3+ network:
predict masks and nuclei for image tiles and whole slides, evaluate a model on
a dataset, or train one."""

EPILOG = """\
examples:
  python -m segcore predict --out predictions/ tile1.png tile2.tif
  python -m segcore predict --instances --out predictions/ tile1.png
  python -m segcore evaluate --data samples --split test
  python -m segcore slide run case.svs --out slides/case
  python -m segcore train --data my-dataset --epochs 40

'python -m segcore COMMAND --help' lists a command's options; README.md
("Command line") explains every command and its outputs.

Errors in the input end with one line "error: ..." and exit status 2.
TensorFlow's start-up messages are hidden; SEGCORE_DEBUG=1 shows them all."""


class _TopHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written; each command's help on its name's line."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            self._action_max_length += 2  # the commands are indented once more than counted


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser for every ``python -m segcore`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m segcore",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_TopHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    # In the order a user meets them: segmenting first, then training and model upkeep.
    _add_predict(commands)
    _add_evaluate(commands)
    add_slides(commands)
    add_batch(commands)
    _add_train(commands)
    _add_synth(commands)
    add_tune_instances(commands, _add_inference_args)
    add_choose_threshold(commands, _add_inference_args)
    add_runtimes(commands)
    _add_push(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        if getattr(args, "flips", False) and getattr(args, "update_card", False):
            raise ConfigError(
                "--flips with --update-card: a card records the model as the app runs it, "
                "without test-time flips; leave one out"
            )
        return args.func(args)
    except SegcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
