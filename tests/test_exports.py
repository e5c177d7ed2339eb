"""GeoJSON outlines, label PNG and CSV downloads of segcore.analysis.exports.

Polygon validity and exact areas are checked with shapely (a test-only dependency; those
tests skip without it).
"""

from __future__ import annotations

import json
import time
from types import MappingProxyType

import cv2
import numpy as np
import pytest
from scipy import ndimage

from segcore.analysis.exports import (
    MAX_PNG_LABEL,
    NUCLEUS_CLASS,
    geojson_bytes,
    instances_geojson,
    label_png_bytes,
    nuclei_csv_bytes,
    nucleus_rings,
)
from segcore.analysis.nuclei import NucleusTable, nuclei_table
from segcore.errors import InvalidImageError
from tests.test_nuclei_table import gray, random_labels, shapes


@pytest.fixture(scope="module")
def shapely():
    return pytest.importorskip("shapely")


def pixel_union(shapely, mask: np.ndarray):
    """The union of a mask's pixel squares, holes filled (4-connected background)."""
    filled = ndimage.binary_fill_holes(mask)
    squares = [shapely.box(x, y, x + 1, y + 1) for y, x in zip(*np.nonzero(filled), strict=True)]
    return shapely.union_all(squares)


def tiny_grid(count: int = 20_000, step: int = 7) -> np.ndarray:
    """``count`` nuclei of 4×4 pixels on a 1000×1000 image, plus a one-pixel one at the end."""
    labels = np.zeros((1000, 1000), np.int32)
    cells = [(y, x) for y in range(0, 1000, step) for x in range(0, 1000, step)][:count]
    for i, (y, x) in enumerate(cells[:-1], start=1):
        labels[y : y + 4, x : x + 4] = i
    labels[cells[-1]] = count
    return labels


def test_feature_collection_for_qupath():
    labels = shapes()
    table = nuclei_table(labels, gray(labels.shape), pixel_size=0.25)
    collection = json.loads(geojson_bytes(labels, table))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert [f["id"] for f in features] == ["1", "2", "3"]
    for feature, row in zip(features, table.rows(), strict=True):
        assert feature["type"] == "Feature"
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["classification"]["name"] == NUCLEUS_CLASS
        assert len(properties["classification"]["color"]) == 3  # QuPath needs name and color
        assert properties["measurements"] == row  # an object name → number, as QuPath 0.4+
    # The one-pixel nucleus at row 5, col 60 is the unit square around it, closed, CCW.
    assert features[2]["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[61, 5], [61, 6], [60, 6], [60, 5], [61, 5]]],
    }
    square = features[1]["geometry"]["coordinates"][0]
    assert sorted(map(tuple, square[:-1])) == [(4, 36), (4, 42), (10, 36), (10, 42)]


def test_geojson_without_table_and_compact_bytes():
    labels = shapes()
    collection = instances_geojson(labels)
    assert [f["properties"]["measurements"] for f in collection["features"]] == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
    ]
    data = geojson_bytes(labels)
    assert b" " not in data and json.loads(data.decode("utf-8")) == collection


def test_polygons_are_valid_and_exact(shapely):
    for seed in range(3):
        labels = random_labels(seed)
        features = instances_geojson(labels)["features"]
        assert len(features) == labels.max()
        multi = 0
        for feature in features:
            nucleus = int(feature["id"])
            geometry = shapely.geometry.shape(feature["geometry"])
            assert geometry.is_valid, (seed, nucleus, shapely.is_valid_reason(geometry))
            expected = pixel_union(shapely, labels == nucleus)
            assert geometry.symmetric_difference(expected).area == 0, (seed, nucleus)
            polygons = getattr(geometry, "geoms", [geometry])
            multi += len(polygons) > 1
            for polygon in polygons:
                assert polygon.exterior.is_ccw and not polygon.interiors
                ring = polygon.exterior.coords
                assert ring[0] == ring[-1]
        assert multi or seed  # seed 0 has a nucleus in several parts (a MultiPolygon)


def test_areas_equal_pixel_counts_for_hole_free_nuclei(shapely):
    labels = shapes()
    for feature in instances_geojson(labels)["features"]:
        area = shapely.geometry.shape(feature["geometry"]).area
        assert area == (labels == int(feature["id"])).sum()


