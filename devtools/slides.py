"""Test slides made from real tissue, for the tests and the benchmarks.

No real slide can be downloaded here, so slides are built: :func:`monuseg_mosaic` lays MoNuSeg
tiles (real H&E at 40×) in a grid on white glass (:func:`synthetic_mosaic` does the same with
synthetic H&E where the real data is absent; :func:`repeat_source` repeats a pattern over a
slide of any size without holding it), and the writers store any image — an array
or, for slides too large for memory, a :class:`RegionSource` that produces any region on demand
— as the formats the reader meets:

* :func:`write_aperio_tiff`: a tiled pyramidal TIFF whose first page carries an Aperio-style
  description (``Aperio Image Library ...|AppMag = 40|MPP = 0.25``): OpenSlide reads it as an
  ``aperio`` slide with every level and ``openslide.mpp-x``.
* :func:`write_ome_tiff`: OME-TIFF with the reduced levels as SubIFDs and ``PhysicalSizeX``.
* :func:`write_plain_tiff`: one tiled level, no pixel size (the "no pixel size" and "no
  pyramid" cases).

Reduced levels are exact block means of level 0 (:func:`downsample`), so a test can compute
the pixels a level must hold. Compression is lossless (``zlib``) by default, for exact
comparisons; ``"jpeg"`` gives realistic sizes (needs ``imagecodecs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

RegionFn = Callable[[int, int, int, int], np.ndarray]
"""``region(x, y, width, height)`` → ``uint8`` RGB ``(height, width, 3)``; (x, y) level-0 pixels,
always inside the image."""


@dataclass(frozen=True)
class RegionSource:
    """An image known by its size and a function that returns any region of it."""

    height: int
    width: int
    region: RegionFn


def as_source(image: np.ndarray | RegionSource) -> RegionSource:
    """``image`` as a :class:`RegionSource` (an RGB array is wrapped)."""
    if isinstance(image, RegionSource):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB (h, w, 3), got {array.dtype} {array.shape}")
    return RegionSource(
        array.shape[0], array.shape[1], lambda x, y, w, h: array[y : y + h, x : x + w]
    )


def _wrapped(start: int, length: int, period: int) -> Iterator[tuple[int, int, int]]:
    """``(source start, destination start, count)`` runs covering ``start .. start + length``
    taken modulo ``period``."""
    done = 0
    while done < length:
        source = (start + done) % period
        count = min(period - source, length - done)
        yield source, done, count
        done += count


def repeat_source(pattern: np.ndarray, height: int, width: int, *, margin: int = 0) -> RegionSource:
    """A large slide: ``pattern`` (RGB) repeated over ``height`` × ``width``, with ``margin``
    pixels of white glass around. Memory: the pattern only, whatever the size; regions are
    copied slice by slice."""
    ph, pw = pattern.shape[:2]

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        # the part of the region inside the tissue rectangle, in region coordinates
        x0, x1 = max(x, margin) - x, min(x + w, width - margin) - x
        y0, y1 = max(y, margin) - y, min(y + h, height - margin) - y
        if x0 >= x1 or y0 >= y1:
            return out
        for sy, dy, ny in _wrapped(y + y0 - margin, y1 - y0, ph):
            for sx, dx, nx in _wrapped(x + x0 - margin, x1 - x0, pw):
                out[y0 + dy : y0 + dy + ny, x0 + dx : x0 + dx + nx] = pattern[
                    sy : sy + ny, sx : sx + nx
                ]
        return out

    return RegionSource(height, width, region)


def downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """The level ``factor`` times smaller: the mean of each ``factor`` × ``factor`` block
    (OpenCV's area interpolation at an integer factor); the edge remainder that does not fill a
    block is dropped (size ``h // factor`` × ``w // factor``). How the writers make every
    reduced level, so tests can compute the expected pixels."""
    if factor == 1:
        return rgb
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    block = np.ascontiguousarray(rgb[: h * factor, : w * factor])
    return cv2.resize(block, (w, h), interpolation=cv2.INTER_AREA)


def default_levels(height: int, width: int, *, step: int = 4, smallest: int = 512) -> tuple:
    """Downsamples 1, step, step², ... while the level's longer side stays ≥ ``smallest``."""
    levels = [1]
    while max(height, width) // (levels[-1] * step) >= smallest:
        levels.append(levels[-1] * step)
    return tuple(levels)


def _level_tiles(source: RegionSource, factor: int, tile: int) -> Iterator[np.ndarray]:
    """The tiles (row-major) of the level ``factor`` times smaller, each made from level-0
    pieces of at most about 4096² pixels."""
    height, width = source.height // factor, source.width // factor
    piece = max(1, 4096 // factor)  # level pixels per side of one level-0 read
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            th, tw = min(tile, height - ty), min(tile, width - tx)
            out = np.empty((th, tw, 3), np.uint8)
            for py in range(0, th, piece):
                for px in range(0, tw, piece):
                    ph, pw = min(piece, th - py), min(piece, tw - px)
                    pixels = source.region(
                        (tx + px) * factor, (ty + py) * factor, pw * factor, ph * factor
                    )
                    out[py : py + ph, px : px + pw] = downsample(pixels, factor)
            yield out


def _write_levels(
    writer: tifffile.TiffWriter,
    source: RegionSource,
    levels: Sequence[int],
    *,
    tile: int,
    compression: str,
    first: dict,
    reduced: Callable[[int, int], dict],
) -> None:
    for index, factor in enumerate(levels):
        height, width = source.height // factor, source.width // factor
        options = first if index == 0 else {"subfiletype": 1, **reduced(width, height)}
        writer.write(
            _level_tiles(source, factor, tile),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="rgb",
            compression=compression,
            **options,
        )


def _check_levels(source: RegionSource, levels: Sequence[int] | None, tile: int) -> tuple:
    levels = tuple(levels or default_levels(source.height, source.width))
    if levels[0] != 1 or any(not isinstance(f, int) or f < 1 for f in levels):
        raise ValueError(f"levels must be integer downsamples starting at 1, got {levels}")
    if tile % 16:
        raise ValueError(f"TIFF tiles are multiples of 16 pixels, got {tile}")
    return levels


def _bigtiff(source: RegionSource) -> bool:
    return source.height * source.width * 3 * 1.4 > 2**32 - 2**25


def write_aperio_tiff(
    path: str | Path,
    image: np.ndarray | RegionSource,
    *,
    mpp: float = 0.25,
    app_mag: float = 40,
    tile: int = 256,
    levels: Sequence[int] | None = None,
    compression: str = "zlib",
) -> Path:
    """Writes an Aperio-style SVS: a tiled TIFF pyramid OpenSlide reads as vendor ``aperio``.

    Args:
        path: the file to write (``.svs`` by convention).
        image: RGB ``uint8`` array, or a :class:`RegionSource` for slides larger than memory.
        mpp: µm per level-0 pixel, written as ``MPP = ...`` in the description.
        app_mag: the objective magnification (``AppMag``).
        tile: tile side in pixels (a multiple of 16).
        levels: integer downsamples, the first 1; default :func:`default_levels`.
        compression: ``"zlib"`` (lossless), ``"jpeg"``, or anything tifffile writes.

    Returns:
        ``path``.
    """
    path, source = Path(path), as_source(image)
    levels = _check_levels(source, levels, tile)
    w0, h0 = source.width, source.height
    head = f"Aperio Image Library v12.0.0\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile})"
    first = {"description": f"{head} {compression}|AppMag = {app_mag:g}|MPP = {mpp:g}"}
    with tifffile.TiffWriter(path, bigtiff=_bigtiff(source)) as writer:
        _write_levels(
            writer,
            source,
            levels,
            tile=tile,
            compression=compression,
            first={**first, "metadata": None},
            reduced=lambda w, h: {
                "description": f"Aperio Image Library v12.0.0\r\n{w0}x{h0} -> {w}x{h} - ",
                "metadata": None,
            },
        )
    return path


def write_ome_tiff(
    path: str | Path,
    image: np.ndarray | RegionSource,
    *,
    mpp: float | None,
    tile: int = 256,
    levels: Sequence[int] | None = None,
    compression: str = "zlib",
    unit: str = "µm",
) -> Path:
    """Writes a pyramidal OME-TIFF: level 0 with the reduced levels as its SubIFDs.

    Args:
        path: the file to write (``.ome.tif`` by convention).
        image: RGB ``uint8`` array or :class:`RegionSource`.
        mpp: µm per level-0 pixel, written as ``PhysicalSizeX``/``Y`` (in ``unit``), or None
            for none.
        tile: tile side in pixels (a multiple of 16).
        levels: integer downsamples, the first 1; default :func:`default_levels`.
        compression: as for :func:`write_aperio_tiff`.
        unit: ``PhysicalSizeXUnit``: ``"µm"``, ``"nm"`` or ``"mm"`` (the value is converted).

    Returns:
        ``path``.
    """
    path, source = Path(path), as_source(image)
    levels = _check_levels(source, levels, tile)
    metadata: dict = {"axes": "YXS"}
    if mpp is not None:
        value = mpp / {"µm": 1.0, "nm": 1e-3, "mm": 1e3}[unit]
        metadata.update(
            PhysicalSizeX=value,
            PhysicalSizeXUnit=unit,
            PhysicalSizeY=value,
            PhysicalSizeYUnit=unit,
        )
    with tifffile.TiffWriter(path, bigtiff=_bigtiff(source), ome=True) as writer:
        _write_levels(
            writer,
            source,
            levels,
            tile=tile,
            compression=compression,
            first={"subifds": len(levels) - 1, "metadata": metadata},
            reduced=lambda w, h: {"metadata": None},
        )
    return path


def write_plain_tiff(
    path: str | Path,
    image: np.ndarray | RegionSource,
    *,
    tile: int | None = 256,
    compression: str = "zlib",
) -> Path:
    """Writes one level, tiled (or in strips when ``tile`` is None), with no pixel size.

    Args:
        path: the file to write.
        image: RGB ``uint8`` array or :class:`RegionSource`.
        tile: tile side in pixels (a multiple of 16), or None for strips (which OpenSlide
            does not read; needs an array).
        compression: as for :func:`write_aperio_tiff`.

    Returns:
        ``path``.
    """
    path, source = Path(path), as_source(image)
    with tifffile.TiffWriter(path, bigtiff=_bigtiff(source)) as writer:
        if tile is None:
            array = source.region(0, 0, source.width, source.height)
            writer.write(array, photometric="rgb", compression=compression, metadata=None)
        else:
            _write_levels(
                writer,
                source,
                _check_levels(source, (1,), tile),
                tile=tile,
                compression=compression,
                first={"metadata": None},
                reduced=lambda w, h: {},
            )
    return path


@dataclass(frozen=True)
class Mosaic:
    """MoNuSeg tiles laid on glass.

    Attributes:
        rgb: the image, ``uint8`` RGB.
        labels: instance labels of the same size (``int32``, 0 = background, ids unique across
            tiles), or None when not asked for.
        tiles: ``(name, x, y, width, height)`` of each tile in the image, row-major.
    """

    rgb: np.ndarray
    labels: np.ndarray | None
    tiles: tuple[tuple[str, int, int, int, int], ...]


def synthetic_mosaic(
    *, rows: int = 2, cols: int = 2, size: int = 256, margin: int = 128, seed: int = 0
) -> Mosaic:
    """Like :func:`monuseg_mosaic` with synthetic H&E tiles (:mod:`segcore.data.synthetic`),
    for tests that must run without the real data; ``labels`` is None."""
    from segcore.data.synthetic import generate_tile

    height, width = 2 * margin + rows * size, 2 * margin + cols * size
    rgb = np.full((height, width, 3), 255, np.uint8)
    placed = []
    for i in range(rows * cols):
        x, y = margin + (i % cols) * size, margin + (i // cols) * size
        rgb[y : y + size, x : x + size] = generate_tile([seed, i], size)[0]
        placed.append((f"synthetic-{seed}-{i}", x, y, size, size))
    return Mosaic(rgb=rgb, labels=None, tiles=tuple(placed))


def monuseg_mosaic(
    folder: str | Path,
    *,
    rows: int = 2,
    cols: int = 2,
    margin: int = 256,
    crop: int | None = None,
    split: str = "train",
    with_labels: bool = False,
    glass: int = 255,
) -> Mosaic:
    """A grid of MoNuSeg tiles, edge to edge, with ``margin`` pixels of glass around.

    Args:
        folder: the MoNuSeg folder (``tests.conftest.monuseg()``, ``../shared/data/monuseg``),
            holding ``<split>/images/*.tif`` and ``<split>/masks/*.png``.
        rows, cols: the grid; tiles are taken in name order.
        margin: glass around the tissue, in pixels.
        crop: the side of the top-left square kept of each tile (the tiles are 1000²), or None.
        split: ``"train"`` or ``"test"``.
        with_labels: also build the instance-label mosaic from the masks.
        glass: the grey level of the glass (255 = pure white).

    Returns:
        The :class:`Mosaic`.
    """
    names = sorted((Path(folder) / split / "images").glob("*.tif"))[: rows * cols]
    if len(names) < rows * cols:
        raise ValueError(f"{folder}/{split}/images has {len(names)} tiles, {rows * cols} needed")
    tiles = [cv2.imread(str(name), cv2.IMREAD_COLOR)[..., ::-1] for name in names]
    side = crop or min(min(t.shape[:2]) for t in tiles)
    height, width = 2 * margin + rows * side, 2 * margin + cols * side
    rgb = np.full((height, width, 3), glass, np.uint8)
    labels = np.zeros((height, width), np.int32) if with_labels else None
    placed, next_id = [], 0
    for i, (name, tile) in enumerate(zip(names, tiles, strict=True)):
        x, y = margin + (i % cols) * side, margin + (i // cols) * side
        rgb[y : y + side, x : x + side] = tile[:side, :side]
        placed.append((name.stem, x, y, side, side))
        if labels is not None:
            mask_path = name.parent.parent / "masks" / f"{name.stem}.png"
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)[:side, :side].astype(np.int32)
            ids, inverse = np.unique(mask, return_inverse=True)
            relabelled = np.where(ids > 0, np.arange(len(ids)) + next_id + (ids[0] != 0), 0)
            labels[y : y + side, x : x + side] = relabelled[inverse.reshape(mask.shape)]
            next_id += int((ids > 0).sum())
    return Mosaic(rgb=rgb, labels=labels, tiles=tuple(placed))
