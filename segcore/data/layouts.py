"""Dataset folder layouts: detecting them, and finding and pairing image and mask files.

Supported layouts (detected by :func:`detect_layout`, opened by
:func:`segcore.data.datasets.open_dataset`):

``pairs``
    ``images/`` and ``masks/`` side by side, paired by file stem (the PanNuke-derived
    "nuclei-256" layout). PNG, JPEG, TIFF and BMP are read. A mask may carry a suffix after the
    image's stem (``_mask``, ``-mask``, ``_masks``, ``_label``, ``_labels``, ``_gt``, ``-gt``,
    ``_seg``): ``a.png`` pairs with ``a_mask.png``. A mask may also be a QuPath GeoJSON export
    of the image's objects, ``a.geojson`` or ``a_mask.geojson``, rasterised at the image's size
    when loaded (:mod:`~segcore.data.annotations`).
``presplit``
    ``train/``, ``val/`` and ``test/`` (any of them; at least one), each holding the ``pairs``
    layout (``../shared/data/monuseg`` is one, with no ``val/``; the repository's ``samples/``
    has only ``test/``).
``pannuke``
    a PanNuke fold: ``images.npy`` (N×256×256×3, 0–255) and ``masks.npy`` (N×256×256×6 whose last
    channel is background); a pixel is nucleus when any of the first five channels is > 0.
    The two files may sit directly in the folder or up to :data:`SEARCH_DEPTH` folders below it
    (PanNuke's own ``Fold 1/images/fold1/images.npy`` nesting); the search never leaves the
    folder, follows no symlinked folders and skips hidden ones.

Per-file problems — images without masks, orphan masks, duplicate stems, unreadable files,
image/mask size mismatches — are returned by :func:`pair_files` as a list, not raised, so that
``open_dataset`` can report all of them at once.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from segcore.data.annotations import ANNOTATION_SUFFIX, MAX_GEOJSON_BYTES
from segcore.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, image_shape
from segcore.errors import DatasetError, InvalidImageError

MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_label", "_labels", "_gt", "-gt", "_seg")

SEARCH_DEPTH = 4
"""How many folders below a dataset folder :func:`find_one` looks for PanNuke's array files."""


@dataclass(frozen=True)
class FilePair:
    """One image file and its mask file."""

    id: str
    image: Path
    mask: Path


def _strip_mask_suffix(stem: str) -> str:
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def pair_files(
    folder: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, check: bool = True
) -> tuple[list[FilePair], list[tuple[str, str]]]:
    """Pairs ``folder/images/*`` with ``folder/masks/*`` by stem.

    Args:
        folder: a folder with ``images/`` and ``masks/`` inside.
        max_pixels: images above this pixel count are reported as problems.
        check: also read every file's header (cheap; no pixel decoding) to report unreadable
            files and image/mask size mismatches. A GeoJSON mask is only checked to be
            non-empty and under :data:`~segcore.data.annotations.MAX_GEOJSON_BYTES`: its
            objects are checked against the image's size when it is rasterised.

    Returns:
        ``(pairs, problems)``: the pairs sorted by id, and ``(path, problem)`` for every
        offending file. Nothing is raised for per-file problems; the caller decides.
    """
    images_dir, masks_dir = folder / "images", folder / "masks"
    problems: list[tuple[str, str]] = []
    images: dict[str, Path] = {}
    for path in _image_files(images_dir):
        if path.stem in images:
            problems.append((str(path), f"duplicate image stem (also {images[path.stem].name})"))
            continue
        images[path.stem] = path
    masks: dict[str, Path] = {}
    orphans: list[Path] = []
    for path in _image_files(masks_dir, (*IMAGE_SUFFIXES, ANNOTATION_SUFFIX)):
        stem = path.stem if path.stem in images else _strip_mask_suffix(path.stem)
        if stem not in images:
            orphans.append(path)
        elif stem in masks:
            problems.append(
                (str(path), f"second mask for image {images[stem].name} (also {masks[stem].name})")
            )
        else:
            masks[stem] = path
    for stem, path in images.items():
        if stem not in masks:
            problems.append(
                (
                    str(path),
                    f"no mask in {masks_dir} (looked for {stem}.* and "
                    f"{stem}_mask.* and the other mask suffixes)",
                )
            )
    problems += [(str(p), "orphan mask: no image with this stem in images/") for p in orphans]
    pairs = [FilePair(stem, images[stem], masks[stem]) for stem in sorted(masks)]
    if check:
        pairs, header_problems = _check_headers(pairs, max_pixels)
        problems += header_problems
    return pairs, problems


