"""segcore.metrics.calibration: reliability diagram, ECE, logit histograms and temperature
scaling — against direct NumPy (and scikit-learn where installed) — and its place in evaluate
and the Evaluate page's chart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.data.datasets import SampleSet
from segcore.data.preprocessing import PreprocessConfig
from segcore.evaluation.evaluate import evaluate
from segcore.inference.predict import predict_probabilities
from segcore.metrics.calibration import (
    DEFAULT_BINS,
    LogitHistogram,
    Reliability,
    bin_edges,
    expected_calibration_error,
    logits,
    probability_bins,
    reliability,
)
from segcore.metrics.counts import binarize


def direct_reliability(truth: np.ndarray, prob: np.ndarray, n_bins: int):
    """The textbook computation, one bin at a time: (counts, observed, confidence, ECE)."""
    truth = np.asarray(truth).ravel() != 0
    prob = np.asarray(prob, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts, observed, confidence, ece = [], [], [], 0.0
    for k in range(n_bins):
        upper = prob <= 1.0 if k == n_bins - 1 else prob < edges[k + 1]
        inside = (prob >= edges[k]) & upper
        counts.append(int(inside.sum()))
        if inside.any():
            observed.append(truth[inside].mean())
            confidence.append(prob[inside].mean())
            ece += inside.sum() / prob.size * abs(observed[-1] - confidence[-1])
        else:
            observed.append(np.nan)
            confidence.append(np.nan)
    return np.array(counts), np.array(observed), np.array(confidence), ece


def noisy_example(seed: int = 0, shape=(40, 30), scale: float = 0.6, bias: float = -0.4):
    """Probabilities ``sigmoid(z)`` whose labels follow ``sigmoid(scale * z + bias)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, shape)
    prob = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    truth = (rng.random(shape) < 1.0 / (1.0 + np.exp(-(scale * z + bias)))).astype(np.uint8)
    return truth, prob


def test_ece_of_a_hand_computed_example():
    prob = np.array([0.05, 0.05, 0.15, 0.95, 0.85, 0.85])
    truth = np.array([0, 1, 0, 1, 1, 0])
    diagram = reliability(truth, prob)
    assert diagram.n_bins == DEFAULT_BINS == 10 and diagram.n_pixels == 6
    assert diagram.counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 2, 1]
    assert diagram.positives.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    # bins 0, 1, 8, 9: |0.05 - 0.5|·2 + |0.15 - 0|·1 + |0.85 - 0.5|·2 + |0.95 - 1|·1, over 6
    assert diagram.ece == pytest.approx((0.9 + 0.15 + 0.7 + 0.05) / 6, abs=1e-12)
    assert diagram.max_gap == pytest.approx(0.45)
    assert np.isnan(diagram.observed[2]) and np.isnan(diagram.confidence[2])


@pytest.mark.parametrize("n_bins", [1, 7, 10, 15])
def test_reliability_equals_a_direct_numpy_computation(n_bins):
    truth, prob = noisy_example(1)
    diagram = reliability(truth, prob, n_bins)
    counts, observed, confidence, ece = direct_reliability(truth, prob, n_bins)
    np.testing.assert_array_equal(diagram.counts, counts)
    np.testing.assert_allclose(diagram.observed, observed, rtol=1e-12)
    np.testing.assert_allclose(diagram.confidence, confidence, rtol=1e-6)
    assert diagram.ece == pytest.approx(ece, rel=1e-9)
    assert expected_calibration_error(truth, prob, n_bins) == diagram.ece


def test_reliability_equals_sklearn_calibration_curve():
    calibration = pytest.importorskip("sklearn.calibration")
    truth, prob = noisy_example(2, shape=(60, 50))
    diagram = reliability(truth, prob)
    observed, confidence = calibration.calibration_curve(
        truth.ravel(), prob.ravel(), n_bins=DEFAULT_BINS, strategy="uniform"
    )
    filled = diagram.counts > 0  # sklearn leaves empty bins out
    np.testing.assert_allclose(diagram.observed[filled], observed, rtol=1e-12)
    np.testing.assert_allclose(diagram.confidence[filled], confidence, rtol=1e-6)


