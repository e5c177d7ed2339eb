"""Test-time flips (segcore.inference.flips): the mean of four mirror-image predictions."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.classical import ClassicalBaseline
from segcore.inference.flips import FLIPS_DETAIL, flip_averaged, with_flips
from segcore.inference.predict import predict_probabilities
from segcore.inference.runtimes.base import RuntimeModel


def corner_model(batch):
    """Probability 1 in each tile's top-left quadrant, 0 elsewhere: not flip-equivariant."""
    b, h, w, _ = batch.shape
    out = np.zeros((b, h, w, 1), np.float32)
    out[:, : h // 2, : w // 2] = 1.0
    return out


def red_model(batch):
    """Each pixel's own red value: flip-equivariant, so flips change nothing."""
    return batch[..., :1].astype(np.float32)


def test_each_of_the_four_flips_is_flipped_back_and_averaged():
    batch = np.zeros((2, 8, 6, 3), np.float32)
    averaged = flip_averaged(corner_model)(batch)
    assert averaged.shape == (2, 8, 6) and averaged.dtype == np.float32
    # Each quadrant is the top-left one in exactly one of the four flips.
    np.testing.assert_allclose(averaged, 0.25)
    rng = np.random.default_rng(0)
    batch = rng.random((3, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(flip_averaged(red_model)(batch), batch[..., 0], rtol=1e-6)


def test_a_runtime_keeps_its_name_and_says_it_is_flip_averaged():
    runtime = RuntimeModel("openvino-int8", corner_model, detail="OpenVINO 2026.4, int8")
    flipped = with_flips(runtime)
    assert flipped.name == "openvino-int8" and flipped.detail.endswith(FLIPS_DETAIL)
    assert FLIPS_DETAIL in flipped.describe()
    np.testing.assert_allclose(flipped(np.zeros((1, 4, 4, 3), np.float32)), 0.25)
    with pytest.raises(ConfigError, match="classical baseline"):
        with_flips(ClassicalBaseline())
    with pytest.raises(ConfigError, match="callable"):
        with_flips(42)


def test_flip_averaged_probabilities_of_a_whole_image_and_of_a_keras_model():
    from segcore.network.model import build_deeplabv3plus

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    pre = PreprocessConfig()
    plain = predict_probabilities(red_model, image, pre, tile_size=32, overlap=8)
    flipped = predict_probabilities(with_flips(red_model), image, pre, tile_size=32, overlap=8)
    np.testing.assert_allclose(flipped, plain, atol=1e-6)  # equivariant: nothing changes
    model = build_deeplabv3plus(
        aspp_filters=8, aspp_rates=(2, 4), low_level_filters=8, decoder_filters=8
    )
    args = {"tile_size": 64, "overlap": 16}
    by_hand = np.mean(
        [
            np.flip(predict_probabilities(model, np.flip(image, axes), pre, **args), axes)
            for axes in ((), (0,), (1,), (0, 1))
        ],
        axis=0,
    )
    ours = predict_probabilities(with_flips(model), image, pre, **args)
    assert ours.shape == image.shape[:2]
    # Tiling a flipped image puts its tiles elsewhere, so only close, not equal.
    assert np.abs(ours - by_hand).mean() < 0.02
    assert not np.allclose(ours, predict_probabilities(model, image, pre, **args), atol=1e-4)
