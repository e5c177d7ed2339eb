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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from validation_table import SourceTable, add_source_arguments, open_sources  # noqa: E402


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
    add_source_arguments(parser)
    args = parser.parse_args(argv)

    from segcore.bundles.loading import load_bundle
    from segcore.training.blending import StartBlend

    start = load_bundle(args.start)
    sources = open_sources(args)
    own = start.model.get_weights()
    trained = tuned_weights(args.tuned)
    reference_t = args.reference_threshold or start.threshold
    table = SourceTable("start's share", [s.name for s in sources], args.rule, reference_t)
    for share in [1.0, *sorted(set(args.share or [0.7, 0.5, 0.3, 0.0]) - {1.0}, reverse=True)]:
        blended = StartBlend(own, share, args.start).blended(trained) if share < 1 else own
        start.model.set_weights(blended)
        table.score(f"{share:.2f}", start.model, sources, start)
    table.finish(f"Start {start.card.name} ({args.start}), tuned {args.tuned}", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
