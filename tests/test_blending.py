"""Blending a fine-tuning with its start (``TrainConfig.start_blend``, WiSE-FT; issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.errors import ConfigError
from segcore.training.blending import StartBlend
from segcore.training.config import TrainConfig
from tests.conftest import make_pairs_dataset, tiny_config


class Weights:
    """A stand-in with Keras's get_weights/set_weights."""

    def __init__(self, weights):
        self.weights = weights

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.asarray(w) for w in weights]


def test_the_blend_is_the_share_of_the_start_plus_the_rest_of_the_trained():
    start = [np.zeros((2, 3), np.float32), np.full(4, 10.0, np.float32)]
    trained = [np.ones((2, 3), np.float32), np.full(4, 20.0, np.float32)]
    blended = StartBlend(start, 0.25).blended(trained)
    np.testing.assert_allclose(blended[0], 0.75)
    np.testing.assert_allclose(blended[1], 17.5)
    assert all(b.dtype == np.float32 for b in blended)


def test_applied_blends_inside_the_block_and_restores_after_even_on_error():
    model = Weights([np.ones(3, np.float32)])
    blend = StartBlend([np.full(3, 3.0, np.float32)], 0.5, "v4.1")
    with pytest.raises(RuntimeError), blend.applied(model):
        np.testing.assert_allclose(model.weights[0], 2.0)
        raise RuntimeError("scoring failed")
    np.testing.assert_allclose(model.weights[0], 1.0)
    blend.apply(model)
    np.testing.assert_allclose(model.weights[0], 2.0)


def test_weights_of_another_architecture_are_refused_naming_the_start():
    blend = StartBlend([np.zeros(3, np.float32)], 0.5, "weights/default")
    with pytest.raises(ConfigError, match="weights/default"):
        blend.blended([np.zeros(4, np.float32)])
    with pytest.raises(ConfigError, match="weights/default"):
        blend.blended([np.zeros(3, np.float32), np.zeros(1, np.float32)])


def test_start_blend_needs_a_start_and_a_share_below_one():
    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig(start_blend=0.5)
    for share in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="start_blend"):
            TrainConfig(start_blend=share, init_from="default")
    assert StartBlend.for_config(TrainConfig()) is None


@pytest.mark.slow
def test_a_blended_fine_tuning_scores_and_keeps_the_blend_and_checkpoints_the_trained(tmp_path):
    import keras

    from segcore.bundles.loading import load_bundle
    from segcore.training.runs import RunDir
    from segcore.training.trainer import train

    data = make_pairs_dataset(tmp_path / "train-lab", n=8, size=64, seed=1)
    other = make_pairs_dataset(tmp_path / "other-lab", n=3, size=64, seed=2)
    (other / "split.json").write_text(
        json.dumps({"rule": "by hand", "val": ["img_000", "img_001"], "test": ["img_002"]})
    )
    runs = tmp_path / "runs"
    first = train(tiny_config(data, runs / "first", epochs=1), runs_dir=runs)
    tuned = train(
        tiny_config(
            data,
            runs / "tuned",
            epochs=1,
            lr=1e-2,
            init_from=str(first.bundle_dir),
            start_blend=0.5,
            validation_sources=[str(other)],
        ),
        runs_dir=runs,
    )
    assert tuned.read_status()["state"] == "completed", tuned.read_status()
    start = load_bundle(first.bundle_dir).model.get_weights()
    kept = load_bundle(tuned.bundle_dir)
    trained = keras.saving.load_model(RunDir(tuned.path).checkpoints_dir / "epoch-001.keras")
    assert not all(  # the checkpoint is the fine-tuning itself...
        np.allclose(a, b) for a, b in zip(start, trained.get_weights(), strict=True)
    )
    for s, t, k in zip(start, trained.get_weights(), kept.model.get_weights(), strict=True):
        np.testing.assert_allclose(k, 0.5 * s + 0.5 * t, rtol=1e-5, atol=1e-6)  # ...the bundle
    assert kept.card.training["start_blend"] == 0.5
    # The epoch was scored blended: the same score the finished (blended) bundle gets.
    row = tuned.read_metrics()[0]
    record = kept.card.training["validation_sources"]
    assert record["score"] == pytest.approx(row["val_sources_dice"], abs=1e-6)
