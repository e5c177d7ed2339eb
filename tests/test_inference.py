"""Tiled inference: blending against independent references, shapes, batching, errors."""

from __future__ import annotations

import gc
import math
import weakref

import keras
import numpy as np
import pytest

from segcore.data.images import read_image
from segcore.data.preprocessing import PreprocessConfig, enhance_image, preprocess_image
from segcore.data.tiling import pad_to_at_least, tile_starts
from segcore.errors import ConfigError, InvalidImageError, SegcoreError
from segcore.inference import predict as inference
from segcore.inference.predict import (
    blend_window,
    predict_batch,
    predict_mask,
    predict_probabilities,
)
from segcore.metrics.counts import binarize
from segcore.network.model import build_deeplabv3plus

PLAIN = PreprocessConfig(equalize="none", blur_kernel=0)
"""No equalisation or blur: the model input is exactly ``image / 255``."""


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    """A real DeepLabV3+ with narrow heads (random weights), predicting on any multiple of 16."""
    keras.utils.set_random_seed(0)
    return build_deeplabv3plus(
        (None, None, 3), aspp_filters=8, low_level_filters=8, decoder_filters=8, aspp_rates=(2, 4)
    )


def pointwise_model() -> keras.Model:
    """A 1×1 convolution + sigmoid with fixed weights: pointwise, so tiling cannot change it."""
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1, activation="sigmoid")]
    )
    model.layers[0].set_weights([np.array([[[[3.0], [-2.0], [1.5]]]]), np.array([-0.7])])
    return model


class Recorder:
    """Wraps a predictor and records the size of every batch it is called with."""

    def __init__(self, predict):
        self.predict = predict
        self.batches: list[int] = []
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        self.shapes.append(batch.shape)
        return self.predict(batch)


def tile_mean(batch: np.ndarray) -> np.ndarray:
    """A non-local stand-in: each tile's prediction is the constant mean of its red channel."""
    means = batch[..., 0].mean(axis=(1, 2), keepdims=True)
    return np.broadcast_to(means, batch.shape[:3]).copy()


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def n_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    stride = tile - overlap
    return len(tile_starts(max(height, tile), tile, stride)) * len(
        tile_starts(max(width, tile), tile, stride)
    )


# --------------------------------------------------------------------------------------------
# Blending
# --------------------------------------------------------------------------------------------