def test_bins_follow_the_thresholding_rule():
    edges = bin_edges(10)
    np.testing.assert_array_equal(edges, np.linspace(0, 1, 11))
    below = np.nextafter(edges, -1.0)[1:]
    prob = np.concatenate([edges, below, below.astype(np.float32).astype(np.float64)])
    for values in (prob, prob.astype(np.float32)):
        index = probability_bins(values)
        assert index.min() == 0 and index.max() == 9  # 0.0 in the first bin, 1.0 in the last
        for k in range(1, 10):  # bins >= k are exactly the pixels that prob >= edges[k] marks
            assert np.count_nonzero(index >= k) == binarize(values, edges[k]).sum(), k
    assert probability_bins(np.array([0.1]), 10)[0] == 1  # an edge opens its bin
    with pytest.raises(ValueError, match="n_bins"):
        bin_edges(0)


def test_pooling_image_by_image_equals_all_pixels_at_once():
    images = [
        noisy_example(seed, shape) for seed, shape in [(3, (7, 9)), (4, (20, 5)), (5, (1, 30))]
    ]
    truths, probs = [t for t, _ in images], [p for _, p in images]
    pooled = Reliability.empty()
    for truth, prob in images:
        pooled = pooled + reliability(truth, prob)
    whole = reliability(
        np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in probs])
    )
    np.testing.assert_array_equal(pooled.counts, whole.counts)
    np.testing.assert_array_equal(pooled.positives, whole.positives)
    np.testing.assert_allclose(pooled.prob_sums, whole.prob_sums, rtol=1e-12)
    assert pooled.ece == pytest.approx(whole.ece, rel=1e-12)
    listed = reliability(truths, probs)  # a list of images pools too
    np.testing.assert_array_equal(listed.counts, whole.counts)
    with pytest.raises(ValueError, match="cannot pool"):
        _ = pooled + Reliability.empty(5)