def _check_headers(
    pairs: list[FilePair], max_pixels: int | None
) -> tuple[list[FilePair], list[tuple[str, str]]]:
    def check(pair: FilePair) -> list[tuple[str, str]]:
        found, shapes = [], {}
        paths = [pair.image, pair.mask]
        if pair.mask.suffix.lower() == ANNOTATION_SUFFIX:
            paths.pop()
            found += _check_annotation_file(pair.mask)
        for path in paths:
            try:
                shapes[path] = image_shape(path)
            except InvalidImageError as exc:
                found.append((str(path), str(exc).removeprefix(f"{path}: ")))
                continue
            h, w = shapes[path]
            if max_pixels is not None and h * w > max_pixels:
                found.append(
                    (str(path), f"{w}×{h} is above the {max_pixels / 1e6:.0f}-megapixel limit")
                )
        if len(shapes) == 2 and shapes[pair.image] != shapes[pair.mask]:
            (hi, wi), (hm, wm) = shapes[pair.image], shapes[pair.mask]
            found.append((str(pair.mask), f"mask is {wm}×{hm} but its image is {wi}×{hi}"))
        return found

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(pool.map(check, pairs))
    good = [pair for pair, found in zip(pairs, results, strict=True) if not found]
    return good, [problem for found in results for problem in found]


def _check_annotation_file(path: Path) -> list[tuple[str, str]]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [(str(path), f"cannot be read ({exc.strerror or exc})")]
    if size == 0:
        return [(str(path), "the file is empty: no objects to use as ground truth")]
    if size > MAX_GEOJSON_BYTES:
        limit = MAX_GEOJSON_BYTES / 1e6
        return [(str(path), f"{size / 1e6:.0f} MB is over the {limit:.0f} MB GeoJSON limit")]
    return []


def find_one(root: Path, name: str, max_depth: int = SEARCH_DEPTH) -> Path | None:
    """Returns ``root/name``, else the one file called ``name`` below ``root``, else ``None``.

    The search is bounded: at most ``max_depth`` folders below ``root``, never above it, not
    into symlinked or hidden folders.

    Args:
        root: the dataset folder.
        name: the file name, e.g. ``images.npy``.
        max_depth: how many folder levels below ``root`` to look, defaults to
            :data:`SEARCH_DEPTH`.

    Raises:
        DatasetError: several files called ``name`` lie below ``root``.
    """
    direct = root / name
    if direct.is_file():
        return direct
    found = []
    for folder, subfolders, files in os.walk(root):  # os.walk follows no symlinked folder
        depth = len(Path(folder).relative_to(root).parts)
        subfolders[:] = [] if depth >= max_depth else [d for d in subfolders if d[:1] != "."]
        if name in files and (Path(folder) / name).is_file():
            found.append(Path(folder) / name)
    found.sort()
    if len(found) > 1:
        raise DatasetError(
            f"{root}: several {name} files found; point at one fold's folder",
            [(str(p), "candidate") for p in found],
        )
    return found[0] if found else None


def detect_layout(root: Path) -> str:
    """Returns ``"presplit"``, ``"pairs"`` or ``"pannuke"`` for a dataset folder.

    Raises:
        DatasetError: the folder does not exist or matches no supported layout.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if any((root / split).is_dir() for split in ("train", "val", "test")):
        return "presplit"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "pairs"
    if find_one(root, "images.npy") and find_one(root, "masks.npy"):
        return "pannuke"
    raise DatasetError(
        f"{root}: no supported dataset layout found. Expected images/ + masks/ folders, "
        "train/ (val/, test/) folders of that layout, or a PanNuke fold's images.npy + masks.npy"
    )