def test_blend_window_is_positive_and_cross_fades():
    tile, overlap = 32, 8
    window = blend_window(tile, overlap)
    assert window.shape == (tile, tile) and window.dtype == np.float32
    assert window.min() > 0 and window.max() == 1.0
    np.testing.assert_array_equal(window, window.T)
    np.testing.assert_array_equal(window, window[::-1, ::-1])
    ramp = window[tile // 2]
    # Two tiles overlapping by `overlap` pixels: the weights sum to 1 across the overlap.
    np.testing.assert_allclose(ramp[-overlap:] + ramp[:overlap], 1.0, atol=1e-6)
    np.testing.assert_array_equal(blend_window(16, 0), np.ones((16, 16), np.float32))


def test_pointwise_model_tiled_equals_whole_image():
    model = pointwise_model()
    image = random_image(100, 130, seed=1)
    tiled = predict_probabilities(model, image, PLAIN, tile_size=32, overlap=8, batch_size=5)
    whole = model.predict_on_batch(preprocess_image(image, PLAIN)[None])[0, ..., 0]
    assert tiled.shape == (100, 130) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


def test_tiles_outside_where_are_skipped_and_read_zero():
    """``where`` (a slide's tissue): only tiles holding one of its pixels reach the model;
    pixels no kept tile covers are 0; pixels every covering tile of which is kept are as
    without ``where``."""
    image = random_image(100, 130, seed=4)
    tile, overlap = 32, 8
    full = predict_probabilities(tile_mean, image, PLAIN, tile_size=tile, overlap=overlap)
    where = np.zeros((100, 130), bool)
    where[10:20, 15:30] = True
    model = Recorder(tile_mean)
    kept = predict_probabilities(
        model, image, PLAIN, tile_size=tile, overlap=overlap, batch_size=1, where=where
    )
    starts = tile_starts(130, tile, tile - overlap), tile_starts(100, tile, tile - overlap)
    covering = [
        (y, x) for y in starts[1] for x in starts[0] if where[y : y + tile, x : x + tile].any()
    ]
    assert sum(model.batches) == len(covering) < n_tiles(100, 130, tile, overlap)
    covered = np.zeros((100, 130), int)
    for y, x in covering:
        covered[y : y + tile, x : x + tile] += 1
    all_tiles = np.zeros((100, 130), int)
    for y in starts[1]:
        for x in starts[0]:
            all_tiles[y : y + tile, x : x + tile] += 1
    assert (kept[covered == 0] == 0).all()
    same = covered == all_tiles
    np.testing.assert_allclose(kept[same], full[same], rtol=0, atol=1e-6)
    everywhere = predict_probabilities(
        tile_mean, image, PLAIN, tile_size=tile, overlap=overlap, where=np.ones((100, 130))
    )
    np.testing.assert_array_equal(everywhere, full)
    nothing = predict_probabilities(
        Recorder(tile_mean),
        image,
        PLAIN,
        tile_size=tile,
        overlap=overlap,
        where=~np.ones_like(where),
    )
    assert nothing.shape == (100, 130) and not nothing.any()
    with pytest.raises(InvalidImageError, match="where has shape"):
        predict_probabilities(tile_mean, image, PLAIN, tile_size=tile, overlap=8, where=where[:50])


def test_blending_matches_an_independent_reference():
    """A tile-constant stand-in: each pixel is the window-weighted mean over covering tiles."""
    image = random_image(70, 90, seed=2)
    tile, overlap = 32, 12
    got = predict_probabilities(tile_mean, image, PLAIN, tile_size=tile, overlap=overlap)

    x = image.astype(np.float64) / 255.0
    stride = tile - overlap
    ramp_1d = np.minimum(1.0, np.minimum(np.arange(tile) + 1.0, tile - np.arange(tile)) / 13.0)
    total = np.zeros(image.shape[:2])
    weight = np.zeros(image.shape[:2])
    for y in tile_starts(70, tile, stride):
        for x0 in tile_starts(90, tile, stride):
            value = x[y : y + tile, x0 : x0 + tile, 0].mean()
            w = np.outer(ramp_1d, ramp_1d)
            total[y : y + tile, x0 : x0 + tile] += value * w
            weight[y : y + tile, x0 : x0 + tile] += w
    np.testing.assert_allclose(got, total / weight, rtol=0, atol=1e-5)
    # The top-left corner is covered by one tile only: its value, exactly.
    assert got[0, 0] == pytest.approx(x[:tile, :tile, 0].mean(), abs=1e-6)


def test_already_enhanced_image_gives_the_same_probabilities():
    """``already_enhanced=True`` skips the enhancement, and only it: same map, input untouched."""
    config = PreprocessConfig()  # CLAHE and blur, so enhancing twice would change the input
    image = random_image(90, 70, seed=4)
    kwargs = {"tile_size": 32, "overlap": 8, "batch_size": 3}
    direct = predict_probabilities(tile_mean, image, config, **kwargs)
    enhanced = enhance_image(image, config)
    kept = enhanced.copy()
    given = predict_probabilities(tile_mean, enhanced, config, already_enhanced=True, **kwargs)
    np.testing.assert_array_equal(given, direct)
    np.testing.assert_array_equal(enhanced, kept)
    twice = predict_probabilities(tile_mean, enhanced, config, **kwargs)
    assert not np.array_equal(twice, direct)


def test_tiny_deeplab_tiled_output_is_valid_with_and_without_overlap(tiny_model):
    image = random_image(96, 96, seed=3)
    whole = tiny_model.predict_on_batch(preprocess_image(image)[None])[0, ..., 0]
    for overlap in (0, 32):
        probs = predict_probabilities(
            tiny_model, image, PreprocessConfig(), tile_size=64, overlap=overlap
        )
        assert probs.shape == (96, 96) and probs.dtype == np.float32
        assert np.isfinite(probs).all() and probs.min() >= 0.0 and probs.max() <= 1.0
        # Same model, same pixels: tiling only changes the context near tile borders.
        assert np.abs(probs - whole).mean() < 0.1


# --------------------------------------------------------------------------------------------
# Shapes, batching, progress
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(37, 300), (64, 64), (150, 97), (20, 20), (1, 40), (300, 5)])
def test_output_has_the_input_size(shape):
    model = pointwise_model()
    image = random_image(*shape)
    probs = predict_probabilities(model, image, PLAIN, tile_size=64, overlap=16)
    assert probs.shape == shape and probs.dtype == np.float32
    whole = model.predict_on_batch(preprocess_image(image, PLAIN)[None])[0, ..., 0]
    np.testing.assert_allclose(probs, whole, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "batch_size"),
    [((150, 97), 64, 16, 4), ((100, 130), 32, 8, 8), ((37, 300), 32, 0, 3), ((64, 64), 64, 0, 8)],
)
def test_model_calls_are_bounded_by_batch_size(shape, tile, overlap, batch_size):
    model = pointwise_model()
    recorder = Recorder(model.predict_on_batch)
    progress: list[tuple[int, int]] = []
    predict_probabilities(
        recorder,
        random_image(*shape),
        PLAIN,
        tile_size=tile,
        overlap=overlap,
        batch_size=batch_size,
        progress=lambda done, total: progress.append((done, total)),
    )
    expected = n_tiles(*shape, tile, overlap)
    assert sum(recorder.batches) == expected
    assert len(recorder.batches) == math.ceil(expected / batch_size)
    assert max(recorder.batches) <= batch_size
    assert {s[1:] for s in recorder.shapes} == {(tile, tile, 3)}
    assert [total for _, total in progress] == [expected] * len(recorder.batches)
    assert [done for done, _ in progress] == list(np.cumsum(recorder.batches))


