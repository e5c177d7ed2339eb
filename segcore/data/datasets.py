"""Sample sets and datasets: opening a folder of any layout, its splits, and loading samples.

:func:`open_dataset` detects the folder's layout (:mod:`~segcore.data.layouts`: ``pairs``,
``presplit`` or ``pannuke``), pairs its files and returns its :class:`DatasetSplits`, whose sets are
:class:`FileSampleSet` (image and mask files) or :class:`ArraySampleSet` (a PanNuke fold's arrays).

Splits are deterministic: where a layout gives none, the samples (sorted by id) are permuted with
``numpy.random.default_rng(seed)`` and cut into test, val and train (default 9 % / 12 % / 79 %,
close to the reference set's 67/91/603). When only train and test exist, val is carved from train
the same way. A ``pairs`` folder with a ``split.json`` (:data:`SPLIT_FILE`: ``{"val": [stems],
"test": [stems]}``, as the evaluation sets in ``../shared/data`` carry) takes its val and test
parts from that file and has no training samples: those sets are for evaluation only.

Every problem found while opening a folder — images without masks, orphan masks, duplicate stems,
unreadable files, image/mask size mismatches — is collected and raised as one
:class:`~segcore.errors.DatasetError` listing every offending file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcore.data.annotations import ANNOTATION_SUFFIX, annotation_labels
from segcore.data.images import (
    DEFAULT_MAX_PIXELS,
    PIXEL_SIZE_RANGE,
    check_same_size,
    in_pixel_size_range,
    read_image,
    read_mask_array,
    to_binary_mask,
    to_rgb_uint8,
)
from segcore.data.layouts import FilePair, detect_layout, find_one, pair_files
from segcore.errors import DatasetError, InvalidImageError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.12
DEFAULT_TEST_FRACTION = 0.09


class SampleSet(Sequence):
    """An ordered collection of (image, mask) samples; ``len()`` and ``load(i)``.

    Subclasses hold files or arrays. ``load`` returns ``(image, mask)``: ``uint8`` RGB
    ``(H, W, 3)`` and ``uint8`` 0/1 ``(H, W)`` of the same size.
    """

    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # Sequence protocol: the id
        return self.ids[index]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image, ground truth as stored)``: instance labels where the source has them (label
        images, colour renderings, PanNuke instance channels), else the 0/1 mask. Read it with
        :func:`segcore.metrics.labels.ground_truth_instances`."""
        return self.load(index)

    def describe(self, index: int) -> str:
        """Returns a human-readable name of sample ``index`` (its path) for messages."""
        return self.ids[index]

    def subset(self, indices: Sequence[int]) -> SampleSet:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)


class FileSampleSet(SampleSet):
    """Samples stored as image and mask files (a mask may be a QuPath GeoJSON export).

    Args:
        pairs: the files, in order.
        max_pixels: pixel cap passed to :func:`segcore.data.images.read_image`.
    """

    def __init__(self, pairs: Sequence[FilePair], max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.pairs = list(pairs)
        self.ids = [p.id for p in self.pairs]
        self.max_pixels = max_pixels

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, truth = self.load_truth(index)
        return image, to_binary_mask(truth, name=str(self.pairs[index].mask))

    def load_truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image, mask as stored)``; a GeoJSON mask (``.geojson``) is rasterised at the
        image's size into ``int32`` instance labels (:mod:`~segcore.data.annotations`)."""
        pair = self.pairs[index]
        image = read_image(pair.image, max_pixels=self.max_pixels)
        if pair.mask.suffix.lower() == ANNOTATION_SUFFIX:
            return image, annotation_labels(pair.mask, image.shape[:2])
        truth = read_mask_array(pair.mask, max_pixels=self.max_pixels)
        check_same_size(image, truth, name=f"{pair.image} / {pair.mask.name}")
        return image, truth

    def describe(self, index: int) -> str:
        return str(self.pairs[index].image)

    def subset(self, indices: Sequence[int]) -> FileSampleSet:
        return FileSampleSet([self.pairs[i] for i in indices], self.max_pixels)


