"""The model of a run: built from the config's architecture (optionally starting from a
bundle's weights), or resumed from a checkpoint; compiled with the run's optimizer and loss."""

from __future__ import annotations

import logging

from segcore.errors import ConfigError
from segcore.training.config import TrainConfig
from segcore.training.runs import RunDir

log = logging.getLogger(__name__)


def compile_model(model, config: TrainConfig, total_steps: int) -> None:
    """Compiles ``model`` with the run's optimizer (Adam, cosine or constant rate), loss and
    metrics (Dice, Jaccard, accuracy, and the pooled Dice that picks the best epoch)."""
    import keras

    from segcore.network.keras_metrics import PooledDice, bce_dice_loss, dice_coef, jaccard_coef

    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=max(1, total_steps), alpha=0.01
        )
    else:
        lr = config.lr
    loss = "binary_crossentropy" if config.loss == "bce" else bce_dice_loss
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=loss,
        metrics=[
            dice_coef,
            jaccard_coef,
            keras.metrics.BinaryAccuracy(name="accuracy"),
            PooledDice(name="pooled_dice"),
        ],
    )


def init_from_bundle(model, ref: str) -> None:
    """Copies a bundle's weights into ``model`` (same architecture), for fine-tuning.

    Raises:
        BundleError: the bundle cannot be loaded.
        ConfigError: its architecture differs from the model's.
    """
    from segcore.bundles.loading import load_bundle

    source = load_bundle(ref)
    try:
        model.set_weights(source.model.get_weights())
    except ValueError as exc:
        raise ConfigError(
            f"init_from {ref!r}: its architecture ({source.card.architecture}) does not match "
            f"this run's model config ({exc})"
        ) from exc
    log.info("initialised the model from bundle %s (%s)", ref, source.card.name)


def freeze_batchnorm(model) -> int:
    """Sets every BatchNormalization layer of ``model`` (nested ones included) untrainable,
    which in Keras 3 also runs it in inference mode; returns how many were frozen. Call before
    compiling."""
    import keras

    frozen = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def model_for_run(run: RunDir, config: TrainConfig, state: dict | None, total_steps: int):
    """The compiled model: resumed from the checkpoint of ``state``, else built new (and
    initialised from ``config.init_from`` when set). Call inside the strategy's scope."""
    import keras

    import segcore.network.keras_metrics
    import segcore.network.layers  # noqa: F401 - registers the custom layers for loading
    from segcore.network.model import build_deeplabv3plus

    if state:
        model = keras.saving.load_model(run.checkpoints_dir / state["checkpoint"], safe_mode=True)
        log.info("resumed from %s (epoch %d)", state["checkpoint"], state["epoch"])
        return model
    model = build_deeplabv3plus(config=config.model_config())
    if config.init_from:
        init_from_bundle(model, config.init_from)
    if config.freeze_batchnorm:
        log.info("froze %d BatchNormalization layers (inference mode)", freeze_batchnorm(model))
    compile_model(model, config, total_steps)
    return model
