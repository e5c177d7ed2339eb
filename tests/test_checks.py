"""segcore.analysis.checks.stain_notice: does an image look like brightfield H&E?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segcore.analysis.checks import stain_notice
from segcore.data.images import read_image
from segcore.data.synthetic import generate_tile
from tests.conftest import REPO

SAMPLES = sorted((REPO / "samples" / "test" / "images").glob("*.png"))


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return read_image(SAMPLES[0])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).stem)
def test_real_he_samples_pass(path):
    assert stain_notice(read_image(path)) is None


def test_synthetic_he_tiles_pass():
    for i in range(5):
        assert stain_notice(generate_tile([i, 1], 256)[0]) is None


def test_a_grayscale_image_is_flagged(tissue):
    gray = tissue.mean(axis=2).astype(np.uint8)
    notice = stain_notice(np.repeat(gray[..., None], 3, axis=2))
    assert notice and "no colour" in notice and "H&E" in notice


def test_fluorescence_is_flagged(tissue):
    nuclei = 255 - tissue.mean(axis=2).astype(np.uint8)  # bright nuclei on a dark background
    green = np.zeros_like(tissue)
    green[..., 1] = nuclei  # e.g. a GFP channel: green is the strongest, not the weakest
    assert "pink or purple" in stain_notice(green)
    blue = np.zeros_like(tissue)
    blue[..., 2] = nuclei  # DAPI rendered blue
    assert "does not look like H&E" in stain_notice(blue)


def test_a_dark_image_is_flagged(tissue):
    assert "dark" in stain_notice(tissue // 4)  # H&E's hues, but fluorescence's brightness


def test_another_stain_is_flagged(tissue):
    level = tissue.mean(axis=2)
    brown = np.stack([level, level * 0.75, level * 0.5], axis=2).astype(np.uint8)  # like DAB
    assert "pink or purple" in stain_notice(brown)
