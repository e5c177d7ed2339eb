"""QuPath GeoJSON annotations as ground truth: outlines rasterised into an instance label image.

A dataset's ``masks/<stem>.geojson`` (:mod:`~segcore.data.layouts`) and an uploaded ``.geojson``
or ``.json`` mask (:func:`segcore.analysis.uploads.read_upload`) are read here, against the size
of the image they belong to.

What is read:

* a ``FeatureCollection``, a JSON list of ``Feature`` objects (what QuPath's *File → Export
  objects as GeoJSON* writes), a single ``Feature``, or a bare geometry;
* ``Polygon`` and ``MultiPolygon`` geometries, whatever the ``objectType`` (annotation,
  detection, tile...). A QuPath *cell* object that carries a ``nucleusGeometry`` property gives
  that nucleus outline rather than the cell's; a feature whose ``geometry`` is ``null`` is
  skipped with a warning;
* the optional ``properties.classification`` (``{"name": "Tumor", ...}`` or a bare string),
  by which features can be filtered (``classes=``; by default every feature is kept).

Coordinates are QuPath's: pixels of the full image, x to the right, y down, ``(0, 0)`` the
top-left *corner* of the top-left pixel, so the polygon ``(0, 0) (3, 0) (3, 3) (0, 3)`` is
exactly the 3×3 pixels in the corner (the form :func:`segcore.analysis.exports.instances_geojson`
writes). Vertices up to :data:`EDGE_TOLERANCE` pixels outside the image are accepted (the
outline is cut at the image's edge: only pixel centres inside the image can be set); a vertex
further out means the file belongs to another image (or another size of it) and is refused.

Rasterising: every feature is one object with its own label (a ``MultiPolygon`` is one object);
labels are ``1..N`` in the file's order of the objects that keep at least one pixel. A pixel
belongs to an object when its centre lies inside one of the object's polygons and outside that
polygon's holes, decided exactly by a scan line fill in NumPy (:func:`cv2.fillPoly` is not used:
it also sets every pixel its outline touches, which grows a nucleus by up to half a pixel all
round). Outlines along pixel edges — what QuPath and :mod:`segcore.analysis.exports` write for
pixel objects — give back exactly those pixels.

Overlaps: a pixel claimed by several objects goes to the **smallest** of them (fewest pixels of
its own; on a tie, the one earlier in the file), so nuclei drawn inside a larger annotation region
keep their pixels and the region keeps the rest. How many pixels and objects overlapped is
reported in :attr:`AnnotationLabels.warnings`, and so is every object left with no pixel.

Every problem — not JSON, not GeoJSON, no objects, points or lines instead of outlines,
malformed coordinates, objects beyond the image, a file over :data:`MAX_GEOJSON_BYTES` or with
over :data:`MAX_VERTICES` vertices — raises one :class:`~segcore.errors.InvalidImageError` whose
message starts with the file's name.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import InvalidImageError

__all__ = [
    "ANNOTATION_SUFFIX",
    "EDGE_TOLERANCE",
    "MAX_GEOJSON_BYTES",
    "MAX_VERTICES",
    "UPLOAD_SUFFIXES",
    "AnnotationLabels",
    "annotation_labels",
    "is_annotation_file",
    "rasterise_annotations",
]

log = logging.getLogger(__name__)

ANNOTATION_SUFFIX = ".geojson"
"""The suffix of a GeoJSON mask in a dataset's ``masks/`` folder."""

UPLOAD_SUFFIXES = (".geojson", ".json")
"""Suffixes of an uploaded ground truth read as GeoJSON (QuPath writes either)."""

MAX_GEOJSON_BYTES = 200_000_000
"""Largest GeoJSON file read, in bytes (200 MB: several hundred thousand nucleus outlines)."""

MAX_VERTICES = 10_000_000
"""Most vertices read from one file, all rings together."""

EDGE_TOLERANCE = 1.0
"""How far outside the image, in pixels, a vertex may lie (an outline drawn up to the edge)."""

_GEOMETRIES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)

