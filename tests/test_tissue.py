"""Tissue detection: glass excluded, tissue covered, specks dropped, holes filled."""

from __future__ import annotations

import numpy as np
import pytest

from devtools import slides as ds
from segcore.errors import ConfigError, InvalidImageError
from segcore.slides.reader import open_slide
from segcore.slides.tissue import (
    FALLBACK_PIXEL_SIZE,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    TissueConfig,
    TissueMask,
    detect_tissue,
    slide_tissue,
    tissue_score,
)

PINK = (200, 120, 170)  # eosin-pink, saturation 0.4
GLASS = (238, 236, 240)  # slightly tinted glass, saturation 0.02


def _glass(height: int = 200, width: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 2, (height, width, 3))
    return np.clip(np.array(GLASS) + noise, 0, 255).astype(np.uint8)


def _blob_image() -> np.ndarray:
    """Glass with a 100×120 tissue block holding a 20×20 hole, and a 3×3 speck."""
    rgb = _glass()
    rgb[50:150, 100:220] = PINK
    rgb[90:110, 150:170] = GLASS  # a lumen
    rgb[10:13, 10:13] = PINK  # a speck
    return rgb


def test_score_is_saturation():
    rgb = np.array([[[255, 255, 255], [200, 100, 100], [0, 0, 0], [100, 100, 100]]], np.uint8)
    np.testing.assert_allclose(tissue_score(rgb), [[0.0, 0.5, 0.0, 0.0]])


def test_mask_covers_tissue_fills_holes_drops_specks():
    # 1 µm per mask pixel: the speck is 9 µm², the block 12,000 µm².
    tissue = detect_tissue(_blob_image(), downsample=4, pixel_size=0.25)
    assert tissue.mask.dtype == bool and tissue.mask.shape == (200, 300)
    assert tissue.mask[55:145, 105:215].all()  # the block, its lumen filled
    assert not tissue.mask[10:13, 10:13].any()  # the speck dropped
    assert not tissue.mask[:45].any() and not tissue.mask[155:].any()  # glass
    assert MIN_THRESHOLD <= tissue.threshold <= MAX_THRESHOLD
    assert tissue.downsample == 4
    assert tissue.fraction == pytest.approx(100 * 120 / (200 * 300), rel=0.1)


def test_holes_and_specks_kept_when_asked():
    config = TissueConfig(fill_holes=False, min_area_um2=0)
    tissue = detect_tissue(_blob_image(), downsample=4, pixel_size=0.25, config=config)
    assert not tissue.mask[95:105, 155:165].any()  # the lumen stays open
    assert tissue.mask[11, 11]  # the speck stays


def test_min_area_is_in_um2_with_a_fallback_pixel_size():
    image = _blob_image()
    kept = detect_tissue(image, downsample=16, pixel_size=0.25, config=TissueConfig(min_area_um2=0))
    speck = int(kept.mask[:30, :30].sum())  # the speck as thresholded (blur widens it)
    speck_um2 = speck * (16 * 0.25) ** 2  # 4 µm per mask pixel
    assert speck >= 9
    for min_area, expected in ((speck_um2 - 1, True), (speck_um2 + 1, False)):
        config = TissueConfig(min_area_um2=min_area)
        tissue = detect_tissue(image, downsample=16, pixel_size=0.25, config=config)
        assert bool(tissue.mask[11, 11]) is expected
        assert tissue.mask[100, 160]  # the block stays
        unknown = detect_tissue(image, downsample=16, pixel_size=None, config=config)
        np.testing.assert_array_equal(unknown.mask, tissue.mask)  # 0.25 µm/px assumed
    assert FALLBACK_PIXEL_SIZE == 0.25


def test_threshold_override():
    image = _blob_image()
    high = detect_tissue(image, downsample=4, pixel_size=0.25, config=TissueConfig(threshold=0.9))
    assert high.threshold == 0.9 and not high.mask.any()
    low = detect_tissue(image, downsample=4, pixel_size=0.25, config=TissueConfig(threshold=0.3))
    assert low.threshold == 0.3 and low.mask[55:145, 105:215].all()


@pytest.mark.parametrize(
    "image",
    [
        np.full((64, 64, 3), 255, np.uint8),
        np.full((64, 64, 3), 128, np.uint8),
        np.zeros((64, 64, 3), np.uint8),
        _glass(64, 64),
    ],
    ids=["white", "grey", "black", "noisy-glass"],
)
def test_blank_thumbnails_give_an_empty_mask(image):
    tissue = detect_tissue(image, downsample=8, pixel_size=0.25)
    assert not tissue.mask.any() and tissue.fraction == 0.0
    assert tissue.area_mm2(0.25) == 0.0


def test_a_thumbnail_of_tissue_only_is_all_tissue():
    rgb = np.full((64, 64, 3), PINK, np.uint8)
    assert detect_tissue(rgb, downsample=8, pixel_size=0.25).mask.all()


