"""Per-nucleus measurements of an instance-label image: :class:`NucleusTable`.

Input: ``labels``, an integer ``(H, W)`` image where 0 is background and each nucleus has its
own positive id (``1..N`` as :func:`segcore.inference.instances.label_instances` makes them;
gaps are allowed), the RGB image it came from, and the pixel size in µm/px. Without a pixel
size, lengths are in pixels and areas in px², and the column names say so (``area_px2``
instead of ``area_um2``).

Coordinates follow the GeoJSON outlines of :mod:`~segcore.analysis.exports` and QuPath: x to
the right, y down, origin at the image's top-left *corner*, so the centre of the top-left pixel
is ``(0.5, 0.5)``.

The measurements are computed for all nuclei at once with NumPy (one ``bincount`` per
quantity), not region by region with :func:`skimage.measure.regionprops_table`, which took
about 4 s for 20,000 small nuclei where this takes 0.2 s (600 nuclei: 0.26 s against 0.09 s).
The tests check the columns against ``regionprops_table`` (solidity, defined differently
below, against a convex hull of its own).

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from skimage.color import rgb2hed

from segcore.data.images import to_rgb_uint8
from segcore.errors import InvalidImageError
from segcore.inference.resolution import check_pixel_size

__all__ = ["NucleusTable", "check_labels", "nuclei_table"]

# Crofton perimeter weights of the 16 configurations of a 2×2 window (4 directions), indexed
# by 1·(bottom right) + 2·(top right) + 4·(bottom left) + 8·(top left): the table of
# skimage.measure.perimeter_crofton, so the estimate equals regionprops' ``perimeter_crofton``.
_EDGE, _DIAGONAL = np.pi / 4, np.pi / (4 * np.sqrt(2))
_CROFTON = np.array(
    [
        *(0, _EDGE + _DIAGONAL, _DIAGONAL, 2 * _DIAGONAL, 0, _EDGE + _DIAGONAL, 0, _DIAGONAL),
        *(_EDGE, 2 * _EDGE, _DIAGONAL, _DIAGONAL, _EDGE, 2 * _EDGE, 0, 0),
    ]
)


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """Returns ``labels`` as a 2-D integer array checked to hold no negative id.

    Args:
        labels: ``(H, W)`` instance-label image of any integer dtype; 0 is background.
        name: what the array is, for error messages.

    Returns:
        The array itself (not copied) when it is already a non-empty 2-D integer array.

    Raises:
        InvalidImageError: another shape or dtype (bool and float are refused), an empty
            array, or a negative value.
    """
    array = np.asarray(labels)
    if array.ndim != 2 or array.size == 0:
        raise InvalidImageError(
            f"{name}: expected a non-empty (H, W) label image, got shape {array.shape}"
        )
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InvalidImageError(f"{name}: expected integer nucleus ids, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.min() < 0:
        raise InvalidImageError(f"{name}: ids must be >= 0 (0 is background), got {array.min()}")
    return array


@dataclass(frozen=True, eq=False)
class NucleusTable:
    """One row per nucleus, in increasing id order, stored as read-only column arrays.

    Columns (``L`` is ``um`` with a pixel size, else ``px``):

    * ``id``: the nucleus's value in the label image.
    * ``centroid_x``, ``centroid_y``: centre of mass in pixels (see the module docstring).
    * ``area_L2``: pixel count × pixel area.
    * ``perimeter_L``: Crofton estimate of the boundary length (the formula of
      :func:`skimage.measure.perimeter_crofton`, 4 directions). It is close to the true
      length for round shapes, whatever their size, and about 6 % short for edges along the
      pixel axes. The outline's pixel-edge length would be 4/π ≈ 1.27 times too long on a
      disc; the pixel-centre path of ``skimage.measure.perimeter`` too short on small ones.
    * ``equivalent_diameter_L``: diameter of the disc of the same area, ``sqrt(4·area/π)``.
    * ``circularity``: ``4π·area / perimeter²``, clipped to at most 1: 1 for a disc (a
      digital disc of radius ≥ 3 px gives 0.99-1.0); a square gives 0.97 at 6 px, 0.89 at
      30 px (an ideal one π/4 ≈ 0.785); elongated or ragged outlines give less.
    * ``eccentricity``: of the ellipse with the same second moments, 0 for a circle and
      towards 1 for a line (as ``regionprops``); 0 for a single pixel.
    * ``solidity``: area / area of the convex hull of the nucleus's pixel squares (the
      outline QuPath gets from :mod:`~segcore.analysis.exports`, where it computes the same
      ratio). 1 for convex pixel sets such as rectangles; a digital disc of radius 5-20 px
      gives about 0.95-0.97 because its staircase outline is not convex.
    * ``mean_hematoxylin_od``: mean of the hematoxylin channel of
      :func:`skimage.color.rgb2hed` over the nucleus's pixels: the optical density (log10)
      projected on the hematoxylin stain vector, divided by 6 (scikit-image's scale).

    Attributes:
        data: column name → 1-D array, in column order.
        pixel_size_um: µm per pixel of the measurements, or None (lengths in pixels).
    """

    data: Mapping[str, np.ndarray]
    pixel_size_um: float | None

    def __len__(self) -> int:
        return len(self.data["id"])

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, whose suffixes give the units (``_um2``, ``_um``, ``_px``...)."""
        return tuple(self.data)

    @property
    def units(self) -> dict[str, str]:
        """Column name → unit for display (``"µm²"``, ``"px"``...; ``""`` when unitless)."""
        length = "px" if self.pixel_size_um is None else "µm"
        area = "px²" if self.pixel_size_um is None else "µm²"
        units = {"centroid_x": "px", "centroid_y": "px"}
        units.update({self.area_column: area, self.perimeter_column: length})
        units[self.diameter_column] = length
        return {name: units.get(name, "") for name in self.data}

    @property
    def _suffix(self) -> str:
        return "px" if self.pixel_size_um is None else "um"

    @property
    def area_column(self) -> str:
        """Name of the area column: ``area_um2`` or ``area_px2``."""
        return f"area_{self._suffix}2"

    @property
    def perimeter_column(self) -> str:
        """Name of the perimeter column: ``perimeter_um`` or ``perimeter_px``."""
        return f"perimeter_{self._suffix}"

    @property
    def diameter_column(self) -> str:
        """Name of the equivalent-diameter column."""
        return f"equivalent_diameter_{self._suffix}"

    def __getitem__(self, name: str) -> np.ndarray:
        """The column ``name`` (read-only array)."""
        return self.data[name]

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start:stop`` as dicts of Python numbers (``id`` an int, the rest floats)."""
        chunk = {name: values[start:stop].tolist() for name, values in self.data.items()}
        names = list(chunk)
        return [dict(zip(names, row, strict=True)) for row in zip(*chunk.values(), strict=True)]

    def page(self, index: int, size: int) -> list[dict[str, Any]]:
        """The rows of one page of a paged display.

        Args:
            index: page number, from 0; a page past the end is empty.
            size: rows per page, at least 1.

        Returns:
            Up to ``size`` rows (see :meth:`rows`).

        Raises:
            ValueError: ``index`` is negative or ``size`` is below 1.
        """
        if index < 0 or size < 1:
            raise ValueError(f"page needs index >= 0 and size >= 1, got {index} and {size}")
        return self.rows(index * size, (index + 1) * size)

    def page_count(self, size: int) -> int:
        """How many pages of ``size`` rows the table fills (0 when empty)."""
        if size < 1:
            raise ValueError(f"page size must be >= 1, got {size}")
        return -(-len(self) // size)

    def to_csv(self) -> bytes:
        """The table as UTF-8 CSV: a header line, then one line per nucleus (CRLF endings).

        Floats are written with ``repr`` (they read back exactly); an empty table gives the
        header line alone.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.columns)
        writer.writerows(zip(*(values.tolist() for values in self.data.values()), strict=True))
        return buffer.getvalue().encode("utf-8")

    def summary(self, image_shape: tuple[int, ...]) -> dict[str, Any]:
        """Figures for the whole image.

        Args:
            image_shape: shape of the image the nuclei come from (``(H, W)`` or
                ``(H, W, 3)``), for the density and the area fraction.

        Returns:
            A dict with ``count``; ``pixel_size_um``; ``area_unit`` and ``length_unit``
            (``"µm²"``/``"µm"``, or ``"px²"``/``"px"`` without a pixel size);
            ``image_area_mm2`` and ``density_per_mm2`` (nuclei per mm²; both None without a
            pixel size); ``area_fraction`` (nuclear area / image area, 0-1); ``median_area``,
            ``mean_area``, ``median_equivalent_diameter``, ``median_circularity``,
            ``median_solidity`` and ``median_hematoxylin_od`` (None when there is no
            nucleus).
        """
        height, width = int(image_shape[0]), int(image_shape[1])
        areas = self.data[self.area_column]
        scale = 1.0 if self.pixel_size_um is None else self.pixel_size_um**2
        image_area = height * width * scale
        image_area_mm2 = None if self.pixel_size_um is None else image_area * 1e-6
        units = self.units

        def median(name: str) -> float | None:
            return float(np.median(self.data[name])) if len(self) else None

        return {
            "count": len(self),
            "pixel_size_um": self.pixel_size_um,
            "area_unit": units[self.area_column],
            "length_unit": units[self.perimeter_column],
            "image_area_mm2": image_area_mm2,
            "density_per_mm2": None if image_area_mm2 is None else len(self) / image_area_mm2,
            "area_fraction": float(areas.sum()) / image_area if image_area else 0.0,
            "median_area": median(self.area_column),
            "mean_area": float(areas.mean()) if len(self) else None,
            "median_equivalent_diameter": median(self.diameter_column),
            "median_circularity": median("circularity"),
            "median_solidity": median("solidity"),
            "median_hematoxylin_od": median("mean_hematoxylin_od"),
        }


