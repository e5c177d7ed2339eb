"""One tile of a whole-slide run: its pixels on the work grid, and the nuclei it owns.

**Reading** (:func:`read_tile_image`): the tile's box is read from the grid's pyramid level
and resampled to the work grid (:mod:`segcore.slides.grid`). The mapping is global — work
pixel ``u`` has its centre at level pixel ``(u + 0.5) / a - 0.5``, with ``a`` work pixels per
level pixel — so neighbouring tiles see the same pixels where their boxes overlap:

* ``a == 1`` (the usual case: a 40× slide and a 40× model): the level's pixels as they are;
* shrinking by a whole factor ``k`` (``1 / a == k``): ``k × k`` blocks of level pixels,
  aligned on the level's origin, averaged (``cv2.INTER_AREA``);
* otherwise: first the whole part of the shrink factor as above, then bilinear resampling
  (``cv2.warpAffine``, ``INTER_LINEAR``), enlarging (a 20× slide for a 40× model) or
  shrinking by less than 2×, after a Gaussian pre-blur against aliasing when shrinking.

**Nuclei** (:func:`tile_nuclei`): the probability map is split into nuclei
(:func:`~segcore.inference.instances.label_instances` at the work grid's pixel size) over the
part of the box that can hold the nuclei of the core
(:func:`~segcore.wholeslide.nuclei_region.nuclei_region`: the core, every object that meets it
and some context around them — the same labels there as over the whole box, from about 85 %
of its pixels with the default tiles) and measured
(:func:`~segcore.analysis.nuclei.nuclei_table`, µm, in box coordinates); the tile keeps the
nuclei whose centroid lies in its core (half-open intervals, so a nucleus on a border is kept by
exactly one tile) and gives their centroids and outlines
(:func:`~segcore.analysis.exports.nucleus_rings`) in level-0 pixel coordinates: work-grid
coordinates divided by ``scale``, rounded to :data:`COORDINATE_DECIMALS` decimals (outlines
stay integers when the grids coincide).
Measurements are rounded to :data:`MEASUREMENT_DIGITS` significant digits. A kept nucleus that
touches the box's outer edge was cut by it (the halo was too small for it): it is counted in
:attr:`TileNuclei.edge_nuclei` and logged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from segcore.analysis.exports import nucleus_rings
from segcore.analysis.nuclei import nuclei_table
from segcore.errors import SlideError
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.slides.grid import GridTile, SlideGrid
from segcore.wholeslide.nuclei_region import nuclei_region

log = logging.getLogger(__name__)

__all__ = [
    "COORDINATE_DECIMALS",
    "MEASUREMENT_COLUMNS",
    "MEASUREMENT_DIGITS",
    "TileNuclei",
    "read_tile_image",
    "tile_nuclei",
]

COORDINATE_DECIMALS = 3
"""Decimals kept of level-0 coordinates that are not whole (a thousandth of a pixel)."""

MEASUREMENT_DIGITS = 7
"""Significant digits kept of each measurement."""

_TABLE_POSITION = ("id", "centroid_x", "centroid_y")
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in nuclei_table(np.zeros((1, 1), np.int32), np.zeros((1, 1, 3), np.uint8), 1.0).columns
    if name not in _TABLE_POSITION
)
"""The measurements of each nucleus (µm), in the order of
:func:`~segcore.analysis.nuclei.nuclei_table`, without its id and centroid."""

BAND_PIXELS = 16_000_000
"""Most level pixels read at once when a box is shrunk from a finer level."""

_EXACT = 1e-9


@dataclass(frozen=True)
class TileNuclei:
    """The nuclei one tile owns.

    Args:
        index: the tile's index in the grid.
        records: one JSON-ready dict per nucleus, by increasing label:
            ``{"x", "y"`` (centroid, level-0 px), ``"m"`` (measurements by
            :data:`MEASUREMENT_COLUMNS` name; non-finite ones left out), ``"rings"`` (outer
            rings of its polygons, closed, level-0 px)``}``.
        edge_nuclei: kept nuclei that touch the box's outer edge (cut by it).
        seconds: time spent splitting, measuring and outlining.
    """

    index: int
    records: tuple[dict[str, Any], ...]
    edge_nuclei: int
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read_level(slide: Any, level: int, downsample: float, x0: int, y0: int, w: int, h: int):
    """Level pixels ``[x0, x0 + w) × [y0, y0 + h)`` (level coordinates) as uint8 RGB."""
    image = slide.read_region(round(x0 * downsample), round(y0 * downsample), w, h, level=level)
    image = np.asarray(image)
    if image.shape != (h, w, 3) or image.dtype != np.uint8:
        raise SlideError(
            f"read_region returned {image.dtype} {image.shape} for a {w}×{h} region; "
            "expected uint8 RGB"
        )
    return image


def _read_blocks(slide: Any, grid: SlideGrid, x0: int, y0: int, w: int, h: int, k: int):
    """The means of ``k × k`` blocks of level pixels: block ``(i, j)`` for ``x0 <= j < x0 + w``,
    ``y0 <= i < y0 + h`` (block ``j`` covers level pixels ``[j k, (j + 1) k)``), uint8 RGB.

    Read in bands of at most :data:`BAND_PIXELS` level pixels, so a large shrink factor never
    asks the slide for a region over its limit.
    """
    level, d = grid.level, grid.level_downsample
    rows = max(1, BAND_PIXELS // (w * k * k))  # block rows per band
    bands = []
    for top in range(0, h, rows):
        n = min(rows, h - top)
        pixels = _read_level(slide, level, d, x0 * k, (y0 + top) * k, w * k, n * k)
        if k > 1:
            pixels = cv2.resize(pixels, (w, n), interpolation=cv2.INTER_AREA)
        bands.append(pixels)
    return bands[0] if len(bands) == 1 else np.concatenate(bands)


def read_tile_image(slide: Any, grid: SlideGrid, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of a work-grid box, read at ``grid.level`` and resampled (module docstring).

    Args:
        slide: an open :class:`~segcore.slides.reader.Slide` (``read_region``).
        grid: the grid the box belongs to.
        box: ``(x, y, w, h)`` on the work grid.

    Returns:
        uint8 RGB ``(h, w, 3)``.

    Raises:
        SlideError: the slide cannot read the region (raised by ``read_region``).
    """
    bx, by, bw, bh = box
    a = grid.scale * grid.level_downsample  # work pixels per level pixel
    k = max(1, math.floor(1.0 / a + 1e-6))  # the whole part of the shrink factor
    a_k = a * k  # work pixels per k×k block
    if abs(a_k - 1.0) < _EXACT:  # the level's pixels, or whole blocks of them
        return _read_blocks(slide, grid, bx, by, bw, bh, k)
    # Blocks j0..j1 cover the box with a margin of 2 for the interpolation.
    j0 = math.floor((bx + 0.5) / a_k - 0.5) - 2
    i0 = math.floor((by + 0.5) / a_k - 0.5) - 2
    j1 = math.ceil((bx + bw - 0.5) / a_k - 0.5) + 3
    i1 = math.ceil((by + bh - 0.5) / a_k - 0.5) + 3
    image = _read_blocks(slide, grid, j0, i0, j1 - j0, i1 - i0, k)
    if a_k < 1:  # shrinking by less than 2: blur away what the new grid cannot hold
        sigma = 0.5 * math.sqrt(1.0 / a_k**2 - 1.0)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    matrix = np.array(
        [
            [1.0 / a_k, 0.0, (bx + 0.5) / a_k - 0.5 - j0],
            [0.0, 1.0 / a_k, (by + 0.5) / a_k - 0.5 - i0],
        ]
    )
    return cv2.warpAffine(
        image,
        matrix,
        (bw, bh),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


TISSUE_MARGIN_CELLS = 2
"""Tissue-mask cells of margin around the tissue inside which a box is predicted (the model
skips its 256² tiles beyond: glass); at the mask's default 2048-pixel side, a 40,000² slide's
cells are about 5 µm."""


def tissue_in_box(
    tissue: Any, grid: SlideGrid, box: tuple[int, int, int, int], grow: int = 0
) -> np.ndarray:
    """The tissue mask over a work-grid box, ``bool (h, w)``: each pixel takes the mask cell it
    falls in, after the mask is grown by ``grow`` cells (a margin for tissue the low-resolution
    mask missed at its edges).

    Args:
        tissue: the :class:`~segcore.slides.tissue.TissueMask`.
        grid: the grid (its scale).
        box: ``(x, y, w, h)`` on the work grid.
        grow: cells to grow the mask by (a square structuring element).
    """
    x, y, w, h = box
    step = 1.0 / (grid.scale * tissue.downsample)  # mask cells per work pixel
    cols = np.floor((np.arange(w) + x + 0.5) * step).astype(np.int64)
    rows = np.floor((np.arange(h) + y + 0.5) * step).astype(np.int64)
    r0, r1 = int(rows.min()) - grow, int(rows.max()) + grow + 1  # may leave the mask
    c0, c1 = int(cols.min()) - grow, int(cols.max()) + grow + 1
    cells = np.zeros((r1 - r0, c1 - c0), np.uint8)  # cells beyond the mask: glass
    part = np.asarray(tissue.mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)], np.uint8)
    cells[max(r0, 0) - r0 :][: part.shape[0], max(c0, 0) - c0 :][:, : part.shape[1]] = part
    if grow:
        kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
        cells = cv2.dilate(cells, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cells[np.ix_(rows - r0, cols - c0)] > 0


# --------------------------------------------------------------------------------------------
# Nuclei
# --------------------------------------------------------------------------------------------


def _significant(value: float) -> float:
    return float(f"{value:.{MEASUREMENT_DIGITS}g}")


def _rings(mask: np.ndarray, offset: tuple[int, int], scale: float) -> list:
    """Outer rings of a nucleus's mask in level-0 coordinates."""
    rings = nucleus_rings(mask, offset)
    if scale == 1.0:
        return rings
    digits = COORDINATE_DECIMALS
    return [[[round(x / scale, digits), round(y / scale, digits)] for x, y in r] for r in rings]


EDGE_MARGIN = 2
"""Pixels at the box's edge within which a nucleus counts as cut by it: the smoothing and the
model's padding make the outermost pixels unreliable, so a cut nucleus may stop one short."""


def _edge_labels(labels: np.ndarray) -> np.ndarray:
    """The labels within :data:`EDGE_MARGIN` pixels of the box's outer edge."""
    m = EDGE_MARGIN
    edge = np.concatenate(
        [labels[:m].ravel(), labels[-m:].ravel(), labels[:, :m].ravel(), labels[:, -m:].ravel()]
    )
    return np.unique(edge[edge > 0])


def _labels(tile, probabilities, grid, threshold, instances, whole_box) -> np.ndarray:
    """The box's nuclei labels: over
    :func:`~segcore.wholeslide.nuclei_region.nuclei_region` (0 elsewhere), or the whole box."""
    if whole_box:
        return label_instances(probabilities, threshold, instances, pixel_size=grid.pixel_size)
    bx, by = tile.box[:2]
    x, y, w, h = tile.core
    core = (x - bx, y - by, x - bx + w, y - by + h)
    x0, y0, x1, y1 = nuclei_region(probabilities, threshold, instances.fill_holes, core)
    labels = np.zeros(probabilities.shape, np.int32)
    labels[y0:y1, x0:x1] = label_instances(
        probabilities[y0:y1, x0:x1], threshold, instances, pixel_size=grid.pixel_size
    )
    return labels


def _owned(table, tile: GridTile) -> np.ndarray:
    """Row indices of the table's nuclei whose centroid lies in the tile's core."""
    bx, by = tile.box[:2]
    x, y, w, h = tile.core
    cx = table["centroid_x"] + bx
    cy = table["centroid_y"] + by
    return np.flatnonzero((cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h))


def tile_nuclei(
    tile: GridTile,
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    grid: SlideGrid,
    threshold: float,
    instances: InstanceConfig,
    whole_box: bool = False,
) -> TileNuclei:
    """Splits a tile's probabilities into nuclei and keeps those its core owns.

    Args:
        tile: the tile.
        image: its box's pixels on the work grid (:func:`read_tile_image`).
        probabilities: the model's float32 probabilities of ``image``, same size.
        grid: the grid (scale and work pixel size).
        threshold: a pixel is nucleus when its probability is ``>= threshold``.
        instances: the splitting settings.
        whole_box: split the whole box rather than its
            :func:`~segcore.wholeslide.nuclei_region.nuclei_region` (the same nuclei; for tests
            and comparisons).

    Returns:
        The tile's nuclei (see :class:`TileNuclei`).
    """
    started = time.perf_counter()
    labels = _labels(tile, probabilities, grid, threshold, instances, whole_box)
    table = nuclei_table(labels, image, pixel_size=grid.pixel_size)
    owned = _owned(table, tile)
    edge = set(_edge_labels(labels).tolist())
    boxes = ndimage.find_objects(labels)
    bx, by = tile.box[:2]
    columns = {name: table[name][owned].tolist() for name in MEASUREMENT_COLUMNS}
    ids = table["id"][owned].tolist()
    xs = ((table["centroid_x"][owned] + bx) / grid.scale).tolist()
    ys = ((table["centroid_y"][owned] + by) / grid.scale).tolist()
    records = []
    edge_nuclei = 0
    for row, nucleus in enumerate(ids):
        rows, cols = boxes[nucleus - 1]
        rings = _rings(
            labels[rows, cols] == nucleus, (cols.start + bx, rows.start + by), grid.scale
        )
        measurements = {
            name: _significant(values[row])
            for name, values in columns.items()
            if math.isfinite(values[row])
        }
        records.append(
            {
                "x": round(xs[row], COORDINATE_DECIMALS),
                "y": round(ys[row], COORDINATE_DECIMALS),
                "m": measurements,
                "rings": rings,
            }
        )
        edge_nuclei += nucleus in edge
    if edge_nuclei:
        log.info(
            "tile %d: %d nucleus/nuclei cut by the box's edge (halo %d px too small for them)",
            tile.index,
            edge_nuclei,
            grid.halo,
        )
    seconds = time.perf_counter() - started
    return TileNuclei(tile.index, tuple(records), edge_nuclei, seconds)
