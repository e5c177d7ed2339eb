"""The DeepLabV3+ network on a ResNet50 backbone, assembled from :mod:`segcore.network.layers`.

Contract of :func:`build_deeplabv3plus`:

* **Input**: a batch of RGB images, float32 in ``[0, 1]`` (the output of
  :func:`segcore.data.preprocessing.preprocess_image`), shape ``(B, H, W, 3)`` with H and W
  multiples
  of 16 (the backbone's output stride). The ImageNet normalisation ResNet50 expects happens
  inside the model (:class:`~segcore.network.layers.ImageNetNormalization`).
* **Encoder**: Keras' ResNet50. High-level features at output stride 16 (``conv4_block6_2_relu``,
  256 channels) go through :class:`~segcore.network.layers.DSPP`; low-level features at stride 4
  (``conv2_block3_2_relu``, 64 channels) are reduced by a 1×1
  :class:`~segcore.network.layers.ConvBlock`.
* **Decoder**: DSPP output upsampled to stride 4, concatenated with the low-level features, two
  3×3 ConvBlocks, bilinear upsampling to the input size, a 1×1 convolution to one channel and a
  sigmoid computed in float32 (also under a mixed-precision policy).
* **Output**: nucleus probability, shape ``(B, H, W, 1)``, float32.

With the defaults the model has 11,852,353 parameters, like the keras.io DeepLabV3+ example.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
from keras import layers

from segcore.errors import BackboneWeightsError, ConfigError
from segcore.network.config import OUTPUT_STRIDE, ModelConfig
from segcore.network.layers import DSPP, ConvBlock, ImageNetNormalization, ResizeLike

log = logging.getLogger(__name__)


HIGH_LEVEL_LAYER = "conv4_block6_2_relu"
LOW_LEVEL_LAYER = "conv2_block3_2_relu"

RESNET50_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_NOTOP_FILE
)
RESNET50_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
DOWNLOAD_TIMEOUT_S = 15.0


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def resolve_backbone_weights(backbone_weights: str | os.PathLike | None) -> str | None:
    """Returns the local ``.h5`` path to load into ResNet50, or ``None`` for random weights.

    ``None`` never touches the network. ``"imagenet"`` uses Keras' cache
    (``$KERAS_HOME/models``, default ``~/.keras/models``) when the file is there; otherwise it tries
    one download with a short timeout and raises :class:`BackboneWeightsError` on failure.

    Raises:
        BackboneWeightsError: the ImageNet weights are neither cached nor downloadable, or a
            given path does not exist.
    """
    if backbone_weights is None:
        return None
    if str(backbone_weights).lower() != "imagenet":
        path = Path(backbone_weights)
        if not path.is_file():
            raise BackboneWeightsError(f"{path}: backbone weights file not found")
        return str(path)
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    cache = keras_home / "models"
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return keras.utils.get_file(
                RESNET50_NOTOP_FILE,
                RESNET50_NOTOP_URL,
                cache_dir=str(keras_home),
                cache_subdir="models",
                file_hash=RESNET50_NOTOP_MD5,
            )
    except Exception as exc:
        raise BackboneWeightsError(
            "ImageNet weights for ResNet50 are not cached and could not be downloaded "
            f"({exc.__class__.__name__}: {str(exc)[:200]}). Either train from scratch with "
            "backbone_weights=None (CLI: --backbone-weights none), or download "
            f"{RESNET50_NOTOP_URL} on a machine with internet and put it at "
            f"{cache / RESNET50_NOTOP_FILE}, or pass the file's path as backbone_weights."
        ) from exc


def build_deeplabv3plus(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    config: ModelConfig | None = None,
    *,
    name: str = "deeplabv3plus",
    **fields: Any,
) -> keras.Model:
    """Builds DeepLabV3+ (ResNet50 encoder) for binary nucleus segmentation.

    See the module docstring for the input/output contract.

    Args:
        input_shape: ``(H, W, 3)``; ``None`` for H and W (the default) makes one model that
            predicts on any size that is a multiple of 16.
        config: the architecture, defaults to ``ModelConfig()``. Its ``backbone_weights``:
            ``"imagenet"``, ``None`` or a path to a ResNet50 notop ``.h5`` file. ``None`` never
            uses the network; ``"imagenet"`` without a cached file and without internet fails
            within seconds with :class:`BackboneWeightsError`.
        name: model name.
        **fields: :class:`ModelConfig` fields overriding ``config``'s (``backbone_weights``,
            ``aspp_filters``, ``aspp_rates``, ``low_level_filters``, ``decoder_filters``).

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        ConfigError: ``input_shape`` is not ``(H, W, 3)`` with H, W multiples of 16 or ``None``,
            or ``fields`` names an unknown or invalid field.
        BackboneWeightsError: see ``config``.

    Example:
        >>> model = build_deeplabv3plus(backbone_weights=None)
        >>> model.predict(np.zeros((1, 256, 256, 3))).shape
        (1, 256, 256, 1)
    """
    config = config or ModelConfig()
    if fields.get("backbone_weights") is not None:
        fields["backbone_weights"] = str(fields["backbone_weights"])
    if fields:
        config = ModelConfig.from_dict({**config.to_dict(), **fields})
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ConfigError(f"input_shape must be (H, W, 3) for RGB images, got {input_shape}")
    for side in input_shape[:2]:
        if side is not None and (side < OUTPUT_STRIDE or side % OUTPUT_STRIDE):
            raise ConfigError(
                f"input_shape {input_shape}: height and width must be multiples of "
                f"{OUTPUT_STRIDE} (or None), e.g. 256×256"
            )
    weights_path = resolve_backbone_weights(config.backbone_weights)

    inputs = keras.Input(shape=input_shape, name="image")
    normalized = ImageNetNormalization(name="imagenet_normalization")(inputs)
    backbone = keras.applications.ResNet50(
        include_top=False, weights=weights_path, input_tensor=normalized
    )
    high = backbone.get_layer(HIGH_LEVEL_LAYER).output
    low = backbone.get_layer(LOW_LEVEL_LAYER).output

    x = DSPP(config.aspp_filters, config.aspp_rates, name="dspp")(high)
    x = ResizeLike(name="upsample_to_stride4")([x, low])
    skip = ConvBlock(config.low_level_filters, kernel_size=1, name="low_level_reduce")(low)
    x = layers.Concatenate(axis=-1, name="decoder_concat")([x, skip])
    x = ConvBlock(config.decoder_filters, 3, name="decoder_conv1")(x)
    x = ConvBlock(config.decoder_filters, 3, name="decoder_conv2")(x)
    x = ResizeLike(name="upsample_to_input")([x, inputs])
    x = layers.Conv2D(1, kernel_size=1, padding="same", name="logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="mask")(x)
    model = keras.Model(inputs, outputs, name=name)
    log.debug("built %s with %d parameters", name, model.count_params())
    return model
