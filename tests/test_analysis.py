"""segcore.analysis.analyse: uploads, one prediction per image, exact re-thresholding afterwards."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from segcore.analysis.analyse import analyse_image, digest, read_upload
from segcore.analysis.overlays import PALETTE
from segcore.data.preprocessing import PreprocessConfig, enhance_image, preprocess_image
from segcore.errors import InvalidImageError
from segcore.inference.instances import InstanceConfig
from segcore.inference.predict import predict_probabilities


def png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = array[..., ::-1]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array))
    assert ok
    return data.tobytes()


class CountingModel:
    """A stand-in model: probability = the blue channel of the input; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.asarray(batch)[..., 2:3]


@pytest.fixture()
def image_and_truth():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    truth = (rng.random((80, 100)) > 0.6).astype(np.uint8)
    return image, truth


def test_read_upload_decodes_image_and_keeps_the_mask_as_stored(image_and_truth):
    image, truth = image_and_truth
    got_image, got_mask = read_upload(png(image), "tile.png", png(truth * 255), "tile_mask.png")
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask, truth * 255)
    assert read_upload(png(image), "tile.png")[1] is None


def test_read_upload_instance_labels_are_nuclei(image_and_truth):
    image, _ = image_and_truth
    labels = np.zeros((80, 100), np.uint16)
    labels[5:10, 5:10] = 1
    labels[20:30, 40:45] = 300
    _, mask = read_upload(png(image), "a.png", png(labels), "labels.png")
    np.testing.assert_array_equal(mask, labels)  # the instance labels are kept


def test_read_upload_errors_name_the_file(image_and_truth):
    image, truth = image_and_truth
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        read_upload(b"\x89PNG\r\n\x1a\n garbage", "broken.png")
    with pytest.raises(InvalidImageError, match=r"empty\.png"):
        read_upload(b"", "empty.png")
    with pytest.raises(InvalidImageError, match=r"small_mask\.png.*50×40.*tile\.png.*100×80"):
        read_upload(png(image), "tile.png", png(truth[:40, :50] * 255), "small_mask.png")


def test_analysis_runs_the_model_once_and_thresholds_exactly(image_and_truth):
    image, truth = image_and_truth
    model = CountingModel()
    config = PreprocessConfig()
    analysis = analyse_image(model, image, config, truth, name="tile.png", model_name="m")
    expected = preprocess_image(image, config)[..., 2]
    np.testing.assert_allclose(analysis.probabilities, expected, atol=1e-6)
    calls = model.calls
    for threshold in (0.2, 0.37, 0.5, 0.81):
        view = analysis.view(threshold, opacity=0.5)
        pred = (expected >= threshold).astype(np.uint8)
        np.testing.assert_array_equal(view.mask, pred)
        assert view.metrics["dice"] == pytest.approx(f1_score(truth.ravel(), pred.ravel()))
        assert view.metrics["jaccard"] == pytest.approx(jaccard_score(truth.ravel(), pred.ravel()))
        assert view.overlay.shape == (80, 100, 3) and view.mask_picture.shape == (80, 100, 3)
    assert model.calls == calls  # thresholds never call the model
    assert analysis.model_input.dtype == np.uint8 and analysis.model_input.shape == image.shape


def test_flips_call_the_model_four_times_and_are_recorded(image_and_truth):
    from segcore.errors import ConfigError
    from segcore.inference.classical import ClassicalBaseline

    image, truth = image_and_truth
    plain_model, flips_model = CountingModel(), CountingModel()
    plain = analyse_image(plain_model, image, PreprocessConfig(), truth)
    flipped = analyse_image(flips_model, image, PreprocessConfig(), truth, flips=True)
    assert flips_model.calls == 4 * plain_model.calls and flipped.flips and not plain.flips
    # A per-pixel model gives the same probabilities however the tile is mirrored.
    np.testing.assert_allclose(flipped.probabilities, plain.probabilities, atol=1e-6)
    with pytest.raises(ConfigError, match="baseline"):
        analyse_image(ClassicalBaseline(), image, PreprocessConfig(), truth, flips=True)


