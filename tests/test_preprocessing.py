"""Preprocessing: luminance equalisation, smoothing, scaling, masks, and its config."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import exposure

from segcore.data.images import read_image, read_mask
from segcore.data.preprocessing import (
    PreprocessConfig,
    enhance_image,
    enhance_with_lut,
    equalisation_lut,
    equalize_luminance,
    lightness_histogram,
    one_mapping,
    preprocess_image,
    preprocess_mask,
    smooth,
)
from segcore.errors import ConfigError


def he_like(size=64, seed=0):
    """A low-contrast pink/purple image: a narrow luminance range, stain-like hues."""
    rng = np.random.default_rng(seed)
    pink = np.array([220, 160, 200], float)
    purple = np.array([120, 80, 170], float)
    weight = ndimage.gaussian_filter(rng.random((size, size)), 3)
    weight = (weight - weight.min()) / np.ptp(weight)
    image = pink * (1 - weight[..., None]) + purple * weight[..., None]
    return np.clip(0.6 * image + 60, 0, 255).astype(np.uint8)


def test_global_equalisation_flattens_luminance_histogram():
    image = he_like()
    lightness_before = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0]
    out = equalize_luminance(image, "global")
    lightness = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0]
    assert np.ptp(lightness) > np.ptp(lightness_before) + 100
    # Independent reference: scikit-image's equalize_hist gives a near-uniform CDF too.
    reference = exposure.equalize_hist(lightness_before) * 255
    assert np.corrcoef(reference.ravel(), lightness.ravel())[0, 1] > 0.99


def test_equalisation_keeps_stain_hue():
    image = he_like()
    out = equalize_luminance(image, "global")
    hue_in = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(int)
    hue_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(int)
    diff = np.abs(hue_in - hue_out)
    diff = np.minimum(diff, 256 - diff)
    # Per-RGB-channel equalisation (what we avoid) shifts hues far more.
    per_channel = np.dstack([cv2.equalizeHist(image[..., c]) for c in range(3)])
    hue_pc = cv2.cvtColor(per_channel, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(int)
    diff_pc = np.abs(hue_in - hue_pc)
    diff_pc = np.minimum(diff_pc, 256 - diff_pc)
    assert np.median(diff) < 8
    assert np.median(diff_pc) > 2 * np.median(diff)


def test_clahe_and_none():
    image = he_like()
    assert equalize_luminance(image, "none") is image
    clahe = equalize_luminance(image, "clahe", clip_limit=2.0, tile_grid=4)
    assert clahe.shape == image.shape and clahe.dtype == np.uint8
    assert not np.array_equal(clahe, image)
    assert not np.array_equal(clahe, equalize_luminance(image, "global"))


def test_smooth_matches_opencv_and_reduces_noise():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = smooth(noisy, 5, 1.5)
    np.testing.assert_array_equal(out, cv2.GaussianBlur(noisy, (5, 5), 1.5))
    assert out.astype(float).std() < noisy.astype(float).std() / 2
    assert smooth(noisy, 0) is noisy and smooth(noisy, 1) is noisy


def test_preprocess_image_range_and_shape():
    out = preprocess_image(he_like(48))
    assert out.dtype == np.float32 and out.shape == (48, 48, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.9  # equalised: the range is used
    plain = preprocess_image(he_like(48), PreprocessConfig(equalize="none", blur_kernel=0))
    np.testing.assert_allclose(plain, he_like(48) / 255.0, atol=1e-7)


def test_preprocess_accepts_gray_and_rgba():
    gray = he_like(16)[..., 0]
    assert preprocess_image(gray).shape == (16, 16, 3)
    rgba = np.dstack([he_like(16), np.full((16, 16), 255, np.uint8)])
    np.testing.assert_array_equal(preprocess_image(rgba), preprocess_image(he_like(16)))


def test_mask_binary_and_dilation():
    mask = np.zeros((9, 9), np.uint16)
    mask[4, 4] = 17  # an instance label
    assert preprocess_mask(mask).tolist() == (mask > 0).astype(int).tolist()
    # OpenCV's 3×3 elliptical kernel is the 4-connected cross.
    dilated = preprocess_mask(mask, PreprocessConfig(mask_dilate_kernel=3))
    assert dilated.sum() == 5 and dilated.dtype == np.uint8 and dilated.max() == 1
    twice = preprocess_mask(mask, PreprocessConfig(mask_dilate_kernel=3, mask_dilate_iterations=2))
    # Independent reference: scipy's binary dilation with the cross, twice.
    cross = ndimage.generate_binary_structure(2, 1)
    expected = ndimage.binary_dilation(mask > 0, cross, iterations=2)
    np.testing.assert_array_equal(twice, expected)
    assert preprocess_mask(mask, PreprocessConfig(mask_dilate_kernel=7)).sum() > twice.sum()


def test_config_json_roundtrip():
    config = PreprocessConfig(equalize="clahe", blur_kernel=5, blur_sigma=1.2, mask_dilate_kernel=3)
    assert PreprocessConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown PreprocessConfig keys"):
        PreprocessConfig.from_dict({"equalise": "global"})
    with pytest.raises(ConfigError, match="malformed"):
        PreprocessConfig.from_json("{not json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"equalize": "per-channel"},
        {"blur_kernel": 4},
        {"blur_kernel": -1},
        {"blur_sigma": -0.5},
        {"clahe_clip_limit": 0},
        {"mask_dilate_iterations": 0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        PreprocessConfig().equalize = "none"


def test_real_tile_preprocessing(monuseg):
    path = sorted((monuseg / "test" / "images").glob("*.tif"))[0]
    image = read_image(path)
    mask = read_mask(monuseg / "test" / "masks" / f"{path.stem}.png")
    enhanced = enhance_image(image, PreprocessConfig())
    lightness = cv2.cvtColor(enhanced, cv2.COLOR_RGB2LAB)[..., 0]
    # Equalised luminance: roughly uniform, so its mean sits near mid-range.
    assert 100 < lightness.mean() < 155
    # Nuclei stay darker than the rest after preprocessing.
    out = preprocess_image(image)
    assert out[mask == 1].mean() < out[mask == 0].mean() - 0.1


# One look-up table per image: what a whole slide's tiles share (segcore.wholeslide.equalisation)

ONE_MAPPING = [
    PreprocessConfig(equalize="global"),
    PreprocessConfig(equalize="clahe", clahe_tile_grid=1, clahe_clip_limit=4.0),  # the default
    PreprocessConfig(equalize="clahe", clahe_tile_grid=1, clahe_clip_limit=0.5, blur_kernel=0),
    PreprocessConfig(equalize="clahe", clahe_tile_grid=1, clahe_clip_limit=40.0),
]


def _varied_images() -> list[np.ndarray]:
    from segcore.data import samples

    rng = np.random.default_rng(5)
    split = samples.open_source(samples.BUILT_IN).split("test")
    images = [split.load(i)[0] for i in range(min(3, len(split)))]
    for _ in range(8):
        height, width = rng.integers(1, 200, 2)
        images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        spread = rng.uniform(1, 40)
        noise = rng.normal(128, spread, (height, width, 3))
        images.append(np.clip(noise, 0, 255).astype(np.uint8))
    images.append(np.full((9, 7, 3), 77, np.uint8))  # one lightness value only
    return images


@pytest.mark.parametrize("config", ONE_MAPPING, ids=lambda c: f"{c.equalize}-{c.clahe_clip_limit}")
def test_the_look_up_table_of_an_images_own_histogram_is_opencvs_equalisation(config):
    """OpenCV's equalizeHist and one-tile CLAHE, reproduced exactly from the histogram."""
    for image in _varied_images():
        lut = equalisation_lut(lightness_histogram(image), config)
        assert np.array_equal(enhance_with_lut(image, lut, config), enhance_image(image, config))


