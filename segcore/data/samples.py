"""Where the app's sample images come from: the built-in real tissue, the synthetic set made on
demand, or a dataset folder.

A *sample source* is the word ``"samples"`` (the repository's ``samples/``: crops of MoNuSeg
test tiles with their licence, the default when present — :func:`default_source`), the word
``"synthetic"``, or the path of a dataset folder of any layout
:func:`segcore.data.datasets.open_dataset` reads. :func:`open_source` turns it into
:class:`~segcore.data.datasets.DatasetSplits`. Given data roots (the app does, for what a browser
user typed; :mod:`segcore.data.roots`), a folder must lie inside one of them and error messages
name files relative to their root; :func:`browser_source` gives the name the app keeps.

The synthetic source needs no files: :class:`GeneratedSampleSet` makes tile ``i`` with
:func:`segcore.data.synthetic.generate_tile` when it is loaded (about 50 ms for 256×256), and
:func:`synthetic_splits` gives it the same train/val/test split that
``open_dataset(ensure_synthetic_dataset())`` gives the files written by
``python -m segcore synth`` — so a fresh clone shows samples at once, and they are the very
tiles a model trained with ``--data synthetic`` held out as its test split.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcore.data import roots as data_roots
from segcore.data.datasets import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    DatasetSplits,
    SampleSet,
    carve_splits,
    open_dataset,
)
from segcore.data.synthetic import generate_tile
from segcore.data.synthetic_set import (
    DEFAULT_SYNTHETIC_DIR,
    SYNTHETIC,
    SYNTHETIC_COUNT,
    tile_name,
)
from segcore.errors import DatasetError
from segcore.paths import REPO_ROOT

__all__ = [
    "BUILT_IN",
    "BUILT_IN_DIR",
    "SYNTHETIC",
    "GeneratedSampleSet",
    "browser_source",
    "default_source",
    "describe_source",
    "open_source",
    "random_picks",
    "source_folder",
    "synthetic_splits",
]

BUILT_IN = "samples"
"""The sample source naming the repository's built-in real samples (:data:`BUILT_IN_DIR`)."""

BUILT_IN_DIR = REPO_ROOT / "samples"
"""Crops of MoNuSeg test tiles (a ``test/`` split), their instance labels, licence and citation
(``samples/README.md``; made by ``scripts/make_samples.py``)."""


def default_source() -> str:
    """The sample source a new session starts on: :data:`BUILT_IN` when the repository's
    ``samples/`` is present (a fresh clone), else :data:`SYNTHETIC`."""
    return BUILT_IN if (BUILT_IN_DIR / "test" / "images").is_dir() else SYNTHETIC


def _keyword(source: str | os.PathLike) -> str | None:
    word = str(source).strip().lower()
    return word if word in (SYNTHETIC, BUILT_IN) else None


