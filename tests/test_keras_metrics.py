"""Tests of segcore.network.keras_metrics: values, references, training, save/reload, gradients."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from keras import ops  # noqa: E402

from segcore.metrics import counts, sweep  # noqa: E402
from segcore.network.keras_metrics import (  # noqa: E402
    bce_dice_loss,
    dice_coef,
    dice_coef_loss,
    jaccard_coef,
)

TINY = 1e-7


def value(tensor) -> float:
    return float(ops.convert_to_numpy(tensor))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "smooth", "dice", "jaccard"),
    [
        # both empty: (0 + s) / (0 + s) = 1 for any smooth
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0, 1.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], TINY, 1.0, 1.0),
        # identical
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, 1.0, 1.0),
        # soft: Σyp = 0.5 + 0.5 = 1, Σy = 2, Σp = 1.5
        ([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.0], 1.0, (2 + 1) / (3.5 + 1), (1 + 1) / (2.5 + 1)),
        ([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.0], 0.0, 2 / 3.5, 1 / 2.5),
        # disjoint, smoothing keeps it just above 0
        ([1, 0, 0, 0], [0, 1, 0, 0], 1.0, 1 / 3, 1 / 3),
    ],
)
def test_hand_made_values(y_true, y_pred, smooth, dice, jaccard):
    t = np.array(y_true, np.float32).reshape(1, 2, 2, 1)
    p = np.array(y_pred, np.float32).reshape(1, 2, 2, 1)
    assert value(dice_coef(t, p, smooth)) == pytest.approx(dice, rel=1e-6)
    assert value(dice_coef_loss(t, p, smooth)) == pytest.approx(1 - dice, abs=1e-6)
    assert value(jaccard_coef(t, p, smooth)) == pytest.approx(jaccard, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("p_true", "p_pred"), [(0.3, 0.4), (0.05, 0.6), (0.0, 0.2), (0.3, 0.0)])
def test_hard_inputs_match_numpy(seed, p_true, p_pred):
    rng = np.random.default_rng(seed)
    y = (rng.random((3, 16, 16, 1)) < p_true).astype(np.float32)
    p = (rng.random((3, 16, 16, 1)) < p_pred).astype(np.float32)
    # Pooled over the batch, with smooth -> 0: exactly the NumPy definitions.
    assert value(dice_coef(y, p, smooth=TINY)) == pytest.approx(counts.dice(y, p), abs=1e-6)
    assert value(jaccard_coef(y, p, smooth=TINY)) == pytest.approx(counts.jaccard(y, p), abs=1e-6)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.75])
def test_numpy_jaccard_matches_keras_binary_iou(threshold):
    rng = np.random.default_rng(11)
    y = (rng.random((2, 20, 20)) < 0.35).astype(np.float32)
    p = rng.random((2, 20, 20)).astype(np.float32)
    p[0, 0, :3] = [0.3, 0.5, 0.75]  # exactly on the thresholds: both use >=
    iou = keras.metrics.BinaryIoU(target_class_ids=[1], threshold=threshold)
    iou.update_state(y, p)
    expected = counts.jaccard(y, counts.binarize(p, threshold))
    assert value(iou.result()) == pytest.approx(expected, abs=1e-6)
    result = sweep.threshold_sweep(y, p, [threshold])
    assert result.pooled.jaccard[0] == expected


def test_float32_under_mixed_precision_inputs():
    y = np.ones((2, 4, 4, 1), np.float16)
    p = np.full((2, 4, 4, 1), 0.5, np.float16)
    for fn in (dice_coef, dice_coef_loss, jaccard_coef, bce_dice_loss):
        assert ops.convert_to_numpy(fn(y, p)).dtype == np.float32
    # Integer / boolean ground truth is cast too.
    assert value(dice_coef(np.ones((4,), bool), np.ones((4,), np.float32))) == pytest.approx(1.0)


def test_bce_dice_loss_value():
    y = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    p = np.array([0.9, 0.2, 0.6, 0.1], np.float32)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    expected = bce + 1 - (2 * 1.5 + 1) / (2 + 1.8 + 1)
    assert value(bce_dice_loss(y, p)) == pytest.approx(expected, rel=1e-5)


def test_gradients_are_finite():
    rng = np.random.default_rng(0)
    y = tf.constant((rng.random((2, 8, 8, 1)) < 0.5).astype(np.float32))
    cases = [
        rng.random((2, 8, 8, 1)).astype(np.float32),
        np.zeros((2, 8, 8, 1), np.float32),  # saturated sigmoid
        np.ones((2, 8, 8, 1), np.float32),
    ]
    for probs in cases:
        for loss_fn, truth in ((dice_coef_loss, y), (bce_dice_loss, y), (dice_coef_loss, 0 * y)):
            p = tf.Variable(probs)
            with tf.GradientTape() as tape:
                loss = loss_fn(truth, p)
            grad = tape.gradient(loss, p).numpy()
            assert np.all(np.isfinite(grad)), loss_fn.__name__
            assert np.isfinite(loss.numpy())


def _tiny_model():
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("loss", [dice_coef_loss, bce_dice_loss])
def test_compile_fit_save_and_reload(tmp_path, loss):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((4, 16, 16, 3)).astype(np.float32)
    y = (rng.random((4, 16, 16, 1)) < 0.4).astype(np.float32)
    model = _tiny_model()
    model.compile(optimizer="adam", loss=loss, metrics=[dice_coef, jaccard_coef])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert {"loss", "dice_coef", "jaccard_coef"} <= set(history.history)
    assert all(np.isfinite(v[0]) for v in history.history.values())

    path = tmp_path / "tiny.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # safe_mode default
    assert reloaded.loss is loss
    before = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    after = reloaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert after == pytest.approx(before, rel=1e-6)
    # The metric values are those of the functions applied to the predictions.
    pred = reloaded.predict(x, batch_size=4, verbose=0)
    assert after["dice_coef"] == pytest.approx(value(dice_coef(y, pred)), rel=1e-5)


def test_registered_names():
    for fn in (dice_coef, dice_coef_loss, jaccard_coef, bce_dice_loss):
        name = f"segcore>{fn.__name__}"
        assert keras.saving.get_registered_name(fn) == name
        assert keras.saving.get_registered_object(name) is fn


def test_lazy_export_from_package():
    import segcore

    assert segcore.dice_coef is dice_coef
    assert segcore.dice_coef_loss is dice_coef_loss
    assert segcore.jaccard_coef is jaccard_coef


def test_fit_under_mixed_float16_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(
        1, 3, padding="same", activation="sigmoid", dtype="mixed_float16"
    )(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=dice_coef_loss, metrics=[dice_coef])
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.float32)
    assert ops.convert_to_numpy(model(x)).dtype == np.float16
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["dice_coef"][0])