Source = str | os.PathLike | bytes
Polygon = list[np.ndarray]  # exterior ring, then holes; each (n, 2) float64 x, y


@dataclass(frozen=True)
class AnnotationLabels:
    """GeoJSON outlines rasterised at an image's size.

    Attributes:
        labels: ``int32`` ``(H, W)``: 0 background, ``1..N`` one object each, in file order.
        classes: the classification name of label ``k`` at ``classes[k - 1]`` (``None`` when the
            feature has none).
        warnings: sentences about what was resolved or left out (overlaps, objects without
            pixels, features without geometry, cells read as their nuclei), each starting with
            the file's name; empty when there is nothing to say.
        overlap_pixels: pixels claimed by more than one object.
        overlap_objects: objects that share at least one pixel with another.
    """

    labels: np.ndarray
    classes: tuple[str | None, ...]
    warnings: tuple[str, ...]
    overlap_pixels: int = 0
    overlap_objects: int = 0


@dataclass
class _Object:
    name: str | None  # classification
    polygons: list[Polygon]


def is_annotation_file(
    name: str | os.PathLike, suffixes: tuple[str, ...] = UPLOAD_SUFFIXES
) -> bool:
    """Whether a file name ends in one of ``suffixes`` (case-insensitive), by default
    :data:`UPLOAD_SUFFIXES`."""
    return str(name).lower().endswith(tuple(s.lower() for s in suffixes))


def _describe(source: Source, name: str | None) -> str:
    if name:
        return name
    return "<uploaded GeoJSON>" if isinstance(source, bytes) else str(source)


def _read_bytes(source: Source, label: str) -> bytes:
    limit = f"the {MAX_GEOJSON_BYTES / 1e6:.0f} MB limit for a GeoJSON file"
    too_large = "; split it into smaller files or simplify the outlines"
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{label}: file not found")
        try:
            size = path.stat().st_size
            if size > MAX_GEOJSON_BYTES:
                raise InvalidImageError(f"{label}: {size / 1e6:.0f} MB is over {limit}{too_large}")
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidImageError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > MAX_GEOJSON_BYTES:
        raise InvalidImageError(f"{label}: {len(data) / 1e6:.0f} MB is over {limit}{too_large}")
    if not data.strip():
        raise InvalidImageError(f"{label}: the file is empty: no objects to use as ground truth")
    return data


