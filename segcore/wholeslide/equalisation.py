"""One lightness equalisation for a whole slide, fitted on its tissue.

The model was trained on tiles equalised over themselves (:mod:`segcore.data.preprocessing`:
the CIELAB lightness histogram-equalised, globally or by CLAHE with one tile). Equalising each
slide tile over itself would make the nuclei found depend on the tile's borders and on how much
glass it holds: on a 2 × 2 MoNuSeg mosaic with glass margins, tiles equalised one by one found
354 nuclei where one run over the whole mosaic found 311. So a run fits **one** mapping on the
slide's tissue and applies it to every tile (:func:`~segcore.data.preprocessing.enhance_with_lut`):

* the histogram is taken at the work grid's resolution (what the model sees), from a window
  of :data:`HISTOGRAM_WINDOW` pixels centred in the core of up to :data:`HISTOGRAM_TILES`
  tissue tiles spread evenly over the grid (every tile of a small slide), counting only the
  pixels inside the tissue mask (glass left out);
* :func:`~segcore.data.preprocessing.equalisation_lut` turns it into OpenCV's own mapping, so a
  tile whose histogram equals the slide's is preprocessed exactly as :func:`enhance_image`
  would preprocess it alone.

A model whose preprocessing adapts within an image (CLAHE with several tiles) has no single
mapping: its tiles are equalised one by one, as before (:func:`slide_lut` returns None and says
so in the log).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from segcore.data.preprocessing import (
    PreprocessConfig,
    equalisation_lut,
    lightness_histogram,
    one_mapping,
)
from segcore.slides.grid import SlideGrid
from segcore.wholeslide.tiles import read_tile_image

log = logging.getLogger(__name__)

__all__ = ["HISTOGRAM_TILES", "as_lut", "slide_lut", "tissue_histogram"]

HISTOGRAM_TILES = 64
"""Most tissue tiles that make the slide's lightness histogram (spread evenly over the grid)."""

HISTOGRAM_WINDOW = 512
"""Side of the window, centred in each sampled tile's core, whose pixels count (work pixels):
64 windows of 512² read 17 megapixels, about a sixth of a 10,000² slide's tissue."""


def _sampled(tiles: tuple, count: int) -> list:
    if len(tiles) <= count:
        return list(tiles)
    picks = np.unique(np.linspace(0, len(tiles) - 1, count).round().astype(int))
    return [tiles[i] for i in picks]


def _window(core: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The centred :data:`HISTOGRAM_WINDOW` window of a core (the core if smaller)."""
    x, y, w, h = core
    side_w, side_h = min(w, HISTOGRAM_WINDOW), min(h, HISTOGRAM_WINDOW)
    return x + (w - side_w) // 2, y + (h - side_h) // 2, side_w, side_h


def _core_mask(tissue: Any, grid: SlideGrid, core: tuple[int, int, int, int]) -> np.ndarray:
    """The tissue mask over a core (work grid), nearest-neighbour from the mask's cells."""
    x, y, w, h = core
    step = 1.0 / (grid.scale * tissue.downsample)  # mask cells per work pixel
    cols = np.clip(((np.arange(w) + x + 0.5) * step).astype(int), 0, tissue.mask.shape[1] - 1)
    rows = np.clip(((np.arange(h) + y + 0.5) * step).astype(int), 0, tissue.mask.shape[0] - 1)
    return tissue.mask[np.ix_(rows, cols)]


def tissue_histogram(slide: Any, grid: SlideGrid, tissue: Any | None) -> tuple[np.ndarray, int]:
    """The lightness histogram of the slide's tissue (see the module docstring).

    Args:
        slide: the open slide.
        grid: the run's grid (its tissue tiles and resampling).
        tissue: the :class:`~segcore.slides.tissue.TissueMask`, or None (every pixel counts).

    Returns:
        ``(histogram, tiles read)``: int64 ``(256,)`` counts (all zero without tiles).
    """
    total = np.zeros(256, np.int64)
    sampled = _sampled(grid.tiles, HISTOGRAM_TILES)
    for tile in sampled:
        window = _window(tile.core)
        image = read_tile_image(slide, grid, window)
        mask = None if tissue is None else _core_mask(tissue, grid, window)
        if mask is not None and not mask.any():
            mask = None  # a tile planned on tissue that the mask misses at this scale
        total += lightness_histogram(image, mask)
    return total, len(sampled)


def slide_lut(
    slide: Any, grid: SlideGrid, tissue: Any | None, preprocess: PreprocessConfig
) -> dict[str, Any] | None:
    """The slide's one lightness mapping, or None when tiles are equalised one by one.

    Returns:
        ``{"lut": [256 ints], "tiles": tiles read, "pixels": pixels counted}`` (JSON values,
        recorded in ``run.json``), or None: the model equalises nothing, or adapts within an
        image (CLAHE with several tiles), or the grid has no tiles.
    """
    if preprocess.equalize == "none" or not grid.tiles:
        return None
    if not one_mapping(preprocess):
        log.info(
            "the model's CLAHE (%d×%d tiles) adapts within an image: each slide tile is "
            "equalised over itself",
            preprocess.clahe_tile_grid,
            preprocess.clahe_tile_grid,
        )
        return None
    histogram, tiles = tissue_histogram(slide, grid, tissue)
    lut = equalisation_lut(histogram, preprocess)
    return {"lut": [int(v) for v in lut], "tiles": tiles, "pixels": int(histogram.sum())}


def as_lut(equalisation: dict[str, Any] | None) -> np.ndarray | None:
    """The ``uint8 (256,)`` table of a :func:`slide_lut` record, or None."""
    if equalisation is None:
        return None
    return np.asarray(equalisation["lut"], dtype=np.uint8)