def _crofton_perimeters(padded: np.ndarray, size: int) -> np.ndarray:
    """Crofton perimeter (px) of every id, from the 2×2 windows that hold a nucleus pixel.

    Args:
        padded: the label image with one row/column of background around it; its values
            index the result.
        size: length of the result (largest id + 1).
    """
    nucleus = padded != 0
    # A window is named by the flat index of its top-left pixel.
    touched = np.zeros_like(nucleus)
    touched[:-1, :-1] = nucleus[:-1, :-1] | nucleus[1:, :-1] | nucleus[:-1, 1:] | nucleus[1:, 1:]
    tops = np.flatnonzero(touched)
    flat, width = padded.ravel(), padded.shape[1]
    corners = [flat[tops + width + 1], flat[tops + 1], flat[tops + width], flat[tops]]
    totals = np.zeros(size)
    for i, ids in enumerate(corners):
        code = sum((other == ids).astype(np.intp) << bit for bit, other in enumerate(corners))
        counted = ids != 0
        for earlier in corners[:i]:  # each id once per window
            counted &= ids != earlier
        chosen = ids[counted].astype(np.intp)
        totals += np.bincount(chosen, _CROFTON[code[counted]], minlength=size)
    return totals


def _hull_areas(ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Area (px²) of the convex hull of each id's pixel squares.

    The hull only needs the outer corners of each row's leftmost and rightmost pixel.
    ``ids``, ``rows``, ``cols`` list the nucleus pixels in row-major order.
    """
    order = np.argsort(ids, kind="stable")  # by id, then row, then column
    ids, rows, cols = ids[order], rows[order], cols[order]
    starts = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (rows[1:] != rows[:-1])])
    run_id, run_row = ids[starts], rows[starts]
    left = cols[starts]
    right = np.r_[cols[starts[1:] - 1], cols[-1]] + 1
    corners = np.stack(
        [left, run_row, left, run_row + 1, right, run_row, right, run_row + 1], axis=1
    ).reshape(-1, 2)
    corners = corners.astype(np.int32)
    bounds = np.flatnonzero(np.r_[True, run_id[1:] != run_id[:-1], True]) * 4
    areas = np.zeros(size)
    for first, stop, nucleus in zip(bounds[:-1], bounds[1:], run_id[bounds[:-1] // 4], strict=True):
        areas[nucleus] = cv2.contourArea(cv2.convexHull(corners[first:stop]))
    return areas


def _moments(ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int):
    """Pixel counts, centroids (pixel-centre coordinates) and eccentricities of every id."""
    counts = np.bincount(ids, minlength=size).astype(np.float64)
    safe = np.maximum(counts, 1)
    cy = np.bincount(ids, rows, minlength=size) / safe
    cx = np.bincount(ids, cols, minlength=size) / safe
    dy, dx = rows - cy[ids], cols - cx[ids]
    syy = np.bincount(ids, dy * dy, minlength=size) / safe
    sxx = np.bincount(ids, dx * dx, minlength=size) / safe
    sxy = np.bincount(ids, dx * dy, minlength=size) / safe
    half_sum, root = (sxx + syy) / 2, np.hypot((sxx - syy) / 2, sxy)
    major, minor = half_sum + root, np.maximum(half_sum - root, 0)
    ratio = np.divide(minor, major, out=np.ones_like(major), where=major > 0)
    return counts, cx, cy, np.sqrt(np.clip(1 - ratio, 0, 1))


def _hematoxylin_sums(image: np.ndarray, labels: np.ndarray, ids: np.ndarray, size: int):
    """Sum of rgb2hed's hematoxylin channel per id, over the nucleus pixels only."""
    pixels = image[labels > 0]  # (K, 3) in the same row-major order as ``ids``
    if not len(pixels):
        return np.zeros(size)
    hematoxylin = rgb2hed(pixels[np.newaxis])[0, :, 0]
    return np.bincount(ids, hematoxylin, minlength=size)


def _dense_ids(labels: np.ndarray):
    """The label image padded by one background pixel, with ids made dense if they are not.

    Returns:
        ``(padded, pixels, ids, names)``: the padded image; the flat indices of its nonzero
        pixels (row-major); their ids as ``intp`` (indices into ``names``); and ``names``,
        the label value of each index (``names[0]`` is 0, the background). Ids up to twice
        the pixel count are kept as they are (``names[i] == i``); larger ones are renumbered.
    """
    padded = np.pad(labels, 1)
    pixels = np.flatnonzero(padded)
    values = padded.ravel()[pixels]
    largest = int(values.max()) if values.size else 0
    if largest <= 2 * values.size + 1024:
        return padded, pixels, values.astype(np.intp), np.arange(largest + 1, dtype=np.int64)
    names, ids = np.unique(values, return_inverse=True)
    ids = ids.astype(np.intp) + 1
    dense = np.zeros(padded.shape, np.intp)
    dense.ravel()[pixels] = ids
    return dense, pixels, ids, np.r_[0, names].astype(np.int64)


def nuclei_table(labels, image, pixel_size: float | None = None) -> NucleusTable:
    """Measures every nucleus of an instance-label image.

    Args:
        labels: ``(H, W)`` integer label image, 0 background; any positive ids (gaps are
            allowed: the table lists the ids present, increasing).
        image: the RGB image the labels belong to, same H×W (anything
            :func:`~segcore.data.images.to_rgb_uint8` accepts).
        pixel_size: µm per pixel, or None when unknown (lengths and areas in pixels).

    Returns:
        The table; empty (0 rows, all columns) when ``labels`` holds no nucleus.

    Raises:
        InvalidImageError: bad ``labels`` or ``image``, or their sizes differ.
        ConfigError: ``pixel_size`` is not a number in
            :data:`~segcore.data.images.PIXEL_SIZE_RANGE`.
    """
    labels = check_labels(labels)
    image = to_rgb_uint8(image, name="image")
    if image.shape[:2] != labels.shape:
        raise InvalidImageError(
            f"labels are {labels.shape[1]}×{labels.shape[0]} but the image is "
            f"{image.shape[1]}×{image.shape[0]}; they must have the same size"
        )
    scale = None if pixel_size is None else check_pixel_size(pixel_size)
    padded, pixels, ids, names = _dense_ids(labels)
    rows, cols = np.divmod(pixels, padded.shape[1])
    rows, cols = rows - 1, cols - 1
    size = len(names)
    counts, cx, cy, eccentricity = _moments(ids, rows, cols, size)
    perimeter = _crofton_perimeters(padded, size)
    hull = _hull_areas(ids, rows, cols, size) if ids.size else np.zeros(size)
    od = _hematoxylin_sums(image, labels, ids, size)
    present = np.flatnonzero(counts[1:]) + 1  # the ids in the image (ids[0] is background)
    area, perimeter = counts[present], perimeter[present]
    length = 1.0 if scale is None else scale
    suffix = "px" if scale is None else "um"
    columns = {
        "id": names[present],
        "centroid_x": cx[present] + 0.5,
        "centroid_y": cy[present] + 0.5,
        f"area_{suffix}2": area * length**2,
        f"perimeter_{suffix}": perimeter * length,
        f"equivalent_diameter_{suffix}": np.sqrt(4 * area / math.pi) * length,
        "circularity": np.minimum(4 * math.pi * area / perimeter**2, 1.0),
        "eccentricity": eccentricity[present],
        "solidity": area / hull[present],
        "mean_hematoxylin_od": od[present] / area,
    }
    for values in columns.values():
        values.setflags(write=False)
    return NucleusTable(MappingProxyType(columns), scale)
