"""Stain normalisation to the training stain, scored on every source's validation part.

Issue 19 asks to try what makes the probabilities mean the same across labs, stain
normalisation to the training stain among them, and to keep what helps on validation. This
benchmark fits each normaliser on the training tiles of ``--data`` (MoNuSeg's carve by
``--seed 1``: the default's own 26 training tiles, every 4th pixel of each row and column),
maps every validation image to that stain **before** the bundle's own preprocessing, and scores
it as ``choose-threshold`` scores a bundle: MoNuSeg's carved validation tiles and the ``val``
part of every ``--source``, one threshold by the source rule. Validation parts only: nothing
here reads a test part.

Normalisers (``--method``, repeatable; ``none`` is always scored first):

``macenko``
    Macenko et al. 2009: each image's hematoxylin and eosin vectors estimated from its optical
    densities, its concentrations re-mixed with the reference's vectors and 99th-percentile
    maxima (torchstain's ``NumpyMacenkoNormalizer``).
``reinhard``
    Reinhard et al. 2001: each CIELAB channel's mean and standard deviation matched to the
    reference's (torchstain's ``NumpyReinhardNormalizer``).
``reinhard-modified``
    torchstain's modified Reinhard: the image keeps its lightness mean; its a and b means move
    to the reference's.
``chroma``
    the smallest change: only the image's mean a and b (OpenCV's 8-bit CIELAB) shifted to the
    reference's; lightness, spread and everything else kept.

The table gives, per method: the shared threshold, each source's pooled Dice there, the rule's
score, the largest fall of a source from the un-normalised Dice at ``--reference-threshold``
(issue 19's "no source falls by more than 0.005 from v4.1 at v4.1's own threshold": 0.65), and
each source's own best threshold.

torchstain is not a dependency of segcore (nothing here was kept): ``pip install
torchstain==1.4.1`` (pure NumPy; no torch needed) before running it, in a virtual environment
of its own or uninstalled afterwards — its wheel also installs a top-level ``tests`` package,
which shadows this repository's tests. Usage (about 6 min for the five rows on the 2-core
VM)::

    python benchmarks/bench_stain.py --reference-threshold 0.65
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from validation_table import SourceTable, add_source_arguments, open_sources  # noqa: E402

from segcore.data.datasets import SampleSet  # noqa: E402

METHODS = ("macenko", "reinhard", "reinhard-modified", "chroma")

Normaliser = Callable[[np.ndarray], np.ndarray]


def reference_pixels(samples, step: int = 4) -> np.ndarray:
    """Every ``step``-th pixel of every row and column of ``samples``' images, as ``(N, 1, 3)``
    uint8 (the shape torchstain's ``fit`` reads as one image)."""
    from segcore.data.datasets import load_samples

    parts = [image[::step, ::step].reshape(-1, 3) for image, _ in load_samples(samples)]
    return np.concatenate(parts)[:, None, :]


def chroma_normaliser(reference: np.ndarray) -> Normaliser:
    """Shifts an image's mean CIELAB a and b to ``reference``'s (8-bit OpenCV CIELAB)."""
    import cv2

    target = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)

    def normalise(image: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        shift = target[1:] - lab.reshape(-1, 3).mean(axis=0)[1:]
        lab[..., 1:] += shift
        return cv2.cvtColor(np.clip(np.rint(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    return normalise


def make_normaliser(method: str, reference: np.ndarray) -> Normaliser:
    """The normaliser ``method`` fitted on ``reference`` (module docstring)."""
    if method == "chroma":
        return chroma_normaliser(reference)
    try:
        from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer
    except ImportError as exc:
        raise SystemExit(f"bench_stain: --method {method} needs torchstain: {exc}") from exc
    if method == "macenko":
        macenko = NumpyMacenkoNormalizer()
        macenko.fit(reference)
        return lambda image: macenko.normalize(image, stains=False)[0]
    if method in ("reinhard", "reinhard-modified"):
        modified = method == "reinhard-modified"
        reinhard = NumpyReinhardNormalizer(method="modified" if modified else None)
        reinhard.fit(reference)
        return reinhard.normalize
    raise SystemExit(f"bench_stain: unknown method {method!r}; use one of {METHODS}")


class NormalisedSamples(SampleSet):
    """A sample set whose images pass through ``normalise`` as they are loaded (masks as they
    are): what :func:`segcore.evaluation.sources.sweep_source` reads."""

    def __init__(self, samples: SampleSet, normalise: Normaliser):
        self.samples, self.normalise, self.ids = samples, normalise, samples.ids

    def describe(self, index: int) -> str:
        return self.samples.describe(index)

    def load(self, index: int):
        image, mask = self.samples.load(index)
        return self.normalise(image), mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="default", help="the bundle scored (default: default)")
    parser.add_argument("--method", action="append", choices=METHODS, help="default: all")
    add_source_arguments(parser)
    args = parser.parse_args(argv)

    from dataclasses import replace

    from segcore.bundles.loading import load_bundle
    from segcore.data.datasets import open_dataset

    bundle = load_bundle(args.bundle)
    sources = open_sources(args)
    reference = reference_pixels(open_dataset(args.data, seed=args.seed).split("train"))
    reference_t = args.reference_threshold or bundle.threshold
    names = [s.name for s in sources]
    table = SourceTable("method", names, args.rule, reference_t, own_best=True)
    table.score("none", bundle.model, sources, bundle)
    for method in args.method or METHODS:
        normalise = make_normaliser(method, reference)
        normalised = [replace(s, samples=NormalisedSamples(s.samples, normalise)) for s in sources]
        table.score(method, bundle.model, normalised, bundle)
    what = f"Bundle {bundle.card.name} ({args.bundle}), normalisers fitted on {args.data}'s "
    table.finish(what + f"training tiles (carve seed {args.seed})", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