def test_rings_fill_holes_and_split_at_corner_contacts(shapely):
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    (outline,) = nucleus_rings(ring, offset=(10, 20))
    assert shapely.Polygon(outline).area == 25 and outline[0] == outline[-1] == [15, 20]
    diagonal = np.eye(3, dtype=bool)  # three pixels touching at corners: one 8-connected part
    parts = nucleus_rings(diagonal)
    assert len(parts) == 3
    geometry = shapely.MultiPolygon([shapely.Polygon(p) for p in parts])
    assert geometry.is_valid and geometry.area == 3
    pocket = np.ones((3, 3), bool)  # a background pixel open to the outside at one corner
    pocket[1, 1] = pocket[2, 2] = False
    (outline,) = nucleus_rings(pocket)
    assert shapely.Polygon(outline).is_valid and shapely.Polygon(outline).area == 8


def test_empty_labels():
    labels = np.zeros((8, 8), np.uint16)
    assert instances_geojson(labels) == {"type": "FeatureCollection", "features": []}
    table = nuclei_table(labels, gray(labels.shape))
    assert json.loads(geojson_bytes(labels, table))["features"] == []
    png = label_png_bytes(labels)
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), labels)


def test_table_must_match_the_labels():
    labels = shapes()
    other = labels.copy()
    other[other == 3] = 0
    table = nuclei_table(other, gray(labels.shape))
    with pytest.raises(InvalidImageError, match="do not match"):
        instances_geojson(labels, table)


def test_non_finite_measurements_are_left_out():
    labels = shapes()
    table = nuclei_table(labels, gray(labels.shape))
    data = dict(table.data)
    data["circularity"] = np.array([np.nan, 0.5, np.inf])
    edited = NucleusTable(MappingProxyType(data), None)
    features = json.loads(geojson_bytes(labels, edited))["features"]
    assert "circularity" not in features[0]["properties"]["measurements"]
    assert features[1]["properties"]["measurements"]["circularity"] == 0.5


def test_sparse_ids_keep_their_values():
    labels = np.zeros((6, 6), np.int64)
    labels[0, 0] = 10**9
    labels[3:5, 3:5] = 2
    features = instances_geojson(labels)["features"]
    assert [f["id"] for f in features] == ["2", str(10**9)]
    assert features[1]["geometry"]["coordinates"] == [[[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_label_png_round_trips(dtype):
    labels = np.zeros((20, 30), dtype)
    labels[2:5, 3:9] = 1
    labels[10:12, 20:29] = np.iinfo(dtype).max if dtype in (np.uint8, np.uint16) else 65_535
    png = label_png_bytes(labels)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and decoded.shape == labels.shape
    assert np.array_equal(decoded, labels)


def test_label_png_refuses_more_than_65535_nuclei():
    labels = np.zeros((300, 300), np.int32)
    labels.ravel()[: MAX_PNG_LABEL + 2] = np.arange(1, MAX_PNG_LABEL + 3)
    with pytest.raises(InvalidImageError, match="65,537"):
        label_png_bytes(labels)
    with pytest.raises(InvalidImageError):
        label_png_bytes(labels.astype(np.float32))


def test_csv_bytes():
    labels = shapes()
    table = nuclei_table(labels, gray(labels.shape), pixel_size=0.5)
    assert nuclei_csv_bytes(table) == table.to_csv()


def test_twenty_thousand_nuclei():
    labels = tiny_grid()
    image = np.random.default_rng(0).integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    start = time.process_time()  # this process's CPU time: other load on the machine aside
    table = nuclei_table(labels, image, pixel_size=0.25)
    data = geojson_bytes(labels, table)
    elapsed = time.process_time() - start
    features = json.loads(data)["features"]
    assert len(table) == len(features) == 20_000
    ((y, x),) = np.argwhere(labels == 20_000)  # the one-pixel nucleus: a unit square
    unit = [[x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y], [x + 1, y]]
    assert features[-1]["geometry"]["coordinates"] == [unit]
    assert elapsed < 5, f"table and GeoJSON of 20,000 nuclei took {elapsed:.1f} s of CPU"
