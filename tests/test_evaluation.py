"""Evaluation: per-image, pooled and mean metrics and the combined sweep, with known models."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from segcore.data.datasets import SampleSet
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, DatasetError, InvalidImageError
from segcore.evaluation.evaluate import EvaluationResult, combine_sweeps, evaluate
from segcore.inference.instances import InstanceConfig
from segcore.inference.predict import predict_probabilities
from segcore.metrics.counts import METRIC_NAMES, ConfusionCounts, binarize, confusion_counts
from segcore.metrics.labels import BINARY_NOTE
from segcore.metrics.sweep import DEFAULT_THRESHOLDS, threshold_sweep

PLAIN = PreprocessConfig(equalize="none", blur_kernel=0)
"""No equalisation or blur: the model input is exactly ``image / 255``."""
TILING = {"tile_size": 32, "overlap": 8}


class ArraySamples(SampleSet):
    """Samples held in memory (image, mask) pairs, for tests."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], ids: list[str] | None = None):
        self.pairs = pairs
        self.ids = ids or [f"s{i}" for i in range(len(pairs))]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[index]

    def describe(self, index: int) -> str:
        return f"<memory>/{self.ids[index]}"


def red_channel(batch: np.ndarray) -> np.ndarray:
    """A stand-in model whose probability is the red channel of its (unprocessed) input."""
    return batch[..., :1]


