"""The tile grid over a slide's tissue, at the model's pixel size.

**The work grid** is the slide seen at the model's pixel size: ``scale`` work pixels per
level-0 pixel, ``scale = level0_um / model_um`` (2 for a 20× slide at 0.5 µm/px and a
0.25 µm/px model; 1 for a 40× slide). Work pixel ``u`` covers level-0 ``[u / scale,
(u + 1) / scale)``; both grids have their origin at the slide's top-left corner.

**The pyramid level** read is the coarsest whose downsample is at most the wanted one
(``1 / scale``) times 1.01 (:func:`level_for_downsample`: never coarser than the model needs,
so nothing is lost; level 0 when even that is coarser, as for a 20× slide and a 40× model).
When that level's pixels are within :data:`SNAP_TOLERANCE` (2 %) of the model's size, the
grid takes the level's own pixel size as the work grid (``scale = 1 / downsample``): the
pixels are used as they are, exactly, instead of being resampled by a percent or two (which
costs time and softens the image while the model, trained with scale jitter, would not
notice the difference). :attr:`SlideGrid.pixel_size` is then the level's µm per pixel, so
the µm measurements of the nuclei stay exact.

**Tiles**: the region is cut row by row into cores of ``core_size`` work pixels (the last
row and column narrower), which partition it: every work pixel of the region lies in exactly
one core, so a nucleus kept by the tile whose core holds its centroid (half-open intervals)
is kept exactly once. Each tile's ``box`` is its core grown by ``halo`` pixels on each side,
the context the model and the instance split see; it may leave the slide (the reader returns
white glass there).

**The model's own tiles**: the model predicts each box in tiles of its input size ``T``
stepping by ``T - overlap`` (:func:`~segcore.inference.predict.predict_probabilities`). Given
``model_tiles=(T, overlap)``, each box is enlarged on the right and bottom to hold a whole
number of steps, so no tile of the box is shifted to end at its border. When moreover
``core_size`` is a multiple of the step (:func:`lattice_aligned`) all boxes' tiles lie on one
lattice, and with ``halo >= overlap`` every core pixel is predicted from the same model
tiles, blended with the same weights, as in one run over the whole region (padded with
``halo`` pixels above and to the left, and to whole model tiles below and to the right): the
cores' probabilities equal that run's, for a model and a preprocessing that look at the
pixels of a model tile only (a whole slide's run equalises every tile with one mapping,
:mod:`segcore.wholeslide.equalisation`, for that reason). The run's default 1792/128 for a
256-pixel model with overlap 32 (step 224) gives boxes of 2048 = 256 + 8 × 224 pixels.

Only tiles whose core touches tissue are listed; their ``index`` is the row-major position in
the full grid, so it is stable whatever the tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from segcore.errors import SlideError
from segcore.inference.resolution import check_pixel_size

__all__ = [
    "SNAP_TOLERANCE",
    "GridTile",
    "SlideGrid",
    "fit_model_tiles",
    "lattice_aligned",
    "level_for_downsample",
    "plan_grid",
]

SNAP_TOLERANCE = 0.02
"""Relative difference between the read level's and the model's pixel size below which the
level is used as it is (see the module docstring)."""

LEVEL_TOLERANCE = 1.01
"""A level may be this much coarser than asked and still be chosen (rounding of downsamples)."""

MIN_CORE_SIZE = 64
"""Smallest core side accepted, work pixels."""


class _Tissue(Protocol):  # segcore.slides.tissue.TissueMask
    def covers(self, x: float, y: float, width: float, height: float) -> bool: ...


@dataclass(frozen=True)
class GridTile:
    """One tile of the grid.

    Args:
        index: row-major position in the full grid (tissue or not), stable.
        row: grid row.
        col: grid column.
        core: ``(x, y, w, h)`` on the work grid; the cores partition the region.
        box: the core grown by the halo on each side (and on the right and bottom to whole
            model tiles, see the module docstring), ``(x, y, w, h)`` on the work grid.
    """

    index: int
    row: int
    col: int
    core: tuple[int, int, int, int]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class SlideGrid:
    """The tiles covering a slide region's tissue at the model's pixel size.

    Args:
        scale: work pixels per level-0 pixel.
        region: the part of the slide covered, level-0 ``(x, y, w, h)``.
        core_size: side of a full core, work pixels.
        halo: pixels added around each core to make its box.
        tiles: the tiles whose core touches tissue, by increasing index.
        level: the pyramid level the tiles are read from.
        level_downsample: that level's downsample (level-0 pixels per level pixel).
        pixel_size: µm per work pixel (the model's, or the level's when snapped).
        rows: rows of the full grid.
        cols: columns of the full grid.
        model_tiles: ``(size, overlap)`` of the model's own tiles the boxes were fitted to,
            or None.
    """

    scale: float
    region: tuple[int, int, int, int]
    core_size: int
    halo: int
    tiles: tuple[GridTile, ...]
    level: int = 0
    level_downsample: float = 1.0
    pixel_size: float = 0.25
    rows: int = 0
    cols: int = 0
    model_tiles: tuple[int, int] | None = None

    def to_level0(self, x: float, y: float) -> tuple[float, float]:
        """Work-grid coordinates → level-0 pixel coordinates."""
        return x / self.scale, y / self.scale

    @property
    def work_region(self) -> tuple[int, int, int, int]:
        """The region on the work grid, ``(x, y, w, h)``: the union of all cores."""
        return _work_region(self.region, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (without the tile list: its length and the tile indices)."""
        return {
            "scale": self.scale,
            "region": list(self.region),
            "work_region": list(self.work_region),
            "core_size": self.core_size,
            "halo": self.halo,
            "level": self.level,
            "level_downsample": self.level_downsample,
            "pixel_size": self.pixel_size,
            "rows": self.rows,
            "cols": self.cols,
            "model_tiles": None if self.model_tiles is None else list(self.model_tiles),
            "lattice_aligned": lattice_aligned(self.core_size, self.halo, self.model_tiles),
            "tiles": len(self.tiles),
            "tile_indices": [tile.index for tile in self.tiles],
        }