def _parse(data: bytes, label: str) -> Any:
    not_geojson = f"{label}: not a GeoJSON file"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidImageError(
            f"{not_geojson} (not UTF-8 text; is it an image? a mask image needs its image "
            "suffix, e.g. .png)"
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidImageError(
            f"{not_geojson} (invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise InvalidImageError(f"{not_geojson} (JSON nested too deeply)") from exc


def _features(document: Any, label: str) -> list[dict]:
    """The document's features, each a dict with ``geometry`` and ``properties``."""
    expected = (
        "expected a FeatureCollection, a list of Features (as QuPath exports), a Feature or a "
        "Polygon/MultiPolygon geometry"
    )
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        kind = document.get("type")
        if kind == "FeatureCollection":
            items = document.get("features")
            if not isinstance(items, list):
                raise InvalidImageError(
                    f"{label}: not GeoJSON (a FeatureCollection whose features are not a list)"
                )
        elif kind == "Feature" or kind in _GEOMETRIES:
            items = [document]
        else:
            found = f'type "{kind}"' if isinstance(kind, str) else 'no "type"'
            raise InvalidImageError(
                f"{label}: not GeoJSON ({expected}; found a JSON object with {found})"
            )
    else:
        kinds = {bool: "true or false", int: "number", float: "number", str: "string"}
        found = kinds.get(type(document), "null")
        raise InvalidImageError(f"{label}: not GeoJSON ({expected}; found a JSON {found})")
    features = []
    for number, item in enumerate(items, 1):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in _GEOMETRIES:
            item = {"type": "Feature", "geometry": item, "properties": {}}
        elif kind != "Feature":
            raise InvalidImageError(
                f"{label}: not GeoJSON (item {number} of {len(items)} is not a Feature; {expected})"
            )
        features.append(item)
    if not features:
        raise InvalidImageError(
            f"{label}: no objects: the GeoJSON holds no features (export the objects from QuPath "
            "with File → Export objects as GeoJSON)"
        )
    return features


def _class_name(properties: dict) -> str | None:
    classification = properties.get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        return name if isinstance(name, str) else None
    return classification if isinstance(classification, str) else None


def _ring(ring: Any) -> np.ndarray:
    """One ring as a ``(n, 2)`` float64 array; raises ``ValueError`` saying what is wrong."""
    if not isinstance(ring, list) or not all(isinstance(p, list) for p in ring):
        raise ValueError("a ring is not a list of [x, y] positions")
    if len(ring) < 3:
        raise ValueError(f"a ring has {len(ring)} positions, fewer than 3")
    if any(len(p) < 2 or isinstance(p[0], bool) or isinstance(p[1], bool) for p in ring):
        raise ValueError("a position is not [x, y]")
    try:
        points = np.array([p[:2] for p in ring], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("a position holds something other than numbers") from None
    if not np.isfinite(points).all():
        raise ValueError("a coordinate is not a finite number")
    return points


def _polygons(geometry: dict) -> list[Polygon]:
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    parts = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(parts, list) or not parts:
        raise ValueError("no coordinates")
    polygons = []
    for part in parts:
        if not isinstance(part, list) or not part:
            raise ValueError("a polygon is not a list of rings")
        polygons.append([_ring(ring) for ring in part])
    return polygons


def _objects(
    features: list[dict], classes: Collection[str] | None, label: str
) -> tuple[list[_Object], list[str]]:
    """The objects to rasterise (kept by ``classes``) and the warnings of reading them."""
    wanted = None if classes is None else set(classes)
    objects, wrong_kind, seen_classes = [], [], set()
    null_geometry = cells = vertices = 0
    for number, feature in enumerate(features, 1):
        properties = feature.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        name = _class_name(properties)
        seen_classes.add(name)
        if wanted is not None and name not in wanted:
            continue
        geometry = feature.get("geometry")
        nucleus = properties.get("nucleusGeometry")
        if properties.get("objectType") == "cell" and isinstance(nucleus, dict):
            geometry, cells = nucleus, cells + 1
        if geometry is None:
            null_geometry += 1
            continue
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        if kind not in ("Polygon", "MultiPolygon"):
            wrong_kind.append((number, kind))
            continue
        try:
            polygons = _polygons(geometry)
        except ValueError as exc:
            raise InvalidImageError(
                f"{label}: feature {number} has malformed {kind} coordinates ({exc}); expected "
                "rings of [x, y] positions"
            ) from None
        vertices += sum(len(ring) for polygon in polygons for ring in polygon)
        if vertices > MAX_VERTICES:
            raise InvalidImageError(
                f"{label}: more than {MAX_VERTICES:,} vertices; simplify the outlines or split "
                "the file"
            )
        objects.append(_Object(name, polygons))
    if wrong_kind:
        number, kind = wrong_kind[0]
        what = f"a {kind} geometry" if isinstance(kind, str) else "no valid geometry type"
        raise InvalidImageError(
            f"{label}: {len(wrong_kind)} feature(s) are not Polygon or MultiPolygon outlines "
            f"(feature {number} has {what}); ground truth needs the nuclei's outlines: points "
            "and lines have no area"
        )
    notes = []
    if null_geometry:
        notes.append(f"{label}: {null_geometry} feature(s) without geometry were skipped")
    if cells:
        notes.append(f"{label}: {cells} cell object(s): their nucleus outlines were used")
    if not objects:
        if wanted is not None:
            found = ", ".join(sorted(n if n is not None else "unclassified" for n in seen_classes))
            raise InvalidImageError(
                f"{label}: no objects of class {', '.join(sorted(wanted))} (the file's classes: "
                f"{found})"
            )
        raise InvalidImageError(
            f"{label}: no objects: none of its {len(features)} feature(s) has a geometry"
        )
    return objects, notes


def _check_extent(objects: list[_Object], height: int, width: int, label: str) -> None:
    """Refuses vertices more than :data:`EDGE_TOLERANCE` pixels outside the image."""
    worst = None  # (overshoot, axis, value)
    for obj in objects:
        for polygon in obj.polygons:
            for ring in polygon:
                for axis, size, values in (("x", width, ring[:, 0]), ("y", height, ring[:, 1])):
                    low, high = float(values.min()), float(values.max())
                    for overshoot, value in ((-low, low), (high - size, high)):
                        if overshoot > EDGE_TOLERANCE and (worst is None or overshoot > worst[0]):
                            worst = (overshoot, axis, value)
    if worst is not None:
        _, axis, value = worst
        raise InvalidImageError(
            f"{label}: objects reach {axis}={value:g} but the image is {width}×{height}; is this "
            "the GeoJSON of another image? (QuPath's coordinates are pixels of the full image: "
            "export from the image itself, not from a crop or a resized copy)"
        )


def _spans(rings: list[np.ndarray], top: int, left: int, height: int, width: int) -> np.ndarray:
    """The pixels of a box whose centres lie inside ``rings`` by the even-odd rule.

    An exact scan line fill: on each row of the box, the crossings of the rings' edges with the
    line through the pixel centres are sorted and paired, and the pixels whose centres fall
    between a pair are set. An edge counts on the rows whose centre ``y`` satisfies
    ``min(y0, y1) <= y < max(y0, y1)``, so a vertex on a centre line counts once.

    Returns:
        ``bool`` ``(height, width)``: the box whose top-left pixel is ``(top, left)``.
    """
    closed = [r if np.array_equal(r[0], r[-1]) else np.vstack([r, r[:1]]) for r in rings]
    start = np.concatenate([r[:-1] for r in closed])
    end = np.concatenate([r[1:] for r in closed])
    sloped = start[:, 1] != end[:, 1]
    start, end = start[sloped], end[sloped]
    low = np.minimum(start[:, 1], end[:, 1]) - top - 0.5
    high = np.maximum(start[:, 1], end[:, 1]) - top - 0.5
    first = np.clip(np.ceil(low), 0, height).astype(np.int64)
    last = np.clip(np.ceil(high), 0, height).astype(np.int64)  # rows first..last - 1
    counts = last - first
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = first[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts)
    (x0, y0), (x1, y1) = start[edge].T, end[edge].T
    xs = x0 + (rows + top + 0.5 - y0) * (x1 - x0) / (y1 - y0)
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    columns = np.clip(np.ceil(xs - left - 0.5), 0, width).astype(np.int64)
    row = rows[0::2] * (width + 1)
    size = height * (width + 1)
    change = np.bincount(row + columns[0::2], minlength=size) - np.bincount(
        row + columns[1::2], minlength=size
    )
    return np.cumsum(change.reshape(height, width + 1)[:, :width], axis=1) > 0


def _fill(polygons: list[Polygon], height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """One object's pixels: ``(top, left, mask)`` of its bounding box, or ``None`` if none.

    Each polygon's holes are cleared from that polygon only; a MultiPolygon's parts are then
    joined, so a part lying in another part's hole is kept.
    """
    exteriors = np.concatenate([polygon[0] for polygon in polygons])
    left, top = (max(math.floor(v), 0) for v in exteriors.min(axis=0))
    right, bottom = (math.ceil(v) for v in exteriors.max(axis=0))
    right, bottom = min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        return None
    box = (top, left, bottom - top, right - left)
    mask = _spans(polygons[0], *box)
    for polygon in polygons[1:]:
        mask |= _spans(polygon, *box)
    return (top, left, mask) if mask.any() else None


def rasterise_annotations(
    source: Source,
    shape: tuple[int, int],
    *,
    name: str | None = None,
    classes: Collection[str] | None = None,
) -> AnnotationLabels:
    """Reads a QuPath GeoJSON file (or its bytes) as instance labels at an image's size.

    Args:
        source: a path, or the file's bytes (e.g. an upload).
        shape: the image's ``(height, width)`` (an ``(H, W, ...)`` shape is accepted too).
        name: how to call the source in messages; defaults to the path.
        classes: keep only features whose classification name is one of these; ``None`` (the
            default) keeps every feature, classified or not.

    Returns:
        The labels, each label's class, and the warnings (see :class:`AnnotationLabels`).
        Nothing is logged: :func:`annotation_labels` logs the warnings.

    Raises:
        InvalidImageError: the file is missing, empty, over :data:`MAX_GEOJSON_BYTES`, not JSON
            or not GeoJSON, holds no Polygon/MultiPolygon objects (of ``classes``), holds points
            or lines, has malformed coordinates or over :data:`MAX_VERTICES` vertices, reaches
            beyond the image by more than :data:`EDGE_TOLERANCE`, or none of its objects covers
            a pixel centre. The message starts with the file's name.
    """
    label = _describe(source, name)
    height, width = (int(v) for v in tuple(shape)[:2])
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"{label}: cannot rasterise onto an image of {width}×{height}")
    features = _features(_parse(_read_bytes(source, label), label), label)
    objects, notes = _objects(features, classes, label)
    _check_extent(objects, height, width, label)

    filled = [(obj, _fill(obj.polygons, height, width)) for obj in objects]
    drawn = [(obj, box) for obj, box in filled if box is not None]
    if len(drawn) < len(filled):
        empty = len(filled) - len(drawn)
        notes.append(
            f"{label}: {empty} object(s) cover no pixel centre (smaller than a pixel, or only on "
            "the image's edge) and were left out"
        )
    if not drawn:
        raise InvalidImageError(
            f"{label}: no objects inside the image: none of its {len(objects)} outline(s) "
            "covers a pixel centre"
        )

    # Largest first, so that smaller objects overwrite them; on a tie the earlier one last.
    areas = [int(mask.sum()) for _, (_, _, mask) in drawn]
    order = sorted(range(len(drawn)), key=lambda k: (-areas[k], -k))
    labels = np.zeros((height, width), np.int32)
    claims = np.zeros((height, width), np.uint8)  # objects claiming a pixel: 0, 1, 2 or more
    for k in order:
        top, left, mask = drawn[k][1]
        window = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
        labels[window][mask] = k + 1
        counts = claims[window]
        counts[mask & (counts < 2)] += 1
    shared = claims > 1
    overlap_pixels = int(np.count_nonzero(shared))
    overlap_objects = 0
    if overlap_pixels:
        for _, (top, left, mask) in drawn:
            window = shared[top : top + mask.shape[0], left : left + mask.shape[1]]
            overlap_objects += bool(window[mask].any())
        notes.append(
            f"{label}: {overlap_objects} objects overlap on {overlap_pixels:,} pixel(s); each "
            "such pixel went to the smallest object covering it"
        )

    present = np.bincount(labels.ravel(), minlength=len(drawn) + 1) > 0
    present[0] = False
    if not present[1:].all():
        notes.append(
            f"{label}: {int((~present[1:]).sum())} object(s) lie wholly under smaller ones and "
            "were left out"
        )
    lookup = np.cumsum(present).astype(np.int32)
    lookup[~present] = 0
    labels = lookup[labels]
    kept = tuple(drawn[k][0].name for k in np.flatnonzero(present[1:]))
    return AnnotationLabels(labels, kept, tuple(notes), overlap_pixels, overlap_objects)


def annotation_labels(
    source: Source,
    shape: tuple[int, int],
    *,
    name: str | None = None,
    classes: Collection[str] | None = None,
) -> np.ndarray:
    """:func:`rasterise_annotations`' ``int32`` labels alone; its warnings are logged.

    Arguments and errors as for :func:`rasterise_annotations`.
    """
    result = rasterise_annotations(source, shape, name=name, classes=classes)
    for warning in result.warnings:
        log.warning("%s", warning)
    return result.labels