def blob_mask(height: int, width: int, centres, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for cy, cx in centres:
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    return mask


def image_from_mask(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """An RGB image whose red channel is the mask (0 or 255) and other channels noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    image[..., 0] = mask * 255
    return image


def graded_samples() -> ArraySamples:
    """Images of different sizes whose red channel is a noisy probability of their mask."""
    rng = np.random.default_rng(7)
    pairs = []
    for height, width, fraction in [(40, 50, 0.3), (70, 30, 0.6), (16, 90, 0.05)]:
        mask = (rng.random((height, width)) < fraction).astype(np.uint8)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        red = np.clip(mask * 150 + rng.normal(60, 50, mask.shape), 0, 255)
        image[..., 0] = red.astype(np.uint8)
        pairs.append((image, mask))
    return ArraySamples(pairs)


@pytest.fixture(scope="module")
def perfect_samples() -> ArraySamples:
    masks = [
        blob_mask(48, 64, [(10, 10), (30, 40), (12, 55)], 6),
        blob_mask(37, 90, [(18, 20), (18, 70)], 8),
    ]
    return ArraySamples([(image_from_mask(m, s), m) for s, m in enumerate(masks)], ["a", "b"])


def test_perfect_model_scores_one(perfect_samples):
    small = InstanceConfig(min_area_um2=1.0)  # the blobs are about 7 µm² at 0.25 µm/px
    result = evaluate(red_channel, perfect_samples, PLAIN, instances=small, **TILING)
    assert isinstance(result, EvaluationResult)
    assert result.n_images == 2 and [row["id"] for row in result.per_image] == ["a", "b"]
    for row in result.per_image:
        assert row["dice"] == row["jaccard"] == row["precision"] == row["recall"] == 1.0
        assert row["fp"] == row["fn"] == 0
    assert [row["nuclei_true"] for row in result.per_image] == [3, 2]
    assert [row["nuclei_pred"] for row in result.per_image] == [3, 2]
    assert result.pooled["dice"] == result.mean["dice"] == 1.0
    assert result.pooled["nuclei_true"] == 5 and result.mean["nuclei_true"] == 2.5
    assert all(row["pq"] == row["aji"] == row["detection_f1"] == 1.0 for row in result.per_image)
    assert result.instances["pq"] == result.instances["mean_aji"] == 1.0
    assert result.notes == (BINARY_NOTE,)  # these masks are binary: components are nuclei
    assert [row["id"] for row in result.worst(5)] == ["a", "b"]  # ties keep the order
    sweep = result.sweep
    assert sweep.thresholds.shape == (101,)
    np.testing.assert_array_equal(sweep.thresholds, DEFAULT_THRESHOLDS)
    for name in METRIC_NAMES:
        assert sweep.pooled.get(name).shape == (101,)
        assert sweep.per_image_mean.get(name).shape == (101,)
        assert sweep.per_image.get(name).shape == (2, 101)
    assert sweep.image_counts.shape == (2, 101, 4)
    assert sweep.pooled.dice[0] < 1.0  # threshold 0 marks every pixel positive
    np.testing.assert_array_equal(sweep.pooled.dice[1:], 1.0)
    assert result.best_threshold == 0.5  # ties go to the threshold closest to 0.5


def test_values_equal_the_metrics_module_on_the_same_arrays():
    samples = graded_samples()
    grid = np.linspace(0.0, 1.0, 21)
    result = evaluate(red_channel, samples, PLAIN, threshold=0.4, thresholds=grid, **TILING)
    masks, probs = [], []
    for index in range(len(samples)):
        image, mask = samples.load(index)
        prob = predict_probabilities(red_channel, image, PLAIN, **TILING)
        np.testing.assert_allclose(prob, image[..., 0] / 255.0, atol=1e-6)  # pointwise
        masks.append(mask)
        probs.append(prob)
        counts = confusion_counts(mask, binarize(prob, 0.4))
        row = result.per_image[index]
        for name in ("dice", "jaccard", "precision", "recall", "tp", "fp", "fn", "tn"):
            assert row[name] == getattr(counts, name), name
    reference = threshold_sweep(masks, probs, grid)
    np.testing.assert_array_equal(result.sweep.thresholds, grid)
    np.testing.assert_array_equal(result.sweep.image_counts, reference.image_counts)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(result.sweep.pooled.get(name), reference.pooled.get(name))
        np.testing.assert_array_equal(
            result.sweep.per_image_mean.get(name), reference.per_image_mean.get(name)
        )
    assert result.best_threshold == reference.best_threshold("dice")
    pooled = sum(
        (confusion_counts(m, binarize(p, 0.4)) for m, p in zip(masks, probs, strict=True)),
        start=ConfusionCounts(0, 0, 0, 0),
    )
    assert all(result.pooled[name] == getattr(pooled, name) for name in ("tp", "fp", "fn", "tn"))
    assert result.pooled["dice"] == pooled.dice
    assert result.threshold == 0.4


def test_pooled_and_mean_differ_when_images_differ():
    result = evaluate(red_channel, graded_samples(), PLAIN, **TILING)
    assert result.pooled["dice"] != pytest.approx(result.mean["dice"], abs=1e-3)
    assert result.mean["dice"] == pytest.approx(
        np.mean([row["dice"] for row in result.per_image]), abs=1e-12
    )
    assert not np.allclose(result.sweep.pooled.dice, result.sweep.per_image_mean.dice)
    dice = [row["dice"] for row in result.per_image]
    worst = result.worst(2)
    assert [row["dice"] for row in worst] == sorted(dice)[:2] and worst[0]["dice"] == min(dice)
    assert result.worst(0) == [] and len(result.worst(99)) == len(dice)


def test_to_dict_is_json_serialisable(perfect_samples):
    result = evaluate(red_channel, perfect_samples, PLAIN, **TILING)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["n_images"] == 2 and data["threshold"] == 0.5 and data["best_threshold"] == 0.5
    assert data["per_image"][0]["id"] == "a"
    assert set(data["sweep"]) == {"thresholds", "pooled", "mean", "tp", "fp", "fn", "tn"}
    assert len(data["sweep"]["pooled"]["dice"]) == 101
    assert data["sweep"]["mean"]["recall"] == result.sweep.per_image_mean.recall.tolist()


def test_progress_reports_every_sample(perfect_samples):
    calls = []
    evaluate(red_channel, perfect_samples, PLAIN, progress=lambda *a: calls.append(a), **TILING)
    assert calls == [(1, 2, "a"), (2, 2, "b")]


def test_keras_model_evaluates(perfect_samples):
    """A Keras stand-in (1×1 convolution picking the red channel) through the tf.function path."""
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)])
    model.layers[0].set_weights([np.array([[[[1.0], [0.0], [0.0]]]]), np.zeros(1)])
    result = evaluate(model, perfect_samples, PLAIN, **TILING)
    assert result.pooled["dice"] == 1.0


def test_bad_arguments_fail_before_any_prediction(perfect_samples):
    calls = []

    def model(batch):
        calls.append(len(batch))
        return red_channel(batch)

    with pytest.raises(ConfigError, match="threshold"):
        evaluate(model, perfect_samples, PLAIN, threshold=1.5, **TILING)
    with pytest.raises(ConfigError, match="thresholds"):
        evaluate(model, perfect_samples, PLAIN, thresholds=[0.5, 0.2], **TILING)
    with pytest.raises(DatasetError, match="empty"):
        evaluate(model, ArraySamples([]), PLAIN, **TILING)
    assert calls == []
    mismatched = ArraySamples([(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21), np.uint8))])
    with pytest.raises(InvalidImageError, match="<memory>/s0"):
        evaluate(model, mismatched, PLAIN, **TILING)


def test_combine_sweeps_equals_one_sweep():
    rng = np.random.default_rng(3)
    masks = [(rng.random((8, 9)) < 0.4).astype(np.uint8) for _ in range(4)]
    probs = [rng.random((8, 9)).astype(np.float32) for _ in range(4)]
    whole = threshold_sweep(masks, probs)
    parts = combine_sweeps([threshold_sweep(m, p) for m, p in zip(masks, probs, strict=True)])
    np.testing.assert_array_equal(parts.image_counts, whole.image_counts)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(parts.pooled.get(name), whole.pooled.get(name))
        np.testing.assert_array_equal(
            parts.per_image_mean.get(name), whole.per_image_mean.get(name)
        )
    with pytest.raises(ValueError, match="grids"):
        combine_sweeps([whole, threshold_sweep(masks, probs, [0.2, 0.8])])
    with pytest.raises(ValueError, match="at least one"):
        combine_sweeps([])
