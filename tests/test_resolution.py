"""Pixel size: metadata, resampling to the model's µm per pixel and back, the CLI's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segcore.cli import main
from segcore.data.datasets import dataset_pixel_size
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, DatasetError, InvalidImageError
from segcore.inference.predict import predict_probabilities
from segcore.inference.resolution import (
    MAX_PIXEL_SIZE,
    MIN_PIXEL_SIZE,
    PIXEL_SIZE_RANGE,
    check_pixel_size,
    image_pixel_size,
    predict_at_pixel_size,
    read_pixel_size,
    resampled_size,
)

PLAIN = PreprocessConfig(equalize="none", blur_kernel=0)


def red_channel(batch):
    """A stand-in model: the probability is the red channel."""
    return batch[..., :1]


def recording(sizes):
    def model(batch):
        sizes.append(batch.shape[1:3])
        return batch[..., :1]

    return model


@pytest.mark.parametrize("value", [0, -0.25, 0.005, 10.5, float("nan"), "0.5", True])
def test_absurd_pixel_sizes_are_refused_by_name(value):
    with pytest.raises(ConfigError, match=r"pixel size|µm per pixel"):
        check_pixel_size(value)


def test_pixel_size_from_tiff_tags_and_ome(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "cm.tif", resolution=20_000, resolution_unit=3)
    assert image_pixel_size(tmp_path / "cm.tif") == pytest.approx(0.5)  # 20,000 px per cm
    Image.fromarray(rgb).save(tmp_path / "inch.tif", dpi=(101_600, 101_600))
    assert image_pixel_size(tmp_path / "inch.tif") == pytest.approx(0.25)
    Image.fromarray(rgb).save(tmp_path / "72dpi.tif", dpi=(72, 72))  # a default, not a scan
    assert image_pixel_size(tmp_path / "72dpi.tif") is None
    ome = '<OME><Image><Pixels PhysicalSizeX="{}"{}/></Image></OME>'
    Image.fromarray(rgb).save(tmp_path / "ome.tif", description=ome.format("0.2527", ""))
    assert image_pixel_size(tmp_path / "ome.tif") == pytest.approx(0.2527)  # µm by default
    unit = ' PhysicalSizeXUnit="nm"'
    Image.fromarray(rgb).save(tmp_path / "nm.tif", description=ome.format("505.4", unit))
    assert image_pixel_size(tmp_path / "nm.tif") == pytest.approx(0.5054)
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    assert image_pixel_size(tmp_path / "plain.png") is None


def test_an_image_at_twice_the_pixel_size_is_predicted_at_twice_its_size():
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (12, 10, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    sizes: list = []
    prob = predict_at_pixel_size(
        recording(sizes),
        image,
        PLAIN,
        pixel_size=0.5,
        model_pixel_size=0.25,
        tile_size=32,
        overlap=8,
    )
    assert prob.shape == image.shape[:2] and prob.dtype == np.float32
    assert sizes and all(s == (32, 32) for s in sizes)
    # Smooth content survives the ×2 and back: close to the red channel itself.
    red = image[..., 0] / 255.0
    assert np.abs(prob - red).mean() < 0.05 and np.corrcoef(prob.ravel(), red.ravel())[0, 1] > 0.95
    same = predict_at_pixel_size(
        red_channel, image, PLAIN, pixel_size=0.25, model_pixel_size=0.25, tile_size=32, overlap=8
    )
    direct = predict_probabilities(red_channel, image, PLAIN, tile_size=32, overlap=8)
    np.testing.assert_array_equal(same, direct)


def test_a_resampled_image_over_the_pixel_limit_is_refused():
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="over the limit"):
        predict_at_pixel_size(
            red_channel, image, PLAIN, pixel_size=5.0, model_pixel_size=0.25, max_pixels=10**6
        )


def test_a_resampled_side_over_the_limit_is_refused_before_any_work():
    from segcore.analysis.analyse import analyse_image
    from segcore.data.images import MAX_SIDE

    def never(batch):
        raise AssertionError("the model must not run")

    strip = np.zeros((10, MAX_SIDE // 2 + 100, 3), np.uint8)  # 40 × 2 ≈ 0.7 megapixels
    with pytest.raises(InvalidImageError, match=r"over the limit of 32,767 per side"):
        predict_at_pixel_size(never, strip, PLAIN, pixel_size=0.5, model_pixel_size=0.25)
    assert resampled_size(10, 500, pixel_size=0.5, model_pixel_size=0.25) == (1000, 20)
    assert resampled_size(10, 500, pixel_size=None, model_pixel_size=0.25) is None
    with pytest.raises(InvalidImageError, match="per side"):
        analyse_image(never, strip, PLAIN, pixel_size=0.5, model_pixel_size=0.25)


def test_dataset_json_declares_a_pixel_size(tmp_path):
    assert dataset_pixel_size(tmp_path) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"pixel_size": 0.5}))
    assert dataset_pixel_size(tmp_path) == 0.5
    (tmp_path / "dataset.json").write_text(json.dumps({"pixel_size": 50}))
    with pytest.raises(DatasetError, match=r"dataset\.json"):
        dataset_pixel_size(tmp_path)


@pytest.mark.parametrize("value", ["0", "-1", "12", "0.005"])
def test_cli_refuses_absurd_pixel_sizes_with_one_line(value, tmp_path, capsys):
    status = main(["predict", "--pixel-size", value, "--out", str(tmp_path), "x.png"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--pixel-size" in err and "µm/px" in err


def test_one_pixel_size_range_everywhere(tmp_path):
    """The library, a dataset.json, a model card and a file's metadata share one range; a file's
    value outside it is reported and not used."""
    from segcore.bundles.card import ModelCard
    from segcore.errors import ConfigError

    assert (MIN_PIXEL_SIZE, MAX_PIXEL_SIZE) == (0.01, 10.0)
    assert PIXEL_SIZE_RANGE == "[0.01, 10] µm/px"
    for value in (MIN_PIXEL_SIZE, MAX_PIXEL_SIZE):
        assert check_pixel_size(value) == value
        (tmp_path / "dataset.json").write_text(json.dumps({"pixel_size": value}))
        assert dataset_pixel_size(tmp_path) == value
    (tmp_path / "dataset.json").write_text(json.dumps({"pixel_size": 0.005}))
    with pytest.raises(DatasetError, match=r"\[0\.01, 10\] µm/px"):
        dataset_pixel_size(tmp_path)
    with pytest.raises(ConfigError, match=r"\[0\.01, 10\] µm/px"):
        ModelCard(name="x", pixel_size=0.005)
    rgb = np.zeros((8, 8, 3), np.uint8)
    ome = '<OME><Image><Pixels PhysicalSizeX="0.005"/></Image></OME>'
    Image.fromarray(rgb).save(tmp_path / "fine.tif", description=ome)
    recorded = read_pixel_size(tmp_path / "fine.tif")
    assert recorded.value is None and recorded.recorded == pytest.approx(0.005)
    assert recorded.note == "The file records 0.005 µm/px, outside [0.01, 10] µm/px: not used."
    assert image_pixel_size(tmp_path / "fine.tif") is None
    Image.fromarray(rgb).save(tmp_path / "72dpi.tif", dpi=(72, 72))
    assert "352.8 µm/px" in read_pixel_size(tmp_path / "72dpi.tif").note
    assert read_pixel_size(tmp_path / "missing.tif").note == ""


@pytest.mark.parametrize("side", [30_000, 1_000_000])
def test_reading_the_pixel_size_of_a_decompression_bomb_records_nothing(side):
    """A small PNG declaring side × side pixels: Pillow refuses to open it (DecompressionBomb);
    the pixel size reader says nothing, and the image readers refuse it in one message."""
    import io

    from segcore.data.images import read_image
    from tests.test_fuzz_images import _png_with_size

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    bomb = _png_with_size(buffer.getvalue(), side, side)
    assert image_pixel_size(io.BytesIO(bomb)) is None
    assert read_pixel_size(io.BytesIO(bomb)).note == ""
    with pytest.raises(InvalidImageError, match=r"bomb\.png: more than"):
        read_image(bomb, name="bomb.png")