def test_small_image_is_one_padded_tile():
    recorder = Recorder(pointwise_model().predict_on_batch)
    calls = []
    probs = predict_probabilities(
        recorder,
        random_image(40, 50),
        PLAIN,
        tile_size=64,
        overlap=16,
        progress=lambda *a: calls.append(a),
    )
    assert probs.shape == (40, 50)
    assert recorder.shapes == [(1, 64, 64, 3)]
    assert calls == [(1, 1)]


def test_keras_model_is_traced_once_per_tile_size():
    model = pointwise_model()
    for shape in [(100, 130), (37, 300), (64, 64), (200, 45)]:  # full and partial batches
        predict_probabilities(
            model, random_image(*shape), PLAIN, tile_size=32, overlap=8, batch_size=3
        )
    function = inference._KERAS_FUNCTIONS[model][(32, 32)]
    assert function.experimental_get_tracing_count() == 1


def test_function_cache_does_not_keep_the_model_alive():
    model = pointwise_model()
    predict_probabilities(model, random_image(40, 40), PLAIN, tile_size=32, overlap=8)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_real_model_batches_through_the_cached_function(tiny_model):
    recorder = Recorder(tiny_model.predict_on_batch)
    probs = predict_probabilities(
        recorder,
        random_image(150, 97, seed=4),
        PreprocessConfig(),
        tile_size=64,
        overlap=16,
        batch_size=4,
    )
    assert recorder.batches == [4, 2]
    direct = predict_probabilities(
        tiny_model,
        random_image(150, 97, seed=4),
        PreprocessConfig(),
        tile_size=64,
        overlap=16,
        batch_size=4,
    )
    np.testing.assert_allclose(probs, direct, atol=1e-5)


