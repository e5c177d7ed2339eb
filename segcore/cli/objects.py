"""Nuclei as objects on the command line: ``tune-instances`` and the instance lines of
``evaluate`` (the files of ``predict --instances``: :mod:`segcore.analysis.image_files`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segcore.cli.common import command_line, runtime_model
from segcore.errors import ConfigError

log = logging.getLogger("segcore")


def print_instance_summary(result) -> None:
    """The set-level instance lines of ``evaluate`` (and its ground-truth notes)."""
    figures = result.instances
    if not figures:
        return
    error = figures.get("median_count_error")
    print(
        f"nuclei: true {figures['n_true']}, predicted {figures['n_pred']}; "
        f"detection F1 {figures['f1']:.4f} (IoU > 0.5); "
        f"PQ {figures['mean_pq']:.4f}, AJI {figures['mean_aji']:.4f} (mean over images); "
        f"pooled PQ {figures['pq']:.4f}, AJI {figures['aji']:.4f}"
        + ("" if error is None else f"; median count error {error:.1%}")
    )
    for note in result.notes:
        print(f"note: {note}")


def cmd_tune_instances(args: argparse.Namespace) -> int:
    """``tune-instances``: the split and size settings of best PQ + AJI on validation tiles."""
    from segcore.bundles.loading import load_bundle
    from segcore.data.datasets import dataset_pixel_size, open_dataset
    from segcore.evaluation.instance_tuning import combine_tunings, tune_instances
    from segcore.evaluation.sources import open_validation_sources

    bundle = load_bundle(args.model)
    splits = open_dataset(args.data, seed=args.seed)
    pixel_size = args.pixel_size or dataset_pixel_size(args.data)
    threshold = bundle.threshold if args.threshold is None else args.threshold
    sets = [(Path(args.data).name, splits.split(args.split), pixel_size)]
    if args.source and args.split != "val":
        raise ConfigError("--source tunes on validation parts: use it with --split val")
    sets += [(s.name, s.samples, s.pixel_size) for s in open_validation_sources(args.source)]
    model = runtime_model(bundle, args.runtime, args.quiet, flips=args.flips)
    tunings = {
        name: tune_instances(
            model,
            samples,
            bundle.preprocess,
            threshold=threshold,
            pixel_size=size,
            model_pixel_size=bundle.pixel_size,
            progress=None if args.quiet else _progress,
        )
        for name, samples, size in sets
    }
    tuning = combine_tunings(tunings)
    print(f"{'min area µm²':>12s} {'depth µm':>8s} {'PQ':>7s} {'AJI':>7s} {'count err':>9s}")
    for row in tuning.table:
        print(
            f"{row['min_area_um2']:12g} {row['split_depth_um']:8g} {row['mean_pq']:7.4f} "
            f"{row['mean_aji']:7.4f} {row['median_count_error']:9.1%}"
        )
    best = tuning.best
    print(
        f"chosen: min_area_um2 {best['min_area_um2']:g}, split_depth_um "
        f"{best['split_depth_um']:g} (mean PQ {best['mean_pq']:.4f}, AJI {best['mean_aji']:.4f} "
        f"on {tuning.n_images} {args.split} images"
        + (f" of {len(tunings)} sources, each weighing the same)" if len(tunings) > 1 else ")")
    )
    if args.update_card:
        if bundle.path is None:
            raise ConfigError("--update-card: the classical baseline has no card to update")
        _record(bundle.path, args, tuning)
    return 0


def _progress(done: int, total: int, sample_id: str) -> None:
    print(f"[{done}/{total}] {sample_id}", file=sys.stderr)


def _record(folder: Path, args: argparse.Namespace, tuning) -> None:
    """Writes the chosen setting into the card's ``instances`` and how it was chosen into
    ``training["instances_tuning"]``."""
    from segcore.bundles.store import update_card, with_training_record

    best = tuning.best
    record = {
        "command": command_line(args.argv),
        "data": str(args.data),
        "split": args.split,
        "sources": args.source,
        "images": tuning.n_images,
        "criterion": "mean over images of (PQ + AJI) / 2"
        + (", then mean over sources" if args.source else ""),
        **{key: round(best[key], 4) for key in ("mean_pq", "mean_aji", "median_count_error")},
    }
    path = update_card(
        folder,
        lambda card: with_training_record(
            card, "instances_tuning", record, instances=tuning.config.to_dict()
        ),
    )
    print(f"recorded the instance settings in {path}")


def add_tune_instances(commands, add_inference_args) -> None:
    """Registers ``tune-instances``."""
    tune = commands.add_parser(
        "tune-instances",
        help="choose how masks are split into nuclei (val tiles)",
        description="Predicts each image of a split once, splits the mask into nuclei with a "
        "grid of minimum areas and split depths, and reports PQ and AJI for each; the best "
        "mean (PQ + AJI) / 2 is chosen. Use validation tiles only.",
    )
    add_inference_args(tune)
    tune.add_argument("--data", required=True, help="dataset folder (any supported layout)")
    tune.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test"),
        help="the split to tune on (default val)",
    )
    tune.add_argument("--seed", type=int, default=0, help="seed of splits made here (default 0)")
    tune.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="DIR",
        help="also tune on this lab's validation part (split.json); repeat the flag; the "
        "sources weigh the same",
    )
    tune.add_argument(
        "--update-card",
        action="store_true",
        help="write the chosen settings (and this command) into the bundle's card.json",
    )
    tune.set_defaults(func=cmd_tune_instances)