def level_for_downsample(downsamples: list[float] | tuple[float, ...], downsample: float) -> int:
    """The coarsest level whose downsample is at most ``downsample`` × 1.01, else level 0.

    Args:
        downsamples: each level's downsample, level 0 first (1.0).
        downsample: the wanted level-0 pixels per pixel.

    Returns:
        The level's index.
    """
    best = 0
    for level, value in enumerate(downsamples):
        if value <= downsample * LEVEL_TOLERANCE and value >= downsamples[best]:
            best = level
    return best


def lattice_aligned(core_size: int, halo: int, model_tiles: tuple[int, int] | None) -> bool:
    """Whether tiles of ``core_size`` and ``halo`` put the model's tiles on one lattice over the
    slide (``core_size`` a multiple of the step, ``halo >= overlap``; module docstring)."""
    if model_tiles is None:
        return False
    size, overlap = model_tiles
    return core_size % (size - overlap) == 0 and halo >= overlap


def fit_model_tiles(length: int, model_tiles: tuple[int, int] | None) -> int:
    """``length`` rounded up to a whole number of model tiles: ``size + k × step`` (``size``
    at least), or ``length`` itself when ``model_tiles`` is None."""
    if model_tiles is None:
        return length
    size, overlap = model_tiles
    step = size - overlap
    return size + step * math.ceil(max(length - size, 0) / step)