class ArraySampleSet(SampleSet):
    """Samples stored in a PanNuke fold's ``images.npy`` / ``masks.npy`` (memory-mapped).

    Args:
        images_file: path of ``images.npy``, N×H×W×3.
        masks_file: path of ``masks.npy``, N×H×W×C; the last channel is background and a pixel
            is nucleus when any other channel is > 0.
        indices: which rows belong to this set; defaults to all.
    """

    def __init__(self, images_file: Path, masks_file: Path, indices: Sequence[int] | None = None):
        self.images_file = Path(images_file)
        self.masks_file = Path(masks_file)
        self._images = _open_npy(self.images_file)
        self._masks = _open_npy(self.masks_file)
        problems = []
        if self._images.ndim != 4 or self._images.shape[-1] != 3:
            problems.append((str(self.images_file), f"expected N×H×W×3, got {self._images.shape}"))
        if self._masks.ndim != 4 or self._masks.shape[-1] < 2:
            problems.append(
                (str(self.masks_file), f"expected N×H×W×C (C ≥ 2), got {self._masks.shape}")
            )
        if not problems and self._images.shape[:3] != self._masks.shape[:3]:
            problems.append(
                (
                    str(self.masks_file),
                    f"shape {self._masks.shape} does not match images {self._images.shape}",
                )
            )
        if problems:
            raise DatasetError("malformed PanNuke arrays:", problems)
        n = self._images.shape[0]
        self.indices = list(range(n)) if indices is None else [int(i) for i in indices]
        self.ids = [f"{self.images_file.parent.name}_{i:05d}" for i in self.indices]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.indices[index]
        image = to_rgb_uint8(np.asarray(self._images[row]), name=self.describe(index))
        mask = to_binary_mask(np.asarray(self._masks[row][..., :-1]).max(axis=-1))
        return image, mask

    def load_truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image and its instance labels: PanNuke numbers nuclei within each type channel,
        so each channel's labels are offset past the previous channels'."""
        image, _ = self.load(index)
        channels = np.asarray(self._masks[self.indices[index]][..., :-1])
        labels = np.zeros(channels.shape[:2], np.int64)
        offset = 0
        for channel in np.moveaxis(channels, -1, 0):
            channel = np.asarray(channel, np.int64)
            labels = np.where(channel > 0, channel + offset, labels)
            offset += int(channel.max(initial=0))
        return image, labels

    def describe(self, index: int) -> str:
        return f"{self.images_file}[{self.indices[index]}]"

    def subset(self, indices: Sequence[int]) -> ArraySampleSet:
        return ArraySampleSet(self.images_file, self.masks_file, [self.indices[i] for i in indices])


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError("unreadable PanNuke array file:", [(str(path), str(exc))]) from exc


@dataclass(frozen=True)
class DatasetSplits:
    """The train/val/test splits of one dataset, and how they were made.

    Attributes:
        root: the dataset folder.
        layout: ``"pairs"``, ``"presplit"`` or ``"pannuke"``.
        train, val, test: the sample sets (``val`` or ``test`` may be empty).
        seed: the seed used for any split made here.
        carved: the splits that were made here rather than given by the layout.
    """

    root: Path
    layout: str
    train: SampleSet
    val: SampleSet
    test: SampleSet
    seed: int = 0
    carved: tuple[str, ...] = field(default=())

    def split(self, name: str) -> SampleSet:
        """Returns the sample set called ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; use one of {SPLITS}")
        return getattr(self, name)

    def summary(self) -> dict:
        """Returns a JSON-serialisable description (layout, sizes, seed, carved splits)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "sizes": {name: len(self.split(name)) for name in SPLITS},
            "seed": self.seed,
            "carved": list(self.carved),
        }


DATASET_FILE = "dataset.json"
"""Optional description of a dataset folder: ``{"pixel_size": 0.5}`` (µm per pixel)."""


def dataset_pixel_size(root: str | os.PathLike) -> float | None:
    """The ``pixel_size`` a dataset folder declares in ``dataset.json``, or None.

    Raises:
        DatasetError: ``dataset.json`` exists but is not a JSON object with a number of µm per
            pixel in :data:`~segcore.data.images.PIXEL_SIZE_RANGE`.
    """
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("pixel_size")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a JSON object ({exc})") from exc
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not in_pixel_size_range(value)
    ):
        raise DatasetError(
            f"{path}: pixel_size must be µm per pixel in {PIXEL_SIZE_RANGE}, got {value!r}"
        )
    return float(value)


SPLIT_FILE = "split.json"
"""A ``pairs`` folder's fixed evaluation parts: ``{"val": [stems], "test": [stems]}`` (other keys,
e.g. ``"rule"``, are ignored)."""


def split_by_file(path: Path, pairs: Sequence[FilePair]) -> dict[str, list[FilePair]]:
    """The val and test parts (and an empty train part) that ``split.json`` gives ``pairs``.

    Raises:
        DatasetError: the file is not ``{"val": [...], "test": [...]}`` of strings, a stem is
            in both parts or names no sample, or a sample is in neither part.
    """
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        parts = {name: spec[name] for name in ("val", "test")}
        if not all(isinstance(s, str) for stems in parts.values() for s in stems):
            raise TypeError("stems must be strings")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(
            f'{path}: not a split file {{"val": [stems], "test": [stems]}} ({exc})'
        ) from exc
    by_id = {pair.id: pair for pair in pairs}
    problems = [(s, "in both val and test") for s in set(parts["val"]) & set(parts["test"])]
    problems += [
        (s, "named in split.json, no such sample")
        for stems in parts.values()
        for s in stems
        if s not in by_id
    ]
    listed = set(parts["val"]) | set(parts["test"])
    problems += [
        (str(p.image), "in neither part of split.json") for p in pairs if p.id not in listed
    ]
    if problems:
        raise DatasetError(
            f"{path}: {len(problems)} problem(s) in the split file:", sorted(problems)
        )
    return {
        "train": [],
        **{name: [by_id[s] for s in sorted(stems)] for name, stems in parts.items()},
    }


def split_indices(n: int, fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Deterministically splits ``range(n)`` into parts of the given fractions.

    The indices are permuted with ``numpy.random.default_rng(seed)``; part ``k`` (for ``k`` ≥ 1)
    gets ``round(n * fractions[k])`` indices, at least 1 when the fraction is > 0 and ``n`` allows,
    and part 0 gets the rest. Each part is returned sorted.

    Raises:
        DatasetError: the fractions are negative or sum to more than 1.
    """
    if any(f < 0 for f in fractions) or sum(fractions[1:]) >= 1:
        raise DatasetError(f"invalid split fractions {list(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    parts: list[list[int]] = []
    start = 0
    for fraction in fractions[1:]:
        size = round(n * fraction)
        if fraction > 0 and size == 0 and n - start > 1:
            size = 1
        parts.append(sorted(int(i) for i in order[start : start + size]))
        start += size
    return [sorted(int(i) for i in order[start:]), *parts]


def open_dataset(
    root: str | os.PathLike,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    check: bool = True,
) -> DatasetSplits:
    """Opens a dataset folder of any supported layout and returns its splits.

    Args:
        root: the dataset folder.
        val_fraction: share of samples put in val where the layout gives no val split
            (of all samples for ``pairs``/``pannuke``, of train for ``presplit``), default 0.12.
        test_fraction: share of samples put in test where the layout gives no test split,
            default 0.09.
        seed: seed of the permutation that makes those splits.
        max_pixels: largest accepted image.
        check: read every file's header to find unreadable files and size mismatches.

    Raises:
        DatasetError: no supported layout, or any offending file (all of them listed).
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout == "pannuke":
        everything: SampleSet = ArraySampleSet(
            find_one(root, "images.npy"), find_one(root, "masks.npy")
        )
        return carve_splits(root, layout, {"train": everything}, val_fraction, test_fraction, seed)
    if layout == "pairs":
        pairs, problems = pair_files(root, max_pixels=max_pixels, check=check)
        given = {"train": pairs}
        if (root / SPLIT_FILE).is_file() and not problems:
            given = split_by_file(root / SPLIT_FILE, pairs)
    else:
        given, problems = {}, []
        for name in SPLITS:
            folder = root / name
            if not folder.is_dir():
                continue
            if not ((folder / "images").is_dir() and (folder / "masks").is_dir()):
                problems.append((str(folder), "split folder without images/ and masks/ inside"))
                continue
            pairs, found = pair_files(folder, max_pixels=max_pixels, check=check)
            given[name] = pairs
            problems += found
    if problems:
        raise DatasetError(f"{root}: {len(problems)} problem(s) in the dataset:", problems)
    sets = {name: FileSampleSet(pairs, max_pixels) for name, pairs in given.items()}
    sets.setdefault("train", FileSampleSet([], max_pixels))  # an evaluation-only folder
    if not any(len(pairs) for pairs in given.values()):
        raise DatasetError(f"{root}: no samples found")
    return carve_splits(root, layout, sets, val_fraction, test_fraction, seed)


def carve_splits(
    root: Path,
    layout: str,
    sets: dict[str, SampleSet],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DatasetSplits:
    """Cuts the val and test splits that ``sets`` lacks out of ``sets["train"]``.

    This is how :func:`open_dataset` splits every layout; a source of samples that is not a
    folder (e.g. :class:`segcore.data.samples.GeneratedSampleSet`) gets the same splits through it.
    """
    train = sets["train"]
    missing = [name for name in ("val", "test") if name not in sets]
    fractions = {"val": val_fraction, "test": test_fraction}
    if missing:
        # Parts are cut in the order test, val so adding a val split keeps the test split.
        order = [name for name in ("test", "val") if name in missing]
        parts = split_indices(len(train), [0.0] + [fractions[n] for n in order], seed)
        for name, indices in zip(order, parts[1:], strict=True):
            sets[name] = train.subset(indices)
        sets["train"] = train.subset(parts[0])
    log.info("dataset %s (%s): %s", root, layout, ", ".join(f"{n} {len(sets[n])}" for n in SPLITS))
    return DatasetSplits(
        root,
        layout,
        sets["train"],
        sets["val"],
        sets["test"],
        seed,
        tuple(n for n in SPLITS if n in missing),
    )


def load_samples(
    samples: SampleSet, *, workers: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decodes every sample of a set into memory, in order, with a thread pool.

    Returns:
        ``[(image, mask), ...]`` as returned by ``samples.load``.

    Raises:
        DatasetError: listing every sample that failed to load.
    """

    def load(index: int):
        try:
            return samples.load(index)
        except InvalidImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(pool.map(load, range(len(samples))))
    problems = [
        (samples.describe(i), str(r)) for i, r in enumerate(results) if isinstance(r, Exception)
    ]
    if problems:
        raise DatasetError(f"{len(problems)} sample(s) could not be loaded:", problems)
    return results
