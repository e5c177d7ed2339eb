"""Downloads of the nuclei as objects: GeoJSON outlines for QuPath, a 16-bit label PNG, a CSV.

**GeoJSON** (:func:`instances_geojson`): a ``FeatureCollection`` with one ``Feature`` per
nucleus, in the form QuPath 0.4+ writes and reads (``File → Import objects``, or drag and drop):

* ``geometry``: the nucleus's outline in image pixel coordinates, x to the right, y down,
  around the pixels (the corners of the pixel squares), so a one-pixel nucleus is the unit
  square and the polygon's area equals the pixel count. Exterior rings are closed and
  counter-clockwise in these coordinates (positive shoelace area; on screen, with y down,
  they turn clockwise), as RFC 7946 asks; QuPath accepts either orientation.
* Only the outer boundary: a hole inside a nucleus is filled (the instance step fills holes
  upstream), and so is a background pocket that touches the outside only at a corner.
* A nucleus whose pixels form several 8-connected parts becomes a ``MultiPolygon`` with one
  polygon per part (QuPath reads it as one object); parts touching only at a corner are
  separate polygons sharing that vertex, which is still valid.
* ``id``: the nucleus id as a string. QuPath keeps an ``id`` only when it is a UUID, and
  otherwise ignores it, so the id is also a measurement.
* ``properties``: ``objectType: "detection"`` (QuPath's name for a detection object),
  ``classification`` ``{"name": "Nucleus", "color": [r, g, b]}`` (QuPath reads a
  classification object only with both keys), and ``measurements``: an object mapping names
  to numbers, as QuPath 0.4+ writes them (older versions wrote a list of name/value pairs;
  current ones read both). Non-finite values are left out: JSON has no NaN.

Outlines are traced with :func:`cv2.findContours` on each nucleus's bounding box, enlarged
×2 so that a one-pixel-wide part has two sides; the traced sub-pixel centres then map exactly
onto pixel corners (``(u + 1) // 2``).

**Label PNG** (:func:`label_png_bytes`): the label image as a single-channel 16-bit PNG.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import json
import math
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from segcore.analysis.nuclei import NucleusTable, check_labels
from segcore.analysis.overlays import PALETTE
from segcore.errors import InvalidImageError

__all__ = [
    "MAX_PNG_LABEL",
    "NUCLEUS_CLASS",
    "geojson_bytes",
    "instances_geojson",
    "label_png_bytes",
    "nuclei_csv_bytes",
    "nucleus_rings",
]

NUCLEUS_CLASS = "Nucleus"
"""QuPath classification name of the exported nuclei."""

MAX_PNG_LABEL = 65_535
"""Largest id a 16-bit label PNG can hold."""

Ring = list[tuple[int, int]]


def _split_at_repeats(points: Ring) -> list[Ring]:
    """Splits a closed ring that passes a vertex more than once into simple loops."""
    stack: Ring = []
    seen: dict[tuple[int, int], int] = {}
    loops = []
    for point in points:
        if point in seen:
            start = seen[point]
            for later in stack[start + 1 :]:
                del seen[later]
            loops.append(stack[start:])
            del stack[start + 1 :]
        else:
            seen[point] = len(stack)
            stack.append(point)
    loops.append(stack)
    return loops


def _twice_area(ring: Ring) -> int:
    """Twice the signed (shoelace) area of a ring given without its closing point."""
    previous = ring[-1]
    total = 0
    for point in ring:
        total += previous[0] * point[1] - point[0] * previous[1]
        previous = point
    return total


def nucleus_rings(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[list[int]]]:
    """The outlines of a binary mask's 8-connected parts, along the pixel edges.

    Args:
        mask: ``(h, w)`` array; nonzero pixels belong to the nucleus.
        offset: ``(x, y)`` added to every vertex (the mask's top-left corner in the image).

    Returns:
        One closed ring (first vertex repeated at the end) of integer ``[x, y]`` pixel-corner
        coordinates per part, counter-clockwise (positive shoelace area), without holes.
    """
    mask = np.asarray(mask)
    height, width = mask.shape
    big = np.zeros((2 * height + 4, 2 * width + 4), np.uint8)  # ×2, one pixel of padding
    big[2:-2, 2:-2] = (mask != 0).repeat(2, axis=0).repeat(2, axis=1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shift = np.array(offset) - 1
    rings = []
    for contour in contours:
        corners = (contour[:, 0, :] + 1) // 2 + shift
        changed = np.ones(len(corners), bool)
        changed[1:] = np.any(corners[1:] != corners[:-1], axis=1)
        changed[0] = len(corners) == 1 or bool(np.any(corners[0] != corners[-1]))
        points = list(map(tuple, corners[changed].tolist()))
        loops = _split_at_repeats(points) if len(set(points)) < len(points) else [points]
        areas = [_twice_area(loop) for loop in loops]
        sign = 1 if sum(areas) > 0 else -1
        for loop, area in zip(loops, areas, strict=True):
            if area * sign > 0:  # a loop turning the other way would be a pinched-off hole
                loop = [list(point) for point in (loop if sign > 0 else loop[::-1])]
                rings.append([*loop, loop[0]])
    return rings


def _geometry(rings: list[list[list[int]]]) -> dict[str, Any]:
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": [rings[0]]}
    return {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]}


def _measurements(table: NucleusTable | None, ids: np.ndarray) -> list[dict[str, float]]:
    if table is None:
        return [{"id": int(nucleus)} for nucleus in ids.tolist()]
    if len(table) != len(ids) or not np.array_equal(table["id"], ids):
        raise InvalidImageError(
            f"the table lists {len(table)} nuclei that do not match the {len(ids)} of the label "
            "image; measure this label image with nuclei_table"
        )
    rows = table.rows()
    if all(np.isfinite(values).all() for values in table.data.values()):
        return rows
    return [{name: value for name, value in row.items() if math.isfinite(value)} for row in rows]


def _nucleus_boxes(labels: np.ndarray):
    """Each nucleus's bounding box, with sparse ids renumbered first.

    Ids beyond the pixel count are renumbered ``1..N`` so that the list of boxes stays short.

    Returns:
        ``(labels, index, ids, boxes)``: the (maybe renumbered) label image; each nucleus's
        value in it; its id in the given image; and the boxes of
        :func:`scipy.ndimage.find_objects` (nucleus ``index[i]`` has ``boxes[index[i] - 1]``).
    """
    names = None
    if labels.max() > labels.size:
        names, inverse = np.unique(labels, return_inverse=True)
        labels = inverse.reshape(labels.shape) + (names[0] != 0)
        names = names if names[0] == 0 else np.r_[0, names]
    boxes = ndimage.find_objects(labels)
    index = np.array([i + 1 for i, box in enumerate(boxes) if box is not None], dtype=np.int64)
    ids = index if names is None else names[index].astype(np.int64)
    return labels, index, ids, boxes


def instances_geojson(labels, table: NucleusTable | None = None) -> dict[str, Any]:
    """The nuclei as a GeoJSON FeatureCollection of QuPath detections (see the module doc).

    Args:
        labels: ``(H, W)`` integer label image, 0 background.
        table: the nuclei's measurements (:func:`~segcore.analysis.nuclei.nuclei_table` of
            the same labels), written as each feature's ``measurements``; without it, only
            the ``id``.

    Returns:
        The FeatureCollection as a dict, features in increasing id order, one per id present
        (a one-pixel nucleus included).

    Raises:
        InvalidImageError: bad ``labels``, or a ``table`` whose ids differ from the labels'.
    """
    labels, index, ids, boxes = _nucleus_boxes(check_labels(labels))
    properties = _measurements(table, ids)
    classification = {"name": NUCLEUS_CLASS, "color": list(PALETTE["prediction"].rgb)}
    features = []
    for value, nucleus, measurements in zip(index.tolist(), ids.tolist(), properties, strict=True):
        rows, cols = boxes[value - 1]
        rings = nucleus_rings(labels[rows, cols] == value, (cols.start, rows.start))
        features.append(
            {
                "type": "Feature",
                "id": str(nucleus),
                "geometry": _geometry(rings),
                "properties": {
                    "objectType": "detection",
                    "classification": classification,
                    "measurements": measurements,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def geojson_bytes(labels, table: NucleusTable | None = None) -> bytes:
    """:func:`instances_geojson` as compact UTF-8 JSON (a ``.geojson`` file's bytes)."""
    collection = instances_geojson(labels, table)
    text = json.dumps(collection, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def label_png_bytes(labels) -> bytes:
    """The label image as a single-channel 16-bit PNG (0 background, pixel value = id).

    Reading it back with ``cv2.imread(..., cv2.IMREAD_UNCHANGED)`` (or Pillow, ImageJ/Fiji)
    gives the same ids.

    Raises:
        InvalidImageError: bad ``labels``, or an id above :data:`MAX_PNG_LABEL` (the message
            gives it; export GeoJSON instead).
    """
    labels = check_labels(labels)
    largest = int(labels.max())
    if largest > MAX_PNG_LABEL:
        raise InvalidImageError(
            f"the label image has ids up to {largest:,} (nuclei), more than the {MAX_PNG_LABEL:,} "
            "a 16-bit PNG can hold; download the GeoJSON outlines instead"
        )
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint16))
    if not ok:
        raise InvalidImageError(f"could not encode a label image of shape {labels.shape} as PNG")
    return buffer.tobytes()


def nuclei_csv_bytes(table: NucleusTable) -> bytes:
    """The measurements as CSV: :meth:`NucleusTable.to_csv`, for symmetry with the others."""
    return table.to_csv()