def _check_size(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SlideError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_region(region: object, width: int, height: int, name: str) -> tuple[int, ...]:
    """``region`` clipped to the slide; SlideError when malformed or outside it."""
    if region is None:
        return (0, 0, width, height)
    values = tuple(region) if isinstance(region, list | tuple) else ()
    if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise SlideError(f"{name}: region must be four integers x, y, w, h, got {region!r}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise SlideError(f"{name}: region {x},{y},{w},{h} is empty (width and height must be > 0)")
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        raise SlideError(
            f"{name}: region {x},{y},{w},{h} lies outside the slide ({width}×{height} px at "
            "level 0)"
        )
    return (x0, y0, x1 - x0, y1 - y0)


def _work_region(region: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    x, y, w, h = region
    x0, y0 = round(x * scale), round(y * scale)
    x1, y1 = round((x + w) * scale), round((y + h) * scale)
    return (x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))


def _scale(level0_um: float, model_um: float, downsamples: list[float]) -> tuple[float, int]:
    """``(scale, level)``: the level to read and the work grid's scale (snapped, see above)."""
    scale = level0_um / model_um
    level = level_for_downsample(downsamples, 1.0 / scale)
    downsample = downsamples[level]
    if abs(scale * downsample - 1.0) <= SNAP_TOLERANCE:
        scale = 1.0 / downsample
    return scale, level


def plan_grid(
    info: Any,
    tissue: _Tissue | None,
    *,
    model_pixel_size: float,
    core_size: int = 1792,
    halo: int = 128,
    region: tuple[int, int, int, int] | None = None,
    model_tiles: tuple[int, int] | None = None,
) -> SlideGrid:
    """Plans the tiles that cover a slide region's tissue at the model's pixel size.

    Args:
        info: the slide's :class:`~segcore.slides.reader.SlideInfo` (its ``levels``,
            ``pixel_size``, ``width``, ``height`` and ``path`` are used).
        tissue: the tissue mask (:class:`~segcore.slides.tissue.TissueMask`, anything with
            ``covers(x, y, w, h)`` in level-0 pixels), or None for every tile.
        model_pixel_size: µm per pixel the model works at.
        core_size: side of a tile's core, work pixels, at least 64; defaults to 1792 (see
            :class:`~segcore.wholeslide.config.SlideRunConfig` for why).
        halo: pixels of context around each core, ``0 <= halo``; defaults to 128.
        region: level-0 ``(x, y, w, h)`` to cover, clipped to the slide; None: the whole slide.
        model_tiles: ``(size, overlap)`` of the tiles the model predicts each box in; boxes
            are then enlarged on the right and bottom to whole model tiles (module docstring).

    Returns:
        The grid.

    Raises:
        SlideError: the slide has no pixel size, the region is malformed or outside the
            slide, or a size is out of range.
    """
    name = getattr(getattr(info, "path", None), "name", None) or "slide"
    if info.pixel_size is None:
        raise SlideError(
            f"{name}: the slide records no pixel size; give it (µm per pixel at level 0, "
            "e.g. --pixel-size 0.25 for 40×, 0.5 for 20×)"
        )
    level0_um = check_pixel_size(info.pixel_size, what=f"{name}: pixel size")
    model_um = check_pixel_size(model_pixel_size, what="the model's pixel size")
    core_size = _check_size("core_size", core_size, MIN_CORE_SIZE)
    halo = _check_size("halo", halo, 0)
    downsamples = [float(level.downsample) for level in info.levels]
    scale, level = _scale(level0_um, model_um, downsamples)
    region = _check_region(region, int(info.width), int(info.height), name)
    wx, wy, ww, wh = _work_region(region, scale)
    rows, cols = math.ceil(wh / core_size), math.ceil(ww / core_size)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            x, y = wx + col * core_size, wy + row * core_size
            w, h = min(core_size, wx + ww - x), min(core_size, wy + wh - y)
            if tissue is not None and not tissue.covers(x / scale, y / scale, w / scale, h / scale):
                continue
            box = (
                x - halo,
                y - halo,
                fit_model_tiles(w + 2 * halo, model_tiles),
                fit_model_tiles(h + 2 * halo, model_tiles),
            )
            tiles.append(GridTile(row * cols + col, row, col, (x, y, w, h), box))
    return SlideGrid(
        scale=scale,
        region=region,
        core_size=core_size,
        halo=halo,
        tiles=tuple(tiles),
        level=level,
        level_downsample=downsamples[level],
        pixel_size=level0_um / scale,
        rows=rows,
        cols=cols,
        model_tiles=None if model_tiles is None else tuple(model_tiles),
    )