def test_analysis_preprocesses_the_image_once(image_and_truth, monkeypatch):
    import segcore.analysis.analyse as analyse
    import segcore.inference.predict as predict

    image, truth = image_and_truth
    config = PreprocessConfig()
    expected = predict_probabilities(CountingModel(), image, config)  # enhances by itself
    calls = []

    def counting_enhance(*args, **kwargs):
        calls.append(1)
        return enhance_image(*args, **kwargs)

    monkeypatch.setattr(analyse, "enhance_image", counting_enhance)
    monkeypatch.setattr(predict, "enhance_image", counting_enhance)
    analysis = analyse_image(CountingModel(), image, config, truth)
    assert len(calls) == 1
    np.testing.assert_array_equal(analysis.model_input, enhance_image(image, config))
    np.testing.assert_array_equal(analysis.probabilities, expected)


def test_overlay_colours_follow_the_confusion():
    image = np.full((32, 32, 3), 128, np.uint8)
    truth = np.zeros((32, 32), np.uint8)
    truth[:, :16] = 1

    def model(batch):
        out = np.zeros((*batch.shape[:3], 1), np.float32)
        out[:, :16, :32] = 0.9
        return out

    analysis = analyse_image(model, image, PreprocessConfig(), truth)
    view = analysis.view(0.5, opacity=1.0, outline=False)
    assert tuple(view.overlay[4, 4]) == PALETTE["true_positive"].rgb
    assert tuple(view.overlay[4, 28]) == PALETTE["false_positive"].rgb
    assert tuple(view.overlay[28, 4]) == PALETTE["false_negative"].rgb
    assert tuple(view.overlay[28, 28]) == (128, 128, 128)


def test_without_truth_only_nuclei_are_counted(image_and_truth):
    image, _ = image_and_truth
    analysis = analyse_image(CountingModel(), image, PreprocessConfig(), name="x.png")
    metrics = analysis.view(0.5).metrics
    assert "dice" not in metrics and "reason" in metrics and metrics["nuclei_pred"] >= 0
    assert analysis.truth_picture() is None


def test_metrics_csv_has_one_row_per_threshold(image_and_truth):
    image, truth = image_and_truth
    analysis = analyse_image(
        CountingModel(), image, PreprocessConfig(), truth, name="t.png", model_name="tiny"
    )
    rows = list(csv.DictReader(io.StringIO(analysis.metrics_csv([0.3, 0.6]).decode())))
    assert [r["threshold"] for r in rows] == ["0.3", "0.6"]
    assert rows[0]["image"] == "t.png" and rows[0]["model"] == "tiny"
    assert float(rows[1]["dice"]) == pytest.approx(analysis.view(0.6).metrics["dice"])


def test_mismatched_truth_is_refused(image_and_truth):
    image, truth = image_and_truth
    with pytest.raises(InvalidImageError, match="ground truth"):
        analyse_image(CountingModel(), image, PreprocessConfig(), truth[:10])


def test_digest_separates_parts():
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digest(b"x") == digest(b"x") and len(digest(b"x")) == 16


def discs_model(batch):
    """Probabilities of two touching discs and a lone one, whatever the input."""
    import cv2

    out = np.zeros((*batch.shape[:3], 1), np.float32)
    for x, y, r in ((30, 40, 14), (55, 40, 14), (95, 60, 9)):
        cv2.circle(out[0, ..., 0], (x, y), r, 0.9, -1)
    return out


def test_nuclei_are_split_measured_scored_and_exported_without_the_model():
    import json

    import cv2

    image = np.full((80, 128, 3), 200, np.uint8)
    truth = np.zeros((80, 128, 3), np.uint8)  # a colour rendering: one colour per nucleus
    discs = ((30, 40, 14), (55, 40, 14), (95, 60, 9))
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    for (x, y, r), colour in zip(discs, colours, strict=True):
        cv2.circle(truth, (x, y), r, colour, -1)
    analysis = analyse_image(discs_model, image, PreprocessConfig(), truth, pixel_size=0.25)
    view = analysis.nuclei(0.5)
    assert view.count == 3 and view.scores.n_true == 3
    assert view.scores.f1 == 1.0 and view.scores.pq > 0.8
    assert "colour" in view.truth_note
    assert view.summary["density_per_mm2"] == pytest.approx(3 / (80 * 128 * 0.25**2 / 1e6))
    assert len(json.loads(view.geojson())["features"]) == 3
    assert view.csv().decode().count("\n") == 4  # header + 3 nuclei
    assert view.outlines(analysis.image).shape == (80, 128, 3)
    merged = analysis.nuclei(0.5, InstanceConfig(split_depth_um=20))
    assert merged.count == 2 and merged.scores.fn >= 1
    # The last view is kept (shared by named copies) and made again for another setting.
    again = analysis.named("other.png").nuclei(0.5, InstanceConfig(split_depth_um=20))
    assert again is merged and analysis.nuclei(0.5).count == 3


