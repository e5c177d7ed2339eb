"""CSV and PNG downloads of segcore.analysis.downloads."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest

from segcore.analysis.downloads import mask_png, metrics_csv, png_bytes
from segcore.data.images import read_image, read_mask
from segcore.errors import InvalidImageError
from tests.test_overlays import random_image, square


def test_metrics_csv_round_trips():
    rows = [
        {"image": 'é, "quoted".png', "threshold": 0.35, "dice": 0.1 + 0.2, "tp": 3},
        {"image": "b.png", "threshold": 0.5, "nuclei_pred": np.int64(7), "note": None},
    ]
    data = metrics_csv(rows)
    assert isinstance(data, bytes)
    read = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert list(read[0]) == ["image", "threshold", "dice", "tp", "nuclei_pred", "note"]
    assert read[0]["image"] == 'é, "quoted".png'
    assert float(read[0]["dice"]) == 0.1 + 0.2  # exact
    assert read[0]["nuclei_pred"] == "" and read[1]["tp"] == "" and read[1]["note"] == ""
    assert int(read[1]["nuclei_pred"]) == 7 and float(read[1]["threshold"]) == 0.5
    with pytest.raises(ValueError, match="row"):
        metrics_csv([])


def test_png_bytes_round_trip():
    image = random_image((16, 12))
    assert np.array_equal(read_image(png_bytes(image)), image)
    gray = image[..., 0]
    assert np.array_equal(read_image(png_bytes(gray))[..., 0], gray)
    for bad in (image.astype(np.float32), image[..., :2], np.zeros((0, 3), np.uint8)):
        with pytest.raises(InvalidImageError):
            png_bytes(bad)


def test_mask_png_round_trip():
    mask = square((16, 12), 3, 2, 5)
    data = mask_png(mask)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.ndim == 2 and set(np.unique(decoded)) == {0, 255}
    assert np.array_equal(read_mask(data), mask)