def test_to_dict_is_json_and_empty_bins_are_none():
    diagram = reliability(np.array([[0, 1]]), np.array([[0.05, 0.95]]), n_bins=4)
    data = json.loads(json.dumps(diagram.to_dict()))
    assert data["n_bins"] == 4 and data["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert data["counts"] == [1, 0, 0, 1] and data["positives"] == [0, 0, 0, 1]
    assert data["observed"] == [0.0, None, None, 1.0]
    assert data["ece"] == pytest.approx(0.05)
    assert Reliability.empty().ece == 0.0 and Reliability.empty().max_gap == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        reliability(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside"):
        reliability(np.zeros(3), np.array([0.1, 1.5, 0.2]))
    with pytest.raises(ValueError, match="images"):
        reliability([np.zeros(2)], [np.zeros(2), np.zeros(2)])


def test_logit_histogram_reproduces_the_exact_diagram_and_nll():
    truth, prob = noisy_example(6, shape=(80, 80))
    histogram = LogitHistogram.of(truth, prob)
    assert histogram.n_pixels == truth.size
    exact = reliability(truth, prob)
    approx = histogram.reliability()
    assert abs(approx.ece - exact.ece) < 1e-3
    assert np.abs(approx.counts - exact.counts).sum() <= 0.01 * truth.size
    z = logits(prob).ravel()
    y = truth.ravel()
    for scale, bias in [(1.0, 0.0), (0.5, 0.3)]:
        direct = np.mean(np.logaddexp(0.0, -(scale * z + bias)) * y) + np.mean(
            np.logaddexp(0.0, scale * z + bias) * (1 - y)
        )
        assert histogram.nll(scale, bias) == pytest.approx(direct, rel=1e-4)
    halves = LogitHistogram.of(truth[:40], prob[:40]) + LogitHistogram.of(truth[40:], prob[40:])
    np.testing.assert_array_equal(halves.counts, histogram.counts)
    np.testing.assert_allclose(halves.sums, histogram.sums, rtol=1e-9, atol=1e-9)


def test_logits_are_clipped_where_float32_saturates():
    z = logits(np.array([0.0, 0.5, 1.0], np.float32))
    assert z.tolist() == [-16.0, 0.0, 16.0]


def test_fitted_temperature_recovers_the_true_one_and_lowers_ece():
    truth, prob = noisy_example(7, shape=(200, 200), scale=0.5, bias=0.0)  # true T = 2
    histogram = LogitHistogram.of(truth, prob)
    temperature = histogram.fit_temperature()
    assert temperature == pytest.approx(2.0, rel=0.05)
    assert histogram.nll(1 / temperature) < histogram.nll()
    assert histogram.reliability(1 / temperature).ece < 0.5 * histogram.reliability().ece
    assert histogram.fit_temperature([1.0, 2.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="positive"):
        histogram.fit_temperature([0.0, 1.0])


def test_platt_scaling_equals_sklearn_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    truth, prob = noisy_example(8, shape=(60, 60), scale=0.7, bias=-0.5)
    histogram = LogitHistogram.of(truth, prob)
    scale, bias = histogram.fit_platt()
    label, where = np.nonzero(histogram.counts)  # the same (bin-mean) points, weighted
    z = histogram.sums[label, where] / histogram.counts[label, where]
    fit = linear_model.LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(
        z[:, None], label, sample_weight=histogram.counts[label, where]
    )
    assert scale == pytest.approx(fit.coef_[0, 0], abs=1e-4)
    assert bias == pytest.approx(fit.intercept_[0], abs=1e-4)
    assert histogram.nll(scale, bias) <= histogram.nll(1 / histogram.fit_temperature()) + 1e-12


class ArraySamples(SampleSet):
    def __init__(self, pairs):
        self.pairs = pairs
        self.ids = [f"s{i}" for i in range(len(pairs))]

    def load(self, index):
        return self.pairs[index]


def red_channel(batch: np.ndarray) -> np.ndarray:
    """A stand-in model: the probability is the red channel of its (unprocessed) input."""
    return batch[..., :1]


def test_evaluation_carries_the_calibration_of_all_pixels_pooled():
    rng = np.random.default_rng(9)
    pairs = []
    for height, width in [(40, 50), (30, 70), (16, 90)]:
        mask = (rng.random((height, width)) < 0.4).astype(np.uint8)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image[..., 0] = np.clip(mask * 120 + rng.normal(70, 60, mask.shape), 0, 255)
        pairs.append((image, mask))
    plain = PreprocessConfig(equalize="none", blur_kernel=0)
    tiling = {"tile_size": 32, "overlap": 8}
    result = evaluate(red_channel, ArraySamples(pairs), plain, **tiling)
    masks = np.concatenate([mask.ravel() for _, mask in pairs])
    probs = np.concatenate(
        [predict_probabilities(red_channel, image, plain, **tiling).ravel() for image, _ in pairs]
    )
    whole = reliability(masks, probs)
    calibration = result.calibration
    np.testing.assert_array_equal(calibration.counts, whole.counts)
    np.testing.assert_array_equal(calibration.positives, whole.positives)
    np.testing.assert_allclose(calibration.prob_sums, whole.prob_sums, rtol=1e-12)
    assert calibration.ece == pytest.approx(direct_reliability(masks, probs, 10)[3], rel=1e-9)
    assert 0.0 < calibration.ece < 1.0
    data = json.loads(json.dumps(result.to_dict()))
    assert data["calibration"]["ece"] == pytest.approx(calibration.ece)
    assert data["calibration"]["counts"] == whole.counts.tolist()


def test_reliability_figure_leaves_empty_bins_out():
    from appkit import charts

    diagram = reliability(np.array([0, 1, 1, 0]), np.array([0.05, 0.55, 0.95, 0.58]))
    fig = charts.reliability_figure(diagram, title="Reliability")
    bars, diagonal, curve = fig.data
    assert list(bars.y) == [1, 2, 1]  # bins 0, 5 and 9 hold pixels
    np.testing.assert_allclose(bars.x, [0.05, 0.55, 0.95])
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    np.testing.assert_allclose(curve.x, [0.05, 0.565, 0.95])
    np.testing.assert_allclose(curve.y, [0.0, 0.5, 1.0])
    assert fig.layout.yaxis.type == "log" and fig.layout.title.text == "Reliability"
