"""Cutting images larger than the model's input into tiles, and padding smaller ones.

Pure NumPy; used for validation/test tiles here and for tiled inference on any image size.
"""

from __future__ import annotations

import numpy as np


def tile_starts(length: int, tile: int, stride: int | None = None) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``[0, length)``.

    Tiles step by ``stride`` (default ``tile``, no overlap); the last tile is moved back so it
    ends exactly at ``length`` (so it may overlap its neighbour). When ``length <= tile`` the
    only start is 0.

    Example:
        >>> tile_starts(1000, 256)
        [0, 256, 512, 744]
    """
    stride = stride or tile
    if tile <= 0 or stride <= 0:
        raise ValueError("tile and stride must be positive")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def pad_to_at_least(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pads the bottom and right of an ``(H, W, ...)`` array so both sides are ≥ ``size``.

    Image and mask padded this way stay consistent (the mask is reflected like the image).
    """
    pad_h, pad_w = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if pad_h == 0 and pad_w == 0:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    mode = "reflect" if min(array.shape[:2]) > 1 else "edge"
    return np.pad(array, widths, mode=mode)


def extract_tiles(array: np.ndarray, size: int) -> np.ndarray:
    """Cuts an ``(H, W, ...)`` array into ``size``×``size`` tiles covering it.

    Tile positions come from :func:`tile_starts` on each axis.

    Arrays smaller than ``size`` are first padded with :func:`pad_to_at_least`.

    Returns:
        ``(N, size, size, ...)`` array of tiles, row by row.
    """
    array = pad_to_at_least(array, size)
    rows, cols = tile_starts(array.shape[0], size), tile_starts(array.shape[1], size)
    return np.stack([array[y : y + size, x : x + size] for y in rows for x in cols])
