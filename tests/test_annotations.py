"""QuPath GeoJSON as ground truth: rasterising, overlaps, round trips, bad input, datasets and
uploads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import draw
from skimage.measure import points_in_poly
from streamlit.testing.v1 import AppTest  # imported with the module: conftest checks its pages

from segcore.analysis.exports import geojson_bytes
from segcore.analysis.uploads import read_upload
from segcore.data import annotations
from segcore.data.annotations import annotation_labels, rasterise_annotations
from segcore.data.datasets import load_samples, open_dataset
from segcore.data.images import encode_png
from segcore.data.layouts import pair_files
from segcore.errors import DatasetError, InvalidImageError
from segcore.metrics.labels import ground_truth_instances
from tests.conftest import write_png


def square(x0, y0, x1, y1):
    """A closed ring around the pixels x0..x1-1, y0..y1-1 (pixel-corner coordinates)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def polygon(*rings):
    return {"type": "Polygon", "coordinates": list(rings)}


def feature(geometry, name=None, object_type="annotation", **properties):
    properties = {"objectType": object_type, **properties}
    if name is not None:
        properties["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def collection(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def encode(document) -> bytes:
    return json.dumps(document).encode()


def rasterise(document, shape=(32, 32), **kwargs):
    return rasterise_annotations(encode(document), shape, name="cells.geojson", **kwargs)


def nuclei_labels(size: int = 64) -> np.ndarray:
    """Disks and ellipses of several sizes, two of them touching, one on the image's edge."""
    labels = np.zeros((size, size), np.int32)
    shapes = [
        draw.disk((12, 12), 6),
        draw.disk((12, 25), 6),  # touches the first
        draw.ellipse(40, 20, 4, 9, rotation=0.6),
        draw.disk((50, 50), 3),
        draw.disk((30, 45), 8),
        draw.disk((60, 5), 5, shape=(size, size)),  # cut by the bottom edge
    ]
    for value, (rr, cc) in enumerate(shapes, 1):
        labels[rr, cc] = np.where(labels[rr, cc] == 0, value, labels[rr, cc])
    return labels


# --- rasterising -------------------------------------------------------------------------


def test_square_with_square_hole():
    result = rasterise(polygon(square(2, 2, 12, 12), square(5, 5, 9, 9)))
    expected = np.zeros((32, 32), np.int32)
    expected[2:12, 2:12] = 1
    expected[5:9, 5:9] = 0
    assert result.labels.dtype == np.int32 and result.labels.shape == (32, 32)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.warnings == () and result.overlap_pixels == 0


def test_pixel_centres_inside_float_outlines_are_set():
    rng = np.random.default_rng(7)
    centres = np.stack(np.mgrid[0:48, 0:48][::-1], axis=-1).reshape(-1, 2) + 0.5
    for _ in range(30):
        count = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(2, 14) * rng.uniform(0.5, 1, count)
        cx, cy = rng.uniform(16, 32, 2)
        ring = np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]
        got = rasterise(polygon([*ring.tolist(), ring[0].tolist()]), (48, 48)).labels
        expected = points_in_poly(centres, ring).reshape(48, 48)
        np.testing.assert_array_equal(got > 0, expected)


def test_multipolygon_is_one_object_and_keeps_an_island_in_a_hole():
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [
            [square(0, 0, 10, 10), square(3, 3, 7, 7)],  # a frame
            [square(4, 4, 6, 6)],  # an island in its hole
            [square(20, 20, 24, 24)],
        ],
    }
    labels = rasterise(feature(geometry)).labels
    assert set(np.unique(labels)) == {0, 1}
    assert labels.sum() == 100 - 16 + 4 + 16
    assert labels[5, 5] == 1 and labels[3, 3] == 0 and labels[22, 22] == 1


