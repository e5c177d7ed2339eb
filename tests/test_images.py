"""Reading images and masks: formats, conventions and bad input."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from segcore.data.images import (
    MAX_SIDE,
    check_same_size,
    encode_png,
    image_shape,
    read_image,
    read_mask,
    to_binary_mask,
    to_rgb_uint8,
)
from segcore.errors import InvalidImageError, SegcoreError
from tests.conftest import write_png


@pytest.fixture
def rgb():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_png_roundtrip_keeps_rgb_order(tmp_path, rgb):
    path = write_png(tmp_path / "a.png", rgb)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb)


def test_red_pixel_is_red(tmp_path):
    # Independent of our writer: Pillow writes RGB, we must read R in channel 0.
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200
    path = tmp_path / "red.png"
    Image.fromarray(img).save(path)
    assert read_image(path)[0, 0].tolist() == [200, 0, 0]


def test_bytes_source_and_encode_png(rgb):
    assert np.array_equal(read_image(encode_png(rgb), name="upload.png"), rgb)


def test_grayscale_is_repeated(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = read_image(write_png(tmp_path / "g.png", gray))
    assert out.shape == (8, 8, 3)
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_rgba_alpha_is_dropped(tmp_path, rgb):
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_16bit_is_scaled(tmp_path):
    img16 = np.full((5, 5, 3), 65535, np.uint16)
    img16[0, 0] = (257 * 10, 0, 257 * 128)
    out = read_image(write_png(tmp_path / "h.png", img16))
    assert out.dtype == np.uint8
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [10, 0, 128]


def test_tiff_and_jpeg(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), rgb)
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.dstack([yy * 6, xx * 4, 255 - yy * 6]).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - smooth).mean() < 3


@pytest.mark.parametrize(
    "mask, expected",
    [
        (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 7], [65535, 0]], np.uint16), [[0, 1], [1, 0]]),  # instance labels
    ],
)
def test_mask_forms(tmp_path, mask, expected):
    out = read_mask(write_png(tmp_path / "m.png", mask))
    assert out.dtype == np.uint8
    assert out.tolist() == expected


def test_palette_mask_uses_indices(tmp_path):
    indices = np.array([[0, 1], [2, 0]], np.uint8)
    img = Image.fromarray(indices, "P")
    # Index 0 is displayed white: the colour would say "nucleus", the index says background.
    img.putpalette([255, 255, 255, 255, 0, 0, 0, 255, 0] + [0] * (768 - 9))
    path = tmp_path / "p.png"
    img.save(path)
    assert read_mask(path).tolist() == [[0, 1], [1, 0]]


def test_rgb_rendered_mask(tmp_path):
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[1, 1] = (0, 0, 90)
    assert read_mask(write_png(tmp_path / "c.png", mask)).sum() == 1


def test_to_rgb_uint8_forms():
    assert to_rgb_uint8(np.ones((2, 2), bool)).max() == 255
    assert to_rgb_uint8(np.full((2, 2, 1), 0.5)).tolist()[0][0] == [128, 128, 128]
    assert to_rgb_uint8(np.full((2, 2, 3), 200.0))[0, 0, 0] == 200
    with pytest.raises(InvalidImageError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 5)))
    with pytest.raises(InvalidImageError, match="NaN"):
        to_rgb_uint8(np.full((2, 2), np.nan))
    with pytest.raises(InvalidImageError, match="zero size"):
        to_binary_mask(np.zeros((0, 3)))


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"e\.png: the file is empty"):
        read_image(tmp_path / "e.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello, I am text")
    with pytest.raises(InvalidImageError, match=r"notes\.png: not a readable image"):
        read_image(tmp_path / "notes.png")


def test_truncated_png(tmp_path, rgb):
    data = encode_png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match=r"t\.png: corrupt"):
        read_image(tmp_path / "t.png")


def test_pixel_cap_checked_from_header(tmp_path):
    # A 12000×12000 black PNG compresses to a small file but would decode to 432 MB.
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) < 1_000_000
    assert image_shape(data) == (12000, 12000)
    with pytest.raises(InvalidImageError, match=r"big\.png: 12000×12000 = 144\.0 megapixels"):
        read_image(data, name="big.png")
    with pytest.raises(InvalidImageError, match=r"more than the limit of 0\.0"):
        read_image(encode_png(np.zeros((10, 10), np.uint8)), max_pixels=10)


@pytest.mark.parametrize("size", [(40_000, 2), (3, 70_000)])
def test_a_side_over_the_limit_is_refused_from_the_header(size):
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, format="PNG")  # few pixels, a long side
    side = "width" if size[0] > size[1] else "height"
    message = rf"strip\.png: {size[0]}×{size[1]} has a {side} of {max(size):,} pixels, over the "
    for reader in (read_image, read_mask):
        with pytest.raises(InvalidImageError, match=message + "limit of 32,767 per side"):
            reader(buffer.getvalue(), name="strip.png", max_pixels=None)
    assert read_image(encode_png(np.zeros((1, MAX_SIDE), np.uint8))).shape == (1, MAX_SIDE, 3)


def test_decompression_bomb_is_refused():
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(InvalidImageError, match=r"bomb\.png: more than 179 megapixels"):
        read_mask(buffer.getvalue(), name="bomb.png")


def test_errors_share_one_type(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"\x00\x01garbage")
    with pytest.raises(SegcoreError):
        read_mask(tmp_path / "x.tif")


def test_check_same_size():
    check_same_size(np.zeros((4, 5, 3)), np.zeros((4, 5)))
    with pytest.raises(InvalidImageError, match="image is 5×4 but its mask is 4×5"):
        check_same_size(np.zeros((4, 5, 3)), np.zeros((5, 4)), name="a.png")


def test_real_monuseg_tile(monuseg):
    image_path = sorted((monuseg / "train" / "images").glob("*.tif"))[0]
    mask_path = monuseg / "train" / "masks" / f"{image_path.stem}.png"
    image, mask = read_image(image_path), read_mask(mask_path)
    assert image.shape == (1000, 1000, 3) and mask.shape == (1000, 1000)
    # Independent decoder for the colour order: Pillow gives RGB.
    np.testing.assert_array_equal(image, np.asarray(Image.open(image_path).convert("RGB")))
    labels = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(mask, labels > 0)
    # Nuclei are darker than background in H&E.
    assert image[mask == 1].mean() < image[mask == 0].mean()
