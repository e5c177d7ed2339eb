"""Calibration per source: reliability diagrams and ECE of a model, before and after one
temperature fitted on the validation parts of every source pooled.

Sources (folders of ``--data``, default ``../shared/data``): ``monuseg`` (the carved split of
``open_dataset(..., seed=1)``: validation 4 tiles, test 14 tiles, as the default's card) and
``tnbc``, ``cryonuseg``, ``pannuke-breast``, ``consep`` (the ``val`` and ``test`` parts their
``split.json`` fixes). Each image is predicted once at full size in the **keras runtime** (the
bundle's preprocessing, tiled as in production, at the pixel size the folder's
``dataset.json`` declares, else as it is), and its pixels are added to the source's
:class:`~segcore.metrics.calibration.Reliability` (exact) and
:class:`~segcore.metrics.calibration.LogitHistogram` — no probability map is kept.

Then:

* **ECE** on 10 equal-width probability bins (pixel-weighted mean |mean probability − fraction
  of true nucleus pixels|) and the mean negative log-likelihood (NLL, nats per pixel), per source
  and part;
* **temperature scaling** ``sigmoid(logit(p) / T)``: one ``T`` of least NLL over the validation
  pixels of all five sources pooled (grid 0.2–5, 0.5 % apart), applied to every part; for
  comparison the ``T`` each source's validation part alone would choose, and Platt scaling
  ``sigmoid(a·logit(p) + b)`` fitted on the same pooled pixels, and the ``(a, b)`` each source
  alone would choose;
* **reliability diagrams**: per bin and source, the fraction of true nucleus pixels (and the
  share of the source's pixels), before and after scaling, with the spread across sources — the
  answer to "does a probability mean the same in every lab?".

The scaled figures are computed from the logit histograms (each 1/64-logit bin's pixels at their
mean logit); the table's last note gives how far that approximation is from the exact ECE at
``T = 1``.

Usage (a few minutes per 10 million pixels on a 2-core CPU; ``--limit 2`` for a quick try)::

    python benchmarks/bench_calibration.py --out docs/calibration.md

prints the Markdown report (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.bundles.loading import load_bundle
from segcore.data.datasets import dataset_pixel_size, open_dataset
from segcore.evaluation.evaluate import load_instance_truth
from segcore.inference.resolution import predict_at_pixel_size
from segcore.metrics.calibration import DEFAULT_BINS, LogitHistogram, Reliability, reliability

SOURCES = ("monuseg", "tnbc", "cryonuseg", "pannuke-breast", "consep")
PARTS = ("val", "test")
MIN_SHARE = 0.001
"""A diagram cell whose bin holds less than this share of a source's pixels is not compared."""


@dataclass
class Measured:
    """One source's part: its images, exact diagram and logit histogram."""

    source: str
    part: str
    images: int
    exact: Reliability
    histogram: LogitHistogram


def measure(bundle, data: Path, source: str, part: str, limit: int | None) -> Measured:
    """Predicts every image of ``source``'s ``part`` and accumulates its calibration sums."""
    root = data / source
    splits = open_dataset(root, seed=1) if source == "monuseg" else open_dataset(root)
    samples = splits.split(part)
    count = len(samples) if limit is None else min(limit, len(samples))
    exact, histogram = Reliability.empty(), LogitHistogram.empty()
    pixel_size = dataset_pixel_size(root)
    for index in range(count):
        image, labels, _ = load_instance_truth(samples, index)
        probs = predict_at_pixel_size(
            bundle.model,
            image,
            bundle.preprocess,
            pixel_size=pixel_size,
            model_pixel_size=bundle.pixel_size,
        )
        mask = labels > 0
        exact = exact + reliability(mask, probs)
        histogram = histogram + LogitHistogram.of(mask, probs)
        print(f"  {source}/{part} {index + 1}/{count} {samples.ids[index]}", file=sys.stderr)
    return Measured(source, part, count, exact, histogram)


def pooled(rows: list[Measured], part: str) -> LogitHistogram:
    return sum((r.histogram for r in rows if r.part == part), LogitHistogram.empty())


