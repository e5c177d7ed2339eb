"""``choose-threshold``: one threshold for many labs, chosen on their validation parts.

Sweeps the thresholds on the validation images of the training set (``--data``, its ``val``
split) and on the ``val`` part of every ``--source`` folder (fixed by its ``split.json``), then
chooses the threshold of the best mean (or worst) per-source pooled Dice
(:mod:`segcore.evaluation.sources`). Prints a table per source; ``--update-card`` records the
threshold and the whole choice in the bundle's card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segcore.cli.common import command_line, runtime_model
from segcore.errors import ConfigError


def cmd_choose_threshold(args: argparse.Namespace) -> int:
    """Scores every source, prints the table, optionally records the choice."""
    from segcore.bundles.loading import load_bundle
    from segcore.evaluation.sources import (
        carved_validation_source,
        open_validation_sources,
        score_sources,
    )

    if args.threshold is not None:
        raise ConfigError("choose-threshold chooses the threshold: --threshold does not apply")
    bundle = load_bundle(args.model)
    if args.update_card and bundle.path is None:
        raise ConfigError("--update-card: the classical baseline has no card to update")
    own = carved_validation_source(args.data, args.seed, args.pixel_size)
    sources = [own, *open_validation_sources(args.source)]
    choice, sweeps = score_sources(
        runtime_model(bundle, args.runtime, args.quiet, flips=args.flips),
        sources,
        bundle.preprocess,
        rule=args.rule,
        model_pixel_size=bundle.pixel_size,
        tile_size=args.tile_size or bundle.input_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
    )
    print(f"{'source':20s} {'images':>6s} {'Dice here':>9s} {'at card':>8s} {'own best':>14s}")
    for source in sources:
        sweep = sweeps[source.name]
        at_card = float(sweep.pooled.get("dice")[sweep.index_of(round(bundle.threshold, 2))])
        own_t, own_d = choice.own_best[source.name]
        print(
            f"{source.name:20s} {len(source.samples):6d} {choice.dice[source.name]:9.4f} "
            f"{at_card:8.4f} {own_d:7.4f} at {own_t:.2f}"
        )
    print(
        f"chosen threshold {choice.threshold:.2f} ({args.rule} of per-source pooled Dice "
        f"{choice.score:.4f}); the card's is {bundle.threshold:.2f}"
    )
    if args.update_card:
        _record(bundle.path, args, choice, sources)
    return 0


def _record(folder: Path, args: argparse.Namespace, choice, sources) -> None:
    from segcore.bundles.store import update_card, with_training_record

    record = {
        "command": command_line(args.argv),
        "sources": {s.name: {"images": len(s.samples)} for s in sources},
        "parts": "validation only (the training set's val split; split.json's val parts)",
        **choice.to_dict(),
    }
    path = update_card(
        folder,
        lambda card: with_training_record(
            card, "threshold_choice", record, threshold=choice.threshold
        ),
    )
    print(f"recorded threshold {choice.threshold:.2f} in {path}")


def add_choose_threshold(commands, add_inference_args) -> None:
    """Registers ``choose-threshold``."""
    sub = commands.add_parser(
        "choose-threshold",
        help="choose one mask threshold for several labs' data",
        description="Sweeps thresholds on --data's val split and on the val part (split.json) "
        "of every --source, and chooses the threshold of the best mean (or worst) per-source "
        "pooled Dice. Validation parts only: never a test part.",
    )
    add_inference_args(sub)
    sub.add_argument("--data", required=True, help="the training set's folder (its val split)")
    sub.add_argument("--seed", type=int, default=0, help="seed of splits made here (default 0)")
    sub.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="DIR",
        help="another lab's set with a split.json (repeat the flag)",
    )
    sub.add_argument(
        "--rule",
        default="mean",
        choices=("mean", "worst"),
        help="mean: the best mean of the sources' Dice (default); worst: the best "
        "worst-source Dice",
    )
    sub.add_argument(
        "--update-card",
        action="store_true",
        help="write the chosen threshold (and how it was chosen) into the bundle's card.json",
    )
    sub.set_defaults(func=cmd_choose_threshold)