def test_area_and_covers():
    mask = np.zeros((10, 20), bool)
    mask[2:4, 5:10] = True  # 10 pixels
    tissue = TissueMask(mask=mask, downsample=8.0, threshold=0.1)
    # each mask pixel is 8 × 0.5 = 4 µm wide: 10 × 16 µm² = 160 µm²
    assert tissue.area_mm2(0.5) == pytest.approx(160e-6)
    assert tissue.fraction == pytest.approx(10 / 200)
    assert tissue.covers(40, 16, 8, 8)  # level-0 box on mask pixel (2, 5)
    assert tissue.covers(0, 0, 41, 17)  # just reaches it
    assert not tissue.covers(0, 0, 40, 16)
    assert not tissue.covers(100, 0, 50, 80)  # beside the tissue
    assert not tissue.covers(-500, -500, 100, 100) and not tissue.covers(1000, 0, 10, 10)


def test_config_checks_and_round_trip():
    config = TissueConfig(threshold=0.2, min_area_um2=500.0, fill_holes=False, max_side=512)
    assert TissueConfig.from_json(config.to_json()) == config
    for bad in (
        {"threshold": 1.5},
        {"threshold": True},
        {"min_area_um2": -1},
        {"min_area_um2": float("inf")},
        {"fill_holes": "yes"},
        {"max_side": 8},
        {"max_side": 512.0},
    ):
        with pytest.raises(ConfigError):
            TissueConfig(**bad)


def test_bad_thumbnails_are_refused():
    with pytest.raises(InvalidImageError, match="uint8 RGB"):
        detect_tissue(np.zeros((8, 8), np.uint8), downsample=1, pixel_size=None)
    with pytest.raises(InvalidImageError, match="uint8 RGB"):
        detect_tissue(np.zeros((8, 8, 3), np.float32), downsample=1, pixel_size=None)


def test_slide_tissue_on_a_synthetic_slide_excludes_the_glass(tmp_path):
    mosaic = ds.synthetic_mosaic(rows=2, cols=2, size=256, margin=192, seed=3)
    path = ds.write_aperio_tiff(tmp_path / "synthetic.svs", mosaic.rgb, levels=(1, 2))
    with open_slide(path) as slide:
        thumb, tissue = slide_tissue(slide, TissueConfig(max_side=448, min_area_um2=100))
    assert thumb.shape[:2] == tissue.mask.shape == (448, 448)
    assert tissue.downsample == pytest.approx(896 / 448)
    _check_tiles_covered_and_glass_excluded(tissue, mosaic, min_cover=0.9)


def _check_tiles_covered_and_glass_excluded(tissue, mosaic, *, min_cover: float) -> None:
    ds_ = tissue.downsample
    inside = np.zeros(tissue.mask.shape, bool)
    for _, x, y, w, h in mosaic.tiles:
        box = tissue.mask[
            round(y / ds_) : round((y + h) / ds_), round(x / ds_) : round((x + w) / ds_)
        ]
        assert box.mean() >= min_cover
        assert tissue.covers(x, y, w, h)
    x0 = min(t[1] for t in mosaic.tiles)
    y0 = min(t[2] for t in mosaic.tiles)
    x1 = max(t[1] + t[3] for t in mosaic.tiles)
    y1 = max(t[2] + t[4] for t in mosaic.tiles)
    edge = 16  # level-0 pixels the blur may spread the tissue over the glass
    inside[
        round((y0 - edge) / ds_) : round((y1 + edge) / ds_),
        round((x0 - edge) / ds_) : round((x1 + edge) / ds_),
    ] = True
    assert not tissue.mask[~inside].any()
    assert not tissue.covers(0, 0, x0 - edge, y0 - edge)


def test_slide_tissue_on_real_monuseg_tissue(monuseg, tmp_path):
    mosaic = ds.monuseg_mosaic(monuseg, rows=2, cols=2, margin=300, crop=600, split="test")
    outside = np.ones(mosaic.rgb.shape[:2], bool)
    for _, x, y, w, h in mosaic.tiles:
        outside[y : y + h, x : x + w] = False
    rgb = mosaic.rgb.copy()
    rgb[outside] = _glass(*rgb.shape[:2])[outside]  # tinted, noisy glass
    path = ds.write_ome_tiff(tmp_path / "monuseg.ome.tif", rgb, mpp=0.25, levels=(1, 4))
    with open_slide(path) as slide:
        thumb, tissue = slide_tissue(slide, TissueConfig(max_side=700))
    assert max(thumb.shape[:2]) == 700
    _check_tiles_covered_and_glass_excluded(tissue, mosaic, min_cover=0.9)
    expected_mm2 = 4 * (600 * 0.25) ** 2 / 1e6
    assert tissue.area_mm2(0.25) == pytest.approx(expected_mm2, rel=0.1)


def test_thumbnail_of_blank_slide_has_no_tissue(tmp_path):
    blank = ds.RegionSource(900, 1200, lambda x, y, w, h: np.full((h, w, 3), 255, np.uint8))
    path = ds.write_aperio_tiff(tmp_path / "blank.svs", blank, levels=(1, 4))
    with open_slide(path) as slide:
        thumb, tissue = slide_tissue(slide)
    assert thumb.shape == (900, 1200, 3)  # smaller than max_side: level 0 as it is
    assert not tissue.mask.any() and tissue.downsample == 1.0
