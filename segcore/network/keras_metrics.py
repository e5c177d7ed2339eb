"""Soft Dice / Jaccard metrics and losses for Keras 3 training.

Use them as::

    model.compile(loss=dice_coef_loss, metrics=[dice_coef, jaccard_coef])

They work on the model's sigmoid *probabilities* (not thresholded), are written with
:mod:`keras.ops` (any backend), and compute in float32 even under a ``mixed_float16`` policy:
``y_true`` and ``y_pred`` are both cast to float32 first.

Smoothing and reduction: with ``y`` the ground truth and ``p`` the probabilities, both flattened
over the **whole batch** (pooled, not averaged per image), as in the classic DeepLabV3+ Dice::

    dice_coef    = (2·Σ(y·p) + smooth) / (Σy + Σp + smooth)
    jaccard_coef = (Σ(y·p) + smooth) / (Σy + Σp − Σ(y·p) + smooth)

``smooth`` (default 1.0) keeps the value defined, and equal to 1, when both are empty, and
softens the gradient on nearly empty batches. With ``smooth → 0`` on hard 0/1 inputs they equal
:func:`segcore.metrics.counts.dice` and :func:`segcore.metrics.counts.jaccard` on the
pooled pixels. When
Keras uses a function as a metric it averages the per-batch values over an epoch, which is not
the same as the Dice of the whole epoch; use :func:`segcore.metrics.sweep.threshold_sweep` for
evaluation figures.

All four functions are registered with ``keras.saving.register_keras_serializable`` under the
package ``"segcore"``, so a model saved after ``compile`` with them reloads with
``keras.saving.load_model(path)`` once this module has been imported.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["bce_dice_loss", "dice_coef", "dice_coef_loss", "jaccard_coef"]


def _flat_float32(y_true, y_pred):
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="segcore")
def dice_coef(y_true, y_pred, smooth=1.0):
    """Soft Dice coefficient pooled over the batch.

    Args:
        y_true: ground truth, 0/1, any shape with as many elements as ``y_pred``
            (e.g. ``(B, H, W, 1)``).
        y_pred: predicted probabilities in ``[0, 1]``.
        smooth: added to numerator and denominator (see the module docstring).

    Returns:
        A float32 scalar tensor: ``(2·Σ(y·p) + smooth) / (Σy + Σp + smooth)``, sums over all
        elements of the batch.
    """
    y_true, y_pred = _flat_float32(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    return (2.0 * intersection + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package="segcore")
def dice_coef_loss(y_true, y_pred, smooth=1.0):
    """Soft Dice loss, ``1 − dice_coef(y_true, y_pred, smooth)``.

    Args:
        y_true: ground truth, 0/1.
        y_pred: predicted probabilities in ``[0, 1]``.
        smooth: as for :func:`dice_coef`.

    Returns:
        A float32 scalar tensor in ``[0, 1]`` for inputs in ``[0, 1]``.
    """
    return 1.0 - dice_coef(y_true, y_pred, smooth)


@keras.saving.register_keras_serializable(package="segcore")
def jaccard_coef(y_true, y_pred, smooth=1.0):
    """Soft Jaccard index (IoU) pooled over the batch.

    Args:
        y_true: ground truth, 0/1, with as many elements as ``y_pred``.
        y_pred: predicted probabilities in ``[0, 1]``.
        smooth: added to numerator and denominator (see the module docstring).

    Returns:
        A float32 scalar tensor: ``(Σ(y·p) + smooth) / (Σy + Σp − Σ(y·p) + smooth)``, sums over
        all elements of the batch.
    """
    y_true, y_pred = _flat_float32(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    union = ops.sum(y_true) + ops.sum(y_pred) - intersection
    return (intersection + smooth) / (union + smooth)


@keras.saving.register_keras_serializable(package="segcore")
def bce_dice_loss(y_true, y_pred, smooth=1.0):
    """Binary cross-entropy (mean over all pixels) plus the soft Dice loss.

    Args:
        y_true: ground truth, 0/1, with as many elements as ``y_pred``.
        y_pred: predicted probabilities in ``[0, 1]`` (not logits); Keras clips them to
            ``[ε, 1 − ε]`` inside the cross-entropy.
        smooth: as for :func:`dice_coef`.

    Returns:
        A float32 scalar tensor: ``mean(BCE) + 1 − dice_coef``.
    """
    flat_true, flat_pred = _flat_float32(y_true, y_pred)
    bce = ops.mean(keras.losses.binary_crossentropy(flat_true, flat_pred))
    return bce + dice_coef_loss(flat_true, flat_pred, smooth)


@keras.saving.register_keras_serializable(package="segcore")
class PooledDice(keras.metrics.Metric):
    """Hard Dice over all pixels seen in an epoch (counts accumulated, not batch means).

    Pixels are positive when ``y_pred >= threshold`` (the rule of
    :func:`segcore.metrics.counts.binarize`) and ``y_true >= 0.5``. The result is
    ``2·TP / (2·TP + FP + FN)``, and 1.0 when there are no positives at all (the convention of
    :func:`segcore.metrics.counts.dice`). Used to pick the best epoch on validation data.

    Args:
        threshold: float. Probability threshold, defaults to 0.5.
        name: str. Metric name, defaults to ``"pooled_dice"``.
        **kwargs: base ``keras.metrics.Metric`` arguments.
    """

    def __init__(self, threshold: float = 0.5, name: str = "pooled_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp", dtype="float64")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp", dtype="float64")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn", dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float64")
        pred = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), self.threshold), "float64")
        self.tp.assign_add(ops.sum(truth * pred))
        self.fp.assign_add(ops.sum((1.0 - truth) * pred))
        self.fn.assign_add(ops.sum(truth * (1.0 - pred)))

    def result(self):
        denominator = 2.0 * self.tp + self.fp + self.fn
        return ops.cast(
            ops.where(denominator > 0, 2.0 * self.tp / ops.maximum(denominator, 1.0), 1.0),
            "float32",
        )

    def reset_state(self):
        for variable in (self.tp, self.fp, self.fn):
            variable.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
