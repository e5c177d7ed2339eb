"""Blends of a fine-tuning with its start, scored on every source's validation part.

How ``TrainConfig.start_blend`` was chosen for the default recipe (issue 19; ``docs/quality.md``,
"v7"): the weights of a starting bundle and of a model fine-tuned from it are mixed at several
shares of the start (:class:`segcore.training.blending.StartBlend`, the trainer's own code), and
each blend is scored as ``choose-threshold`` scores a bundle — MoNuSeg's carved validation
tiles (``--seed 1``) and the ``val`` part of every ``--source``, one threshold by the source
rule. Validation parts only: nothing here reads a test part.

The table gives, per share: the shared threshold, each source's pooled Dice there, the rule's
score, and the largest fall of a source's Dice from the start's own at ``--reference-threshold``
(issue 19's "no source's validation Dice falls by more than 0.005 from v4.1 at v4.1's own
threshold": 0.65 for v4.1's weights).

Usage (about 40 s per share on the 2-core VM)::

    python benchmarks/bench_blend.py --tuned /work/runs-v6/v6/bundle --reference-threshold 0.65

``--tuned`` takes a bundle folder or a ``.keras`` checkpoint of the same architecture;
``--share 0.5 --share 0.3`` picks the shares (the start alone, share 1, is always scored).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
SOURCES = ("tnbc", "cryonuseg", "pannuke-breast", "consep")


def tuned_weights(path: str):
    """The weights of a bundle folder or of a ``.keras`` checkpoint."""
    import keras

    from segcore.bundles.loading import load_bundle

    if path.endswith(".keras"):
        import segcore.network.keras_metrics
        import segcore.network.layers  # noqa: F401 - registers the custom layers

        return keras.saving.load_model(path, compile=False).get_weights()
    return load_bundle(path).model.get_weights()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", default="default", help="the starting bundle (default: default)")
    parser.add_argument("--tuned", required=True, help="bundle folder or .keras checkpoint")
    parser.add_argument("--share", type=float, action="append", help="the start's share(s)")
    parser.add_argument("--data", default=str(DATA / "monuseg"))
    parser.add_argument("--seed", type=int, default=1, help="the carve of --data's val split")
    parser.add_argument("--source", action="append", help="evaluation set folder(s)")
    parser.add_argument("--rule", default="mean", choices=("mean", "worst"))
    parser.add_argument("--reference-threshold", type=float, help="default: the start's card's")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    from segcore.bundles.loading import load_bundle
    from segcore.evaluation.sources import (
        carved_validation_source,
        open_validation_sources,
        score_sources,
    )
    from segcore.training.blending import StartBlend

    start = load_bundle(args.start)
    sources = [
        carved_validation_source(args.data, args.seed),
        *open_validation_sources(args.source or [str(DATA / s) for s in SOURCES]),
    ]
    own = start.model.get_weights()
    trained = tuned_weights(args.tuned)
    reference_t = round(args.reference_threshold or start.threshold, 2)
    names = [s.name for s in sources]
    lines = [
        f"| start's share | threshold | {' | '.join(names)} | {args.rule} | largest fall |",
        "|---" * (len(names) + 4) + "|",
    ]
    reference = None
    for share in [1.0, *sorted(set(args.share or [0.7, 0.5, 0.3, 0.0]) - {1.0}, reverse=True)]:
        blended = StartBlend(own, share, args.start).blended(trained) if share < 1 else own
        start.model.set_weights(blended)
        choice, sweeps = score_sources(
            start.model,
            sources,
            start.preprocess,
            rule=args.rule,
            model_pixel_size=start.pixel_size,
            tile_size=start.input_size,
        )
        if reference is None:
            reference = {
                name: float(sweep.pooled.get("dice")[sweep.index_of(reference_t)])
                for name, sweep in sweeps.items()
            }
        fall = max(reference[n] - choice.dice[n] for n in names)
        dice = " | ".join(f"{choice.dice[n]:.4f}" for n in names)
        lines.append(
            f"| {share:.2f} | {choice.threshold:.2f} | {dice} | {choice.score:.4f} | {fall:+.4f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        f"Start {start.card.name} ({args.start}), tuned {args.tuned}; validation parts only; "
        f"largest fall: from the start's own Dice at threshold {reference_t:.2f}. "
        f"{platform.node()}, {datetime.date.today()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