def test_an_empty_prediction_gives_zero_nuclei_and_empty_files(image_and_truth):
    import json

    import cv2

    image, truth = image_and_truth

    def nothing(batch):
        return np.zeros((*batch.shape[:3], 1), np.float32)

    analysis = analyse_image(nothing, image, PreprocessConfig(), truth)
    view = analysis.nuclei(0.5)
    assert view.count == 0 and view.summary["count"] == 0
    assert json.loads(view.geojson())["features"] == []
    assert view.csv().decode().count("\n") == 1  # the header only
    labels = cv2.imdecode(np.frombuffer(view.label_png(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (80, 100) and not labels.any()
    assert view.scores.n_pred == 0 and view.scores.pq == 0.0


def test_named_copies_share_everything_but_the_name(image_and_truth):
    image, truth = image_and_truth
    model = CountingModel()
    alice = analyse_image(model, image, PreprocessConfig(), truth, name="patient-ALICE.png")
    bob = alice.named("bob.tiff")
    assert (bob.name, bob.stem) == ("bob.tiff", "bob")
    assert (alice.name, alice.stem) == ("patient-ALICE.png", "patient-ALICE")
    assert bob.explorer is alice.explorer and bob.image is alice.image
    assert [row["image"] for row in bob.metrics_rows([0.3, 0.6])] == ["bob.tiff", "bob.tiff"]
    assert b"ALICE" not in bob.metrics_csv([0.5])
    assert bob.baseline is alice.baseline  # computed once, for every copy
    assert alice.named("").name == "" and model.calls == 1


def test_nbytes_counts_the_arrays_and_the_caches_filled(image_and_truth):
    image, truth = image_and_truth
    analysis = analyse_image(CountingModel(), image, PreprocessConfig(), truth)
    arrays = (analysis.image, analysis.model_input, analysis.probabilities)
    base = analysis.nbytes
    assert base >= sum(a.nbytes for a in arrays) + analysis.truth.nbytes
    analysis.nuclei(0.5)  # a label image (int32) and a mask are cached
    assert analysis.nbytes >= base + 80 * 100 * 4
    before_baseline = analysis.nbytes
    analysis.baseline_metrics()
    assert analysis.nbytes >= before_baseline + 80 * 100 * 4  # the baseline's scores
    assert analysis.named("x").nbytes == analysis.nbytes


def test_a_dim_image_is_stretched_for_the_pictures_only():
    rng = np.random.default_rng(1)
    bright = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    dim = (bright // 16).astype(np.uint8)  # a 12-bit scan read from a 16-bit file: 0..15
    model = CountingModel()
    analysis = analyse_image(model, dim, PreprocessConfig(), name="dim.tif")
    assert analysis.display_note and "dim" in analysis.display_note
    assert analysis.picture.max() == 255 and analysis.image.max() == 15
    np.testing.assert_array_equal(analysis.image, dim)  # what the model and the counts use
    assert analysis.view(0.5, opacity=0.0).overlay.max() > 200  # drawn on the picture
    plain = analyse_image(model, bright, PreprocessConfig())
    assert plain.display_note is None and plain.display_image is None
    assert plain.picture is plain.image


def test_a_16_bit_upload_of_12_bit_data_is_shown_stretched():
    rng = np.random.default_rng(2)
    twelve_bit = rng.integers(0, 4096, (40, 50, 3), dtype=np.uint16)  # a camera's 12 bits
    image, _ = read_upload(png(twelve_bit), "scan.png")
    assert image.dtype == np.uint8 and image.max() <= 16  # read as stored: /257, dim
    analysis = analyse_image(CountingModel(), image, PreprocessConfig(), name="scan.png")
    assert analysis.display_note and analysis.picture.max() == 255
