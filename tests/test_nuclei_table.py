"""Per-nucleus measurements of segcore.analysis.nuclei, against hand-built shapes and against
scikit-image's regionprops_table as an independent reference."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.color import rgb2hed
from skimage.draw import disk
from skimage.measure import regionprops_table

from segcore.analysis.nuclei import NucleusTable, check_labels, nuclei_table
from segcore.errors import ConfigError, InvalidImageError

COLUMNS_UM = (
    "id",
    "centroid_x",
    "centroid_y",
    "area_um2",
    "perimeter_um",
    "equivalent_diameter_um",
    "circularity",
    "eccentricity",
    "solidity",
    "mean_hematoxylin_od",
)


def gray(shape: tuple[int, int], value: int = 128) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def shapes() -> np.ndarray:
    """A disc (id 1, radius 10 at row 20, col 30), a 6×6 square (2) and one pixel (3)."""
    labels = np.zeros((48, 64), np.int32)
    rows, cols = disk((20, 30), 10)
    labels[rows, cols] = 1
    labels[36:42, 4:10] = 2
    labels[5, 60] = 3
    return labels


def random_labels(seed: int, shape=(64, 80), seeds: int = 25) -> np.ndarray:
    """Irregular, touching nuclei: a blobby mask cut into Voronoi cells, ids 1..N.

    Some cells come out in several pieces, and some nuclei have holes.
    """
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    points = rng.integers(0, shape, size=(seeds, 2))
    rows, cols = np.indices(shape)
    nearest = np.argmin(
        (rows[..., None] - points[:, 0]) ** 2 + (cols[..., None] - points[:, 1]) ** 2, axis=-1
    )
    labels = np.where(mask, nearest + 1, 0)
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(shape).astype(np.int32)


def test_hand_built_shapes_in_pixels():
    labels = shapes()
    table = nuclei_table(labels, gray(labels.shape))
    assert len(table) == 3 and table.pixel_size_um is None
    assert table.columns == tuple(c.replace("um", "px") for c in COLUMNS_UM)
    assert table.units["area_px2"] == "px²" and table.units["perimeter_px"] == "px"
    assert table.units["circularity"] == "" and table.units["centroid_x"] == "px"
    disc, square, dot = table.rows()
    assert disc["id"] == 1 and isinstance(disc["id"], int)
    assert disc["area_px2"] == (labels == 1).sum()
    # Pixel-corner coordinates: the centre of pixel (row 20, col 30) is (30.5, 20.5).
    assert (disc["centroid_x"], disc["centroid_y"]) == (30.5, 20.5)
    assert disc["perimeter_px"] == pytest.approx(2 * math.pi * 10, rel=0.02)
    assert disc["equivalent_diameter_px"] == pytest.approx(20, rel=0.03)
    assert disc["circularity"] > 0.98 and disc["eccentricity"] < 0.05
    assert 0.95 < disc["solidity"] < 1
    assert square["area_px2"] == 36 and (square["centroid_x"], square["centroid_y"]) == (7, 39)
    assert square["eccentricity"] == pytest.approx(0, abs=1e-9) and square["solidity"] == 1
    assert square["circularity"] < disc["circularity"]
    big = np.zeros((40, 40), np.int32)
    big[5:35, 5:35] = 1
    big_square = nuclei_table(big, gray(big.shape))
    assert 0.85 < big_square["circularity"][0] < 0.9  # an ideal square: π/4 ≈ 0.785
    assert dot["area_px2"] == 1 and (dot["centroid_x"], dot["centroid_y"]) == (60.5, 5.5)
    assert dot["circularity"] == 1 and dot["eccentricity"] == 0 and dot["solidity"] == 1
    assert dot["equivalent_diameter_px"] == pytest.approx(math.sqrt(4 / math.pi))


def test_pixel_size_scales_lengths_and_areas():
    labels = shapes()
    in_px = nuclei_table(labels, gray(labels.shape))
    in_um = nuclei_table(labels, gray(labels.shape), pixel_size=0.5)
    assert in_um.columns == COLUMNS_UM and in_um.pixel_size_um == 0.5
    assert in_um.units["area_um2"] == "µm²" and in_um.units["equivalent_diameter_um"] == "µm"
    assert np.allclose(in_um["area_um2"], in_px["area_px2"] * 0.25)
    assert np.allclose(in_um["perimeter_um"], in_px["perimeter_px"] * 0.5)
    assert np.allclose(in_um["equivalent_diameter_um"], in_px["equivalent_diameter_px"] * 0.5)
    for same in ("centroid_x", "centroid_y", "circularity", "eccentricity", "solidity"):
        assert np.array_equal(in_um[same], in_px[same]), same


def test_columns_match_regionprops_table():
    labels = random_labels(0)
    image = np.random.default_rng(1).integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    table = nuclei_table(labels, image, pixel_size=0.25)
    ref = regionprops_table(
        labels,
        intensity_image=rgb2hed(image)[..., 0],
        properties=(
            "label",
            "centroid",
            "area",
            "perimeter_crofton",
            "equivalent_diameter_area",
            "eccentricity",
            "intensity_mean",
        ),
    )
    assert len(table) == labels.max() > 20
    assert np.array_equal(table["id"], ref["label"])
    assert np.allclose(table["centroid_x"], ref["centroid-1"] + 0.5)
    assert np.allclose(table["centroid_y"], ref["centroid-0"] + 0.5)
    assert np.allclose(table["area_um2"], ref["area"] * 0.0625)
    assert np.allclose(table["perimeter_um"], ref["perimeter_crofton"] * 0.25)
    assert np.allclose(table["equivalent_diameter_um"], ref["equivalent_diameter_area"] * 0.25)
    assert np.allclose(table["eccentricity"], ref["eccentricity"])
    assert np.allclose(table["mean_hematoxylin_od"], ref["intensity_mean"])
    circularity = 4 * np.pi * ref["area"] / ref["perimeter_crofton"] ** 2
    assert np.allclose(table["circularity"], np.minimum(circularity, 1))


def test_solidity_is_area_over_the_hull_of_the_pixel_squares():
    labels = random_labels(2)
    table = nuclei_table(labels, gray(labels.shape))
    corners = np.array([(0, 0), (0, 1), (1, 0), (1, 1)])
    for nucleus, solidity in zip(table["id"], table["solidity"], strict=True):
        pixels = np.argwhere(labels == nucleus)
        points = (pixels[:, None, :] + corners).reshape(-1, 2)
        expected = len(pixels) / ConvexHull(points).volume  # a 2-D hull's volume is its area
        assert solidity == pytest.approx(expected), nucleus


def test_mean_hematoxylin_od():
    labels = np.zeros((10, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 12:18] = 2
    image = gray(labels.shape, 230)
    image[labels == 1] = (60, 40, 140)  # dark purple: hematoxylin-rich
    image[labels == 2] = (220, 180, 210)  # pale pink
    table = nuclei_table(labels, image)
    expected = rgb2hed(np.array([[[60, 40, 140], [220, 180, 210]]], np.uint8))[0, :, 0]
    assert np.allclose(table["mean_hematoxylin_od"], expected)
    assert table["mean_hematoxylin_od"][0] > 2 * table["mean_hematoxylin_od"][1]


def test_empty_labels_give_an_empty_table():
    table = nuclei_table(np.zeros((16, 16), np.uint16), gray((16, 16)), pixel_size=0.25)
    assert len(table) == 0 and table.columns == COLUMNS_UM
    assert all(len(table[name]) == 0 for name in table.columns)
    assert table.rows() == [] and table.page(0, 10) == [] and table.page_count(10) == 0
    assert table.to_csv() == (",".join(COLUMNS_UM) + "\r\n").encode()
    summary = table.summary((16, 16))
    assert summary["count"] == 0 and summary["density_per_mm2"] == 0
    assert summary["median_area"] is None and summary["area_fraction"] == 0


def test_csv_round_trips():
    labels = random_labels(3)
    table = nuclei_table(labels, gray(labels.shape), pixel_size=0.5)
    text = table.to_csv().decode("utf-8")
    assert text.endswith("\r\n") and text.count("\r\n") == len(table) + 1
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == table.columns and len(rows) == len(table)
    for name in table.columns:
        values = [(int if name == "id" else float)(row[name]) for row in rows]
        assert np.array_equal(values, table[name]), name  # exact: floats written with repr


def test_pages():
    labels = random_labels(4)
    table = nuclei_table(labels, gray(labels.shape))
    size = 7
    pages = [table.page(i, size) for i in range(table.page_count(size))]
    assert [row["id"] for page in pages for row in page] == table["id"].tolist()
    assert all(len(page) == size for page in pages[:-1]) and 1 <= len(pages[-1]) <= size
    assert table.page(len(pages), size) == []
    assert pages[0][0] == table.rows(0, 1)[0]
    assert set(pages[0][0]) == set(table.columns)
    for bad in ((-1, 5), (0, 0)):
        with pytest.raises(ValueError, match="page"):
            table.page(*bad)


def test_summary():
    labels = shapes()
    table = nuclei_table(labels, gray(labels.shape), pixel_size=0.5)
    summary = table.summary(labels.shape)
    image_mm2 = 48 * 64 * 0.25 * 1e-6
    assert summary["count"] == 3 and summary["pixel_size_um"] == 0.5
    assert (summary["area_unit"], summary["length_unit"]) == ("µm²", "µm")
    assert summary["image_area_mm2"] == pytest.approx(image_mm2)
    assert summary["density_per_mm2"] == pytest.approx(3 / image_mm2)
    assert summary["area_fraction"] == pytest.approx((labels > 0).sum() / labels.size)
    assert summary["median_area"] == 36 * 0.25
    assert summary["mean_area"] == pytest.approx(table["area_um2"].mean())
    assert summary["median_circularity"] == float(np.median(table["circularity"]))
    in_px = nuclei_table(labels, gray(labels.shape)).summary((*labels.shape, 3))
    assert in_px["image_area_mm2"] is None and in_px["density_per_mm2"] is None
    assert in_px["median_area"] == 36 and in_px["area_unit"] == "px²"
    assert in_px["area_fraction"] == pytest.approx(summary["area_fraction"])


def test_ids_with_gaps_and_sparse_ids():
    labels = np.zeros((8, 8), np.int64)
    labels[0, 0] = 7
    labels[4:6, 4:6] = 3
    table = nuclei_table(labels, gray(labels.shape))
    assert table["id"].tolist() == [3, 7] and table["area_px2"].tolist() == [4, 1]
    labels[0, 0] = 10**12  # far beyond the pixel count: renumbered inside, reported as given
    sparse = nuclei_table(labels, gray(labels.shape))
    assert sparse["id"].tolist() == [3, 10**12]
    for name in table.columns[1:]:
        assert np.array_equal(sparse[name], table[name]), name


def test_columns_are_read_only():
    table = nuclei_table(shapes(), gray(shapes().shape))
    assert isinstance(table, NucleusTable)
    with pytest.raises(ValueError, match="read-only"):
        table["area_px2"][0] = 0
    with pytest.raises(TypeError):
        table.data["id"] = np.zeros(3)


def test_bad_inputs():
    labels = shapes()
    with pytest.raises(InvalidImageError, match="same size"):
        nuclei_table(labels, gray((10, 10)))
    with pytest.raises(InvalidImageError, match="integer"):
        nuclei_table(labels.astype(np.float32), gray(labels.shape))
    with pytest.raises(InvalidImageError, match="integer"):
        check_labels(labels > 0)
    with pytest.raises(InvalidImageError, match=">= 0"):
        check_labels(-labels)
    with pytest.raises(InvalidImageError, match="shape"):
        check_labels(np.zeros((2, 2, 2), np.int32))
    for bad in (0, -1, float("nan"), "0.25"):
        with pytest.raises(ConfigError):
            nuclei_table(labels, gray(labels.shape), pixel_size=bad)
