"""One Markdown table of variants scored on every source's validation part.

Shared by the benchmarks that compare variants of one model the way ``choose-threshold``
scores a bundle (``bench_blend.py``: blends of weights; ``bench_stain.py``: stain
normalisations of the input): MoNuSeg's carved validation tiles and the ``val`` part of every
evaluation set, one threshold by the source rule. Validation parts only: nothing here reads a
test part.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = ("tnbc", "cryonuseg", "pannuke-breast", "consep")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--seed``, ``--source``, ``--rule``, ``--reference-threshold`` and
    ``--out``: which validation parts are scored and where the table goes."""
    parser.add_argument("--data", default=str(DATA / "monuseg"), help="the training set")
    parser.add_argument("--seed", type=int, default=1, help="the carve of --data's val split")
    parser.add_argument("--source", action="append", help="evaluation set folder(s)")
    parser.add_argument("--rule", default="mean", choices=("mean", "worst"))
    parser.add_argument("--reference-threshold", type=float, help="default: the bundle's card's")
    parser.add_argument("--out", help="also write the table to this Markdown file")


def open_sources(args: argparse.Namespace) -> list:
    """The training set's carved validation source and every ``--source``'s val part
    (default: the four evaluation sets beside this repository)."""
    from segcore.evaluation.sources import carved_validation_source, open_validation_sources

    return [
        carved_validation_source(args.data, args.seed),
        *open_validation_sources(args.source or [str(DATA / s) for s in SOURCES]),
    ]


class SourceTable:
    """Rows of variants: the shared threshold, each source's pooled Dice there, the rule's
    score, the largest fall of a source from the **first** row's Dice at the reference
    threshold (issue 19's "no source falls by more than 0.005 from v4.1 at its threshold"),
    and with ``own_best`` each source's own best threshold.

    Args:
        first: the first column's heading (what the rows vary).
        names: the sources' names, in column order.
        rule: the source rule (``mean`` or ``worst``).
        reference_threshold: where the first row's Dice is read for the falls.
        own_best: add the own-best-thresholds column.
    """

    def __init__(
        self,
        first: str,
        names: list[str],
        rule: str,
        reference_threshold: float,
        own_best: bool = False,
    ):
        self.names, self.rule, self.own_best = names, rule, own_best
        self.reference_threshold = round(reference_threshold, 2)
        self.reference: dict[str, float] | None = None
        extra = " | own best thresholds" if own_best else ""
        self.lines = [
            f"| {first} | threshold | {' | '.join(names)} | {rule} | largest fall{extra} |",
            "|---" * (len(names) + 4 + own_best) + "|",
        ]

    def score(self, label: str, model: Any, sources: list, bundle: Any) -> str:
        """Scores ``model`` on ``sources`` with ``bundle``'s preprocessing, pixel size and
        input size; adds, prints and returns its row."""
        from segcore.evaluation.sources import score_sources

        choice, sweeps = score_sources(
            model,
            sources,
            bundle.preprocess,
            rule=self.rule,
            model_pixel_size=bundle.pixel_size,
            tile_size=bundle.input_size,
        )
        if self.reference is None:
            t = self.reference_threshold
            self.reference = {
                name: float(sweep.pooled.get("dice")[sweep.index_of(t)])
                for name, sweep in sweeps.items()
            }
        fall = max(self.reference[n] - choice.dice[n] for n in self.names)
        dice = " | ".join(f"{choice.dice[n]:.4f}" for n in self.names)
        row = f"| {label} | {choice.threshold:.2f} | {dice} | {choice.score:.4f} | {fall:+.4f} |"
        if self.own_best:
            row += " " + ", ".join(f"{choice.own_best[n][0]:.2f}" for n in self.names) + " |"
        self.lines.append(row)
        print(row, flush=True)
        return row

    def finish(self, what: str, out: str | None) -> str:
        """The table with a footer (``what`` was scored, the reference, the machine and the
        date), printed and, with ``out``, written to that file."""
        text = "\n".join(
            [
                *self.lines,
                "",
                f"{what}; validation parts only; largest fall: from the first row's Dice at "
                f"threshold {self.reference_threshold:.2f}. {platform.node()}, "
                f"{datetime.date.today()}.",
            ]
        )
        print(text)
        if out:
            Path(out).write_text(text + "\n")
        return text
