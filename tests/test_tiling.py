"""Tiling and padding."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data.tiling import extract_tiles, pad_to_at_least, tile_starts


@pytest.mark.parametrize(
    "length, tile, stride, expected",
    [
        (1000, 256, None, [0, 256, 512, 744]),
        (512, 256, None, [0, 256]),
        (256, 256, None, [0]),
        (100, 256, None, [0]),
        (300, 256, 128, [0, 44]),
        (600, 256, 192, [0, 192, 344]),
    ],
)
def test_tile_starts(length, tile, stride, expected):
    starts = tile_starts(length, tile, stride)
    assert starts == expected
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:length].all()


def test_tile_starts_rejects_nonpositive():
    with pytest.raises(ValueError):
        tile_starts(10, 0)


def test_extract_tiles_reassemble():
    array = np.arange(70 * 50 * 3).reshape(70, 50, 3)
    tiles = extract_tiles(array, 32)
    assert tiles.shape == (3 * 2, 32, 32, 3)
    rows, cols = tile_starts(70, 32), tile_starts(50, 32)
    rebuilt = np.zeros_like(array)
    for k, (y, x) in enumerate((y, x) for y in rows for x in cols):
        rebuilt[y : y + 32, x : x + 32] = tiles[k]
    np.testing.assert_array_equal(rebuilt, array)


def test_pad_reflects_image_and_mask_alike():
    image = np.arange(20 * 10).reshape(20, 10)
    padded = pad_to_at_least(image, 32)
    assert padded.shape == (32, 32)
    np.testing.assert_array_equal(padded[:20, :10], image)
    np.testing.assert_array_equal(padded[20, :10], image[18])  # reflection, no edge repeat
    assert pad_to_at_least(image, 8) is image
    assert pad_to_at_least(np.ones((1, 3)), 4).shape == (4, 4)