@functools.lru_cache(maxsize=64)
def _tile(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask = generate_tile(np.random.default_rng([seed, index]), size)
    image.setflags(write=False)
    mask.setflags(write=False)
    return image, mask


class GeneratedSampleSet(SampleSet):
    """Synthetic tiles made when loaded, each exactly as the synthetic set on disk holds it.

    Tile ``i`` is the one :func:`segcore.data.synthetic_set.generate_dataset` writes as
    ``synth_NNNNN.png`` with the same seed and size.

    Args:
        indices: the tile numbers in this set (``synth_NNNNN``).
        seed: the generator's seed, defaults to 0.
        size: tile side in pixels, defaults to 256.

    The last 64 tiles loaded are cached (read-only arrays); ``load`` returns copies.
    """

    def __init__(self, indices: Sequence[int], *, seed: int = 0, size: int = 256) -> None:
        self.indices = [int(i) for i in indices]
        self.seed = int(seed)
        self.size = int(size)
        self.ids = [Path(tile_name(i)).stem for i in self.indices]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = _tile(self.seed, self.indices[index], self.size)
        return image.copy(), mask.copy()

    def describe(self, index: int) -> str:
        return f"synthetic tile {self.ids[index]} (seed {self.seed}, {self.size}×{self.size})"

    def subset(self, indices: Sequence[int]) -> GeneratedSampleSet:
        return GeneratedSampleSet(
            [self.indices[i] for i in indices], seed=self.seed, size=self.size
        )


def synthetic_splits(
    *, count: int = SYNTHETIC_COUNT, size: int = 256, seed: int = 0, split_seed: int = 0
) -> DatasetSplits:
    """The synthetic set's splits without writing it: what ``open_dataset`` gives on its files.

    Args:
        count: tiles in the set, defaults to :data:`~segcore.data.synthetic_set.SYNTHETIC_COUNT`.
        size: tile side, defaults to 256.
        seed: the generator's seed, defaults to 0.
        split_seed: the seed of the train/val/test permutation, defaults to 0 (as
            ``open_dataset`` and training use).

    Returns:
        :class:`~segcore.data.datasets.DatasetSplits` whose sets are :class:`GeneratedSampleSet`.
    """
    everything = GeneratedSampleSet(range(count), seed=seed, size=size)
    return carve_splits(
        DEFAULT_SYNTHETIC_DIR,
        "pairs",
        {"train": everything},
        DEFAULT_VAL_FRACTION,
        DEFAULT_TEST_FRACTION,
        split_seed,
    )


def source_folder(
    source: str | os.PathLike, roots: Sequence[data_roots.DataRoot] | None = None
) -> Path | None:
    """The folder a sample source reads: ``samples/``, the dataset folder, or ``None`` for the
    synthetic source (which needs no files).

    Args:
        source: ``"samples"``, ``"synthetic"`` or a dataset folder.
        roots: when given, the folder must lie inside one of these data roots
            (:func:`segcore.data.roots.resolve_folder`: what a browser user typed); ``None``
            (the command line, scripts) takes any path.

    Raises:
        DatasetError: no such folder, or (with ``roots``) not an allowed one — then with
            :func:`segcore.data.roots.refusal_message`, whichever the reason.
    """
    keyword = _keyword(source)
    if keyword == SYNTHETIC:
        return None
    if keyword == BUILT_IN:
        return BUILT_IN_DIR
    if roots is not None:
        return data_roots.resolve_folder(str(source), roots)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    return root


def browser_source(text: str, roots: Sequence[data_roots.DataRoot]) -> str:
    """The sample source a browser user means by ``text``: ``"samples"``, ``"synthetic"``, or
    the root-qualified name of a folder inside ``roots`` (``data/my-set``).

    Raises:
        DatasetError: with :func:`segcore.data.roots.refusal_message` for any folder outside the
            roots (or missing).
    """
    keyword = _keyword(text)
    if keyword is not None:
        return keyword
    return data_roots.browser_name(data_roots.resolve_folder(text, roots), roots)


def open_source(
    source: str | os.PathLike, *, roots: Sequence[data_roots.DataRoot] | None = None
) -> DatasetSplits:
    """Opens a sample source: ``"samples"``, ``"synthetic"`` or a dataset folder.

    Args:
        source: the sample source.
        roots: when given (the app), the folder must lie inside one of these data roots and
            error messages name files relative to their root
            (:func:`segcore.data.roots.browser_error`); ``None`` opens any folder.

    Raises:
        DatasetError: the folder does not exist (or is outside ``roots``), has no supported
            layout, or has bad files (all of them listed).
    """
    folder = source_folder(source, roots)
    if folder is None:
        return synthetic_splits()
    if roots is None:
        return open_dataset(folder)
    try:
        return open_dataset(folder)
    except DatasetError as exc:
        raise data_roots.browser_error(exc, roots) from exc


def describe_source(source: str | os.PathLike) -> str:
    """A short human description of a sample source, for captions."""
    keyword = _keyword(source)
    if keyword == SYNTHETIC:
        return "the synthetic H&E set (generated on demand; no download)"
    if keyword == BUILT_IN:
        return "the built-in samples (MoNuSeg 2018 test crops, CC BY-NC-SA 4.0)"
    return f"the dataset at {Path(source).expanduser()}"


def random_picks(n: int, k: int = 3, rng: np.random.Generator | int | None = None) -> list[int]:
    """``k`` distinct indices out of ``range(n)`` (all of them when ``n <= k``), sorted.

    Args:
        n: the number of samples.
        k: how many to pick, defaults to 3 (as the original design showed).
        rng: a NumPy generator or a seed; ``None`` for fresh randomness.
    """
    if n < 0 or k < 0:
        raise ValueError(f"n and k must be non-negative, got n={n}, k={k}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))