def test_histograms_of_parts_add_up_and_a_mask_selects_pixels():
    image = _varied_images()[3]
    top, bottom = image[: image.shape[0] // 2], image[image.shape[0] // 2 :]
    whole = lightness_histogram(image)
    assert np.array_equal(lightness_histogram(top) + lightness_histogram(bottom), whole)
    mask = np.zeros(image.shape[:2], bool)
    mask[: image.shape[0] // 2] = True
    assert np.array_equal(lightness_histogram(image, mask), lightness_histogram(top))


def test_only_one_mapping_equalisations_have_a_look_up_table():
    histogram = lightness_histogram(_varied_images()[0])
    assert one_mapping(PreprocessConfig(equalize="clahe", clahe_tile_grid=1))
    assert not one_mapping(PreprocessConfig(equalize="clahe", clahe_tile_grid=8))
    assert equalisation_lut(histogram, PreprocessConfig(equalize="none")) is None
    with pytest.raises(ConfigError, match="adapts to each part"):
        equalisation_lut(histogram, PreprocessConfig(equalize="clahe", clahe_tile_grid=8))
    with pytest.raises(ConfigError, match="256 non-negative"):
        equalisation_lut(np.ones(10), PreprocessConfig())
    empty = equalisation_lut(np.zeros(256), PreprocessConfig())
    assert np.array_equal(empty, np.arange(256))
