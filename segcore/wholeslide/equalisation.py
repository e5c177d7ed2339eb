"""One lightness equalisation for a whole slide, fitted on its tissue.

The model was trained on tiles equalised over themselves (:mod:`segcore.data.preprocessing`:
the CIELAB lightness histogram-equalised, globally or by CLAHE with one tile). Equalising each
slide tile over itself would make the nuclei found depend on the tile's borders and on how much
glass it holds: on a 2 × 2 MoNuSeg mosaic with glass margins, tiles equalised one by one found
354 nuclei where one run over the whole mosaic found 311. So a run fits **one** mapping on the
slide's tissue and applies it to every tile (:func:`~segcore.data.preprocessing.enhance_with_lut`):

* the histogram is taken at the work grid's resolution (what the model sees), from up to
  :data:`HISTOGRAM_WINDOWS` windows of :data:`HISTOGRAM_WINDOW` pixels on a fixed lattice,
  spread evenly over the tissue (all of them on a small slide), counting only the pixels
  inside the tissue mask (glass left out);
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
from segcore.wholeslide.tiles import read_tile_image, tissue_in_box

log = logging.getLogger(__name__)

__all__ = ["HISTOGRAM_WINDOW", "HISTOGRAM_WINDOWS", "as_lut", "slide_lut", "tissue_histogram"]

HISTOGRAM_WINDOW = 256
"""Side of the windows whose tissue pixels make the histogram (work pixels): the cells of a
lattice anchored at the work grid's origin, so the windows depend on neither the tiles nor
their size, and never overlap."""

HISTOGRAM_WINDOWS = 256
"""Most windows read (spread evenly over the tissue, in row-major order): 17 megapixels at
most, each window at a 40× slide's level 0 one JPEG tile or a few; a slide with fewer
tissue windows has all of them read, so its histogram is exactly its tissue's."""


def _tissue_windows(grid: SlideGrid, tissue: Any | None) -> list[tuple[int, int, int, int]]:
    """The lattice windows (clipped to the work region) that hold tissue, evenly thinned to at
    most :data:`HISTOGRAM_WINDOWS`."""
    side = HISTOGRAM_WINDOW
    x0, y0, w, h = grid.work_region
    cols = range(x0 // side, (x0 + w - 1) // side + 1)
    rows = range(y0 // side, (y0 + h - 1) // side + 1)
    windows = []
    for row in rows:
        for col in cols:
            left, top = max(col * side, x0), max(row * side, y0)
            right, bottom = min((col + 1) * side, x0 + w), min((row + 1) * side, y0 + h)
            window = (left, top, right - left, bottom - top)
            if tissue is None or tissue_in_box(tissue, grid, window).any():
                windows.append(window)
    if len(windows) > HISTOGRAM_WINDOWS:
        picks = np.unique(np.linspace(0, len(windows) - 1, HISTOGRAM_WINDOWS).round())
        windows = [windows[int(i)] for i in picks]
    return windows


def tissue_histogram(slide: Any, grid: SlideGrid, tissue: Any | None) -> tuple[np.ndarray, int]:
    """The lightness histogram of the slide's tissue (see the module docstring).

    Args:
        slide: the open slide.
        grid: the run's grid (its region and resampling).
        tissue: the :class:`~segcore.slides.tissue.TissueMask`, or None (every pixel counts).

    Returns:
        ``(histogram, windows read)``: int64 ``(256,)`` counts.
    """
    total = np.zeros(256, np.int64)
    windows = _tissue_windows(grid, tissue)
    for window in windows:
        image = read_tile_image(slide, grid, window)
        mask = None if tissue is None else tissue_in_box(tissue, grid, window)
        total += lightness_histogram(image, mask)
    return total, len(windows)


def slide_lut(
    slide: Any, grid: SlideGrid, tissue: Any | None, preprocess: PreprocessConfig
) -> dict[str, Any] | None:
    """The slide's one lightness mapping, or None when tiles are equalised one by one.

    Returns:
        ``{"lut": [256 ints], "windows": windows read, "pixels": pixels counted}`` (JSON values,
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
    histogram, windows = tissue_histogram(slide, grid, tissue)
    lut = equalisation_lut(histogram, preprocess)
    return {"lut": [int(v) for v in lut], "windows": windows, "pixels": int(histogram.sum())}


def as_lut(equalisation: dict[str, Any] | None) -> np.ndarray | None:
    """The ``uint8 (256,)`` table of a :func:`slide_lut` record, or None."""
    if equalisation is None:
        return None
    return np.asarray(equalisation["lut"], dtype=np.uint8)