def test_overlap_goes_to_the_smaller_object_and_is_reported():
    region = feature(polygon(square(0, 0, 20, 20)), "Tumor")
    nucleus = feature(polygon(square(5, 5, 10, 10)), "Nucleus", "detection")
    for order in ((region, nucleus), (nucleus, region)):
        result = rasterise(collection(*order))
        small, large = (2, 1) if order[0] is region else (1, 2)
        assert (result.labels[5:10, 5:10] == small).all()
        assert (result.labels == large).sum() == 400 - 25
        assert result.overlap_pixels == 25 and result.overlap_objects == 2
        assert result.classes[small - 1] == "Nucleus" and result.classes[large - 1] == "Tumor"
        (warning,) = result.warnings
        assert warning.startswith("cells.geojson: ") and "smallest object" in warning
        assert "25 pixel" in warning and "2 objects overlap" in warning


def test_overlap_of_equal_objects_goes_to_the_earlier_one():
    result = rasterise(
        collection(feature(polygon(square(0, 0, 4, 4))), feature(polygon(square(2, 0, 6, 4))))
    )
    assert (result.labels[:4, :4] == 1).all() and (result.labels[:4, 4:6] == 2).all()
    assert result.overlap_pixels == 8


def test_object_wholly_under_smaller_ones_is_left_out_and_labels_stay_consecutive():
    result = rasterise(
        collection(
            feature(polygon(square(0, 0, 4, 4)), "Big"),
            feature(polygon(square(0, 0, 4, 2)), "Top"),
            feature(polygon(square(0, 2, 4, 4)), "Bottom"),
        )
    )
    assert set(np.unique(result.labels)) == {0, 1, 2}
    assert result.classes == ("Top", "Bottom")
    assert any("wholly under smaller ones" in w for w in result.warnings)


def test_qupath_export_list_class_filter_null_geometry_and_cells():
    nucleus = polygon(square(3, 3, 6, 6))
    export = [
        feature(polygon(square(0, 0, 10, 10)), "Tumor"),
        feature(polygon(square(20, 20, 25, 25)), "Stroma"),
        feature(None, "Tumor"),
        feature(polygon(square(12, 0, 20, 8)), None, "cell", nucleusGeometry=nucleus),
    ]
    result = rasterise(export)
    assert result.labels.max() == 3 and result.classes == ("Tumor", "Stroma", None)
    # the cell's 3×3 nucleus (not its 8×8 outline) lies inside the tumour, and is smaller
    assert (result.labels[3:6, 3:6] == 3).all() and (result.labels == 3).sum() == 9
    assert (result.labels == 1).sum() == 100 - 9 and result.overlap_pixels == 9
    assert any("without geometry were skipped" in w for w in result.warnings)
    tumour = rasterise(export, classes={"Tumor"})
    assert tumour.classes == ("Tumor",) and (tumour.labels == 1).sum() == 100
    with pytest.raises(InvalidImageError, match="no objects of class Lymphocyte") as excinfo:
        rasterise(export, classes=["Lymphocyte"])
    assert "Stroma, Tumor, unclassified" in str(excinfo.value)


def test_single_feature_and_bare_geometry_and_small_overshoot():
    qupath = {
        "type": "Feature",
        "id": "0d2c5a9e-1111-4a3b-9a57-000000000000",
        "geometry": polygon(square(-0.5, 28, 4, 32.75)),
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
    }
    result = rasterise(qupath)
    assert (result.labels == 1).sum() == 16 and (result.labels[28:, :4] == 1).all()
    assert result.classes == ("Tumor",)
    np.testing.assert_array_equal(rasterise(qupath["geometry"]).labels, result.labels)


def test_annotation_labels_logs_the_warnings(caplog):
    document = collection(
        feature(polygon(square(0, 0, 8, 8))), feature(polygon(square(2, 2, 4, 4)))
    )
    with caplog.at_level("WARNING", logger="segcore.data.annotations"):
        labels = annotation_labels(encode(document), (16, 16), name="tile.geojson")
    assert labels.max() == 2
    assert "tile.geojson: 2 objects overlap on 4 pixel(s)" in caplog.text


# --- round trip with the exports -----------------------------------------------------------