def balanced_temperature(rows: list[Measured]) -> float:
    """The ``T`` of least NLL averaged over the validation sources with equal weight."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 646))
    val = [r.histogram for r in rows if r.part == "val"]
    losses = [np.mean([h.nll(1.0 / t) for h in val]) for t in grid]
    return float(grid[int(np.argmin(losses))])


def ece_table(rows: list[Measured], temperature: float, platt: tuple[float, float]) -> list[str]:
    scale, bias = platt
    lines = [
        "| source | part | images | pixels | nucleus fraction | ECE | ECE at T | "
        "ECE Platt | NLL | NLL at T | own best T | own Platt (a, b) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for part in PARTS:
        group = [r for r in rows if r.part == part]
        everything = (
            "all pooled",
            part,
            sum(r.images for r in group),
            sum((r.exact for r in group), Reliability.empty()),
            pooled(rows, part),
        )
        for name, _, images, exact, hist in [
            (r.source, r.part, r.images, r.exact, r.histogram) for r in group
        ] + [everything]:
            fraction = exact.positives.sum() / max(exact.n_pixels, 1)
            own = hist.fit_temperature()
            own_a, own_b = hist.fit_platt()
            lines.append(
                f"| {name} | {part} | {images} | {exact.n_pixels:,} | {fraction:.3f} | "
                f"{exact.ece:.4f} | {hist.reliability(1 / temperature).ece:.4f} | "
                f"{hist.reliability(scale, bias).ece:.4f} | {hist.nll():.4f} | "
                f"{hist.nll(1 / temperature):.4f} | {own:.2f} | {own_a:.2f}, {own_b:+.2f} |"
            )
    return lines


def diagram_table(rows: list[Measured], part: str, scale: float, bias: float) -> list[str]:
    """Per bin: each source's observed nucleus fraction (its share of pixels), and the spread."""
    group = [r for r in rows if r.part == part]
    diagrams = [
        r.exact if (scale, bias) == (1.0, 0.0) else r.histogram.reliability(scale, bias)
        for r in group
    ]
    edges = np.linspace(0.0, 1.0, DEFAULT_BINS + 1)
    header = "| predicted | " + " | ".join(r.source for r in group) + " | spread |"
    lines = [header, "|---|" + "---:|" * (len(group) + 1)]
    spreads = []
    for k in range(DEFAULT_BINS):
        cells, kept = [], []
        for d in diagrams:
            share = d.counts[k] / max(d.n_pixels, 1)
            if d.counts[k] == 0:
                cells.append("–")
                continue
            cells.append(f"{d.observed[k]:.2f} ({100 * share:.1f} %)")
            if share >= MIN_SHARE:
                kept.append(d.observed[k])
        spread = f"{max(kept) - min(kept):.2f}" if len(kept) > 1 else "–"
        if len(kept) > 1:
            spreads.append(max(kept) - min(kept))
        lines.append(
            f"| {edges[k]:.1f}–{edges[k + 1]:.1f} | " + " | ".join(cells) + f" | {spread} |"
        )
    ece = " | ".join(f"{d.ece:.4f}" for d in diagrams)
    mean_spread = f"{np.mean(spreads):.2f}" if spreads else "–"
    lines.append(f"| **ECE** | {ece} | mean {mean_spread} |")
    return lines


def machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        cpu = f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} CPUs"
    except (OSError, subprocess.CalledProcessError, KeyError):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu} ({platform.system()} {platform.machine()}, Python {platform.python_version()})"


def report(bundle, rows: list[Measured], seconds: float, command: str) -> str:
    val = pooled(rows, "val")
    temperature = val.fit_temperature()
    platt = val.fit_platt()
    balanced = balanced_temperature(rows)
    approx = max(abs(r.histogram.reliability().ece - r.exact.ece) for r in rows)
    lines = [
        f"# Calibration of {bundle.card.name} across sources",
        "",
        f"Command: `{command}` — {datetime.date.today().isoformat()}, {seconds / 60:.0f} min on "
        f"{machine()}; keras runtime, the bundle's preprocessing, tiled at full size.",
        "",
        f"**Bins**: {DEFAULT_BINS} equal-width bins of the predicted nucleus probability; "
        "**ECE** = Σ_b (n_b / N)·|mean probability_b − fraction of true nucleus pixels_b|, all "
        "pixels of a part pooled; **NLL**: mean negative log-likelihood, nats per pixel.",
        "",
        f"**Temperature** fitted on the validation parts of all {len(SOURCES)} sources pooled "
        f"(least NLL, grid 0.2–5): **T = {temperature:.2f}** (`sigmoid(logit(p) / T)`). "
        f"With every source weighing the same instead of every pixel: T = {balanced:.2f}. "
        f"Platt scaling on the same pixels: `sigmoid({platt[0]:.3f}·logit(p) "
        f"{platt[1]:+.3f})`. *own best T* and *own Platt (a, b)*: what that source's part alone "
        "would choose (b < 0: fewer than half the pixels given 0.5 are nucleus there, the "
        "probabilities are too high; b > 0: too low; one temperature keeps 0.5 where it is).",
        "",
        "## ECE per source, before and after scaling",
        "",
        *ece_table(rows, temperature, platt),
        "",
        "## Reliability diagrams",
        "",
        "Each cell: the fraction of true nucleus pixels among the pixels whose predicted "
        "probability falls in the row's bin (in brackets: the bin's share of the source's "
        f"pixels). *spread*: the largest minus the smallest fraction over the sources whose bin "
        f"holds at least {100 * MIN_SHARE:.1f} % of their pixels — 0 when a probability means "
        "the same in every source.",
    ]
    for part in PARTS:
        for title, scale, bias in [
            ("as predicted", 1.0, 0.0),
            (f"after temperature scaling (T = {temperature:.2f})", 1.0 / temperature, 0.0),
        ]:
            lines += ["", f"### {part}, {title}", "", *diagram_table(rows, part, scale, bias)]
    lines += [
        "",
        f"The scaled figures come from logit histograms (1/64-logit bins); at T = 1 they differ "
        f"from the exact ECE by at most {approx:.5f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="bundle name or folder")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=None, help="images per part (a quick try)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_calibration.py " + " ".join(argv or sys.argv[1:])
    bundle = load_bundle(args.model)
    start = time.perf_counter()
    rows = [
        measure(bundle, args.data, source, part, args.limit) for part in PARTS for source in SOURCES
    ]
    text = report(bundle, rows, time.perf_counter() - start, command.strip())
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