# --------------------------------------------------------------------------------------------
# predict_batch and predict_mask
# --------------------------------------------------------------------------------------------


def test_predict_batch_matches_the_model(tiny_model):
    images = np.stack([preprocess_image(random_image(32, 48, seed=s)) for s in range(5)])
    probs = predict_batch(tiny_model, images, batch_size=2)
    assert probs.shape == (5, 32, 48) and probs.dtype == np.float32
    expected = tiny_model.predict_on_batch(images)[..., 0]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    recorder = Recorder(tiny_model.predict_on_batch)
    predict_batch(recorder, images, batch_size=2)
    assert recorder.batches == [2, 2, 1]


def test_predict_mask_uses_the_metrics_rule():
    probs = np.array([[0.0, 0.49999997, 0.5], [0.7, 1.0, 0.2]], dtype=np.float32)
    mask = predict_mask(probs, 0.5)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, binarize(probs, 0.5))
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 1, 0]])


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 100}, "multiple of 16"),
        ({"tile_size": 8}, "tile_size"),
        ({"tile_size": 64, "overlap": 64}, "smaller than tile_size"),
        ({"overlap": -1}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
        ({"tile_size": 64.0}, "tile_size"),
    ],
)
def test_bad_tiling_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        predict_probabilities(pointwise_model(), random_image(20, 20), PLAIN, **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((2, 32, 32, 3), np.uint8),
        np.zeros((32,), np.uint8),
        np.zeros((32, 32, 5), np.uint8),
        np.zeros((0, 32, 3), np.uint8),
    ],
)
def test_bad_images_raise_invalid_image_error(image):
    with pytest.raises(InvalidImageError):
        predict_probabilities(pointwise_model(), image, PLAIN, tile_size=32, overlap=8)


def test_bad_model_or_config_raise_package_errors():
    image = random_image(20, 20)
    with pytest.raises(ConfigError, match="PreprocessConfig"):
        predict_probabilities(pointwise_model(), image, {"equalize": "none"})
    with pytest.raises(ConfigError, match="callable"):
        predict_probabilities("model.keras", image, PLAIN, tile_size=32, overlap=8)
    with pytest.raises(ConfigError, match="shape"):
        predict_probabilities(lambda b: b, image, PLAIN, tile_size=32, overlap=8)
    with pytest.raises(ConfigError, match="logits"):
        predict_probabilities(lambda b: b[..., 0] * 4 - 2, image, PLAIN, tile_size=32, overlap=8)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((32, 32, 3), np.float32), "batch"),
        (np.zeros((1, 32, 32, 3), np.uint8), "float"),
        (np.zeros((1, 40, 32, 3), np.float32), "multiple of 16"),
        (np.full((1, 32, 32, 3), 255.0, np.float32), r"\[0, 1\]"),
        (np.zeros((0, 32, 32, 3), np.float32), "non-empty"),
    ],
)
def test_predict_batch_rejects_bad_input(images, message):
    with pytest.raises(InvalidImageError, match=message):
        predict_batch(pointwise_model(), images)


def test_errors_share_the_package_base_class():
    assert issubclass(ConfigError, SegcoreError) and issubclass(InvalidImageError, SegcoreError)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_monuseg_tile_full_size(monuseg, tiny_model):
    path = sorted((monuseg / "test" / "images").iterdir())[0]
    image = read_image(path)
    assert image.shape == (1000, 1000, 3)
    progress: list[tuple[int, int]] = []
    probs = predict_probabilities(
        tiny_model,
        image,
        PreprocessConfig(),
        tile_size=256,
        overlap=0,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert probs.shape == (1000, 1000) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and 0.0 <= probs.min() <= probs.max() <= 1.0
    assert progress[-1] == (16, 16)
    assert pad_to_at_least(image, 256) is image