def test_round_trip_through_the_qupath_export(tmp_path):
    labels = nuclei_labels()
    path = tmp_path / "tile.geojson"
    path.write_bytes(geojson_bytes(labels))
    result = rasterise_annotations(path, labels.shape)
    assert result.labels.max() == labels.max() == 6
    for value in range(1, 7):
        truth, got = labels == value, result.labels == value
        assert (truth & got).sum() / (truth | got).sum() > 0.9
    np.testing.assert_array_equal(result.labels, labels)  # pixel-edge outlines: exact
    assert result.classes == ("Nucleus",) * 6 and result.warnings == ()


# --- bad input: one message naming the file -------------------------------------------------

BAD = {
    "png bytes": (encode_png(np.zeros((4, 4), np.uint8)), "not a GeoJSON file"),
    "broken JSON": (b'{"type": "FeatureCollection", "features": [', "invalid JSON"),
    "other JSON": (b'{"name": "not geojson"}', "not GeoJSON"),
    "JSON number": (b"42", "found a JSON number"),
    "list of strings": (b'["a"]', "item 1 of 1 is not a Feature"),
    "empty file": (b"", "the file is empty"),
    "whitespace": (b"  \n", "the file is empty"),
    "no features": (encode(collection()), "no objects"),
    "only null geometry": (encode(collection(feature(None))), "no objects"),
    "point": (
        encode(collection(feature({"type": "Point", "coordinates": [3, 4]}))),
        "feature 1 has a Point geometry",
    ),
    "line": (
        encode(
            [
                feature(polygon(square(0, 0, 4, 4))),
                feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}),
            ]
        ),
        "feature 2 has a LineString geometry",
    ),
    "malformed": (encode(polygon([[0, 0], [1, "x"], [1, 1]])), "malformed Polygon coordinates"),
    "short ring": (encode(polygon([[0, 0], [1, 1]])), "fewer than 3"),
    "another image": (encode(polygon(square(1000, 1000, 2048, 1030))), "objects reach x=2048"),
    "negative": (encode(polygon(square(3, -50, 6, 4))), "objects reach y=-50"),
    "smaller than a pixel": (encode(polygon(square(3.6, 3.6, 3.9, 3.9))), "no objects inside"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_one_message_naming_the_file(case):
    data, expected = BAD[case]
    with pytest.raises(InvalidImageError) as excinfo:
        rasterise_annotations(data, (32, 32), name="cells.geojson")
    message = str(excinfo.value)
    assert message.startswith("cells.geojson: ") and expected in message
    assert "\n" not in message


def test_another_image_message_asks_about_the_image():
    with pytest.raises(InvalidImageError, match=r"but the image is 32×32; is this the GeoJSON"):
        rasterise(polygon(square(1000, 1000, 2048, 1030)))


def test_size_and_vertex_limits(tmp_path, monkeypatch):
    path = tmp_path / "big.geojson"
    path.write_bytes(encode(polygon(square(0, 0, 4, 4))))
    monkeypatch.setattr(annotations, "MAX_GEOJSON_BYTES", 10)
    with pytest.raises(InvalidImageError, match=r"big\.geojson: .* over the 0 MB limit"):
        rasterise_annotations(path, (8, 8))
    monkeypatch.setattr(annotations, "MAX_GEOJSON_BYTES", 1000)
    monkeypatch.setattr(annotations, "MAX_VERTICES", 4)
    with pytest.raises(InvalidImageError, match=r"big\.geojson: more than 4 vertices"):
        rasterise_annotations(path, (8, 8))
    with pytest.raises(InvalidImageError, match=r"missing\.geojson: file not found"):
        rasterise_annotations(tmp_path / "missing.geojson", (8, 8))


# --- datasets and uploads ------------------------------------------------------------------


def make_dataset(root, geojson: bool):
    """Three 64×64 samples; the masks as label PNGs or as their QuPath GeoJSON export."""
    rng = np.random.default_rng(0)
    for i in range(3):
        labels = np.roll(nuclei_labels(), 7 * i, axis=1)
        write_png(root / "images" / f"tile{i}.png", rng.integers(0, 256, (64, 64, 3), np.uint8))
        suffix = "_mask" if i == 1 else ""
        if geojson:
            (root / "masks").mkdir(parents=True, exist_ok=True)
            (root / "masks" / f"tile{i}{suffix}.geojson").write_bytes(geojson_bytes(labels))
        else:
            write_png(root / "masks" / f"tile{i}{suffix}.png", labels.astype(np.uint16))
    return root


def test_geojson_dataset_matches_its_png_version(tmp_path):
    pngs = open_dataset(make_dataset(tmp_path / "png", False), val_fraction=0, test_fraction=0)
    geo = open_dataset(make_dataset(tmp_path / "geo", True), val_fraction=0, test_fraction=0)
    assert list(geo.train) == list(pngs.train) == ["tile0", "tile1", "tile2"]
    assert [p.mask.name for p in geo.train.pairs][1] == "tile1_mask.geojson"
    for (image, mask), (png_image, png_mask) in zip(
        load_samples(geo.train), load_samples(pngs.train), strict=True
    ):
        np.testing.assert_array_equal(image, png_image)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        np.testing.assert_array_equal(mask, png_mask)
    _, truth = geo.train.load_truth(2)
    _, png_truth = pngs.train.load_truth(2)
    assert truth.dtype == np.int32
    np.testing.assert_array_equal(truth, png_truth)
    assert ground_truth_instances(truth)[0].max() == 6


def test_geojson_masks_in_pairing_and_loading_problems(tmp_path):
    root = make_dataset(tmp_path, True)
    write_png(root / "masks" / "tile0.png", nuclei_labels().astype(np.uint8))
    (root / "masks" / "tile2.geojson").write_bytes(b"")
    _, problems = pair_files(root)
    assert (
        str(root / "masks" / "tile0.png"),
        "second mask for image tile0.png (also tile0.geojson)",
    ) in problems
    assert any(path.endswith("tile2.geojson") and "empty" in p for path, p in problems)
    (root / "masks" / "tile0.png").unlink()
    (root / "masks" / "tile2.geojson").write_bytes(encode(polygon(square(100, 0, 120, 10))))
    splits = open_dataset(root, val_fraction=0, test_fraction=0)  # headers only: opens
    with pytest.raises(DatasetError) as excinfo:
        load_samples(splits.train)
    assert "tile2.geojson: objects reach x=120 but the image is 64×64" in str(excinfo.value)


def test_read_upload_rasterises_a_geojson_mask():
    labels = nuclei_labels()
    image = encode_png(np.full((64, 64, 3), 200, np.uint8))
    for name in ("tile.geojson", "tile.JSON"):
        _, mask = read_upload(image, "tile.png", geojson_bytes(labels), name)
        assert mask.dtype == np.int32
        np.testing.assert_array_equal(mask, labels)
    with pytest.raises(InvalidImageError, match=r"^other\.json: objects reach y=1000"):
        read_upload(image, "tile.png", encode(polygon(square(0, 990, 5, 1000))), "other.json")
    with pytest.raises(InvalidImageError, match=r"^labels\.json: not a GeoJSON file"):
        read_upload(image, "tile.png", encode_png(labels.astype(np.uint8)), "labels.json")


@pytest.mark.slow
def test_predict_page_takes_a_geojson_ground_truth(tmp_path, monkeypatch):
    from skimage import measure

    from segcore.data.synthetic import generate_tile
    from tests.conftest import REPO

    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    image, truth = generate_tile([7, 7], 256)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240).run()
    at = at.switch_page("pages/predict.py").run()
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload("tile.png", encode_png(image), "image/png")
    at.file_uploader(key="upload_mask").upload(
        "tile_mask.png", encode_png(truth * 255), "image/png"
    )
    at.run()
    dice = [m.value for m in at.metric if m.label == "Dice"]
    assert dice and not at.exception and not at.error

    geojson = geojson_bytes(measure.label(truth, connectivity=2))
    at.file_uploader(key="upload_mask").upload("tile.geojson", geojson, "application/geo+json")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [m.value for m in at.metric if m.label == "Dice"] == dice

    other = encode(polygon(square(0, 0, 2048, 10)))
    at.file_uploader(key="upload_mask").upload("other.json", other, "application/json")
    at.run()
    assert not at.exception
    assert any("other.json: objects reach x=2048" in e.value for e in at.error)
