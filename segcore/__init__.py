"""segcore: DeepLabV3+ nuclei segmentation for H&E histopathology.

The public names below are imported lazily, so ``import segcore`` (and the NumPy-only modules
such as :mod:`segcore.metrics`, :mod:`segcore.images`, :mod:`segcore.preprocessing`) do not load
TensorFlow; the model, layers and Keras metrics load it on first use.

Channel order is RGB everywhere; see :mod:`segcore.images` for the array conventions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    # model and layers (TensorFlow)
    "ConvBlock": "segcore.layers",
    "DSPP": "segcore.layers",
    "ResizeLike": "segcore.layers",
    "ImageNetNormalization": "segcore.layers",
    "build_deeplabv3plus": "segcore.model",
    "ModelConfig": "segcore.model_config",
    # Keras metrics and loss (TensorFlow)
    "dice_coef": "segcore.keras_metrics",
    "dice_coef_loss": "segcore.keras_metrics",
    "jaccard_coef": "segcore.keras_metrics",
    # preprocessing (NumPy / OpenCV)
    "PreprocessConfig": "segcore.preprocessing",
    # errors
    "SegcoreError": "segcore.errors",
    "InvalidImageError": "segcore.errors",
    "DatasetError": "segcore.errors",
    "BackboneWeightsError": "segcore.errors",
    "ConfigError": "segcore.errors",
    "BundleError": "segcore.errors",
}

__all__ = [  # noqa: RUF022 - grouped as in _EXPORTS
    "ConvBlock",
    "DSPP",
    "ResizeLike",
    "ImageNetNormalization",
    "build_deeplabv3plus",
    "ModelConfig",
    "dice_coef",
    "dice_coef_loss",
    "jaccard_coef",
    "PreprocessConfig",
    "SegcoreError",
    "InvalidImageError",
    "DatasetError",
    "BackboneWeightsError",
    "ConfigError",
    "BundleError",
]

if TYPE_CHECKING:  # pragma: no cover
    from segcore.errors import (
        BackboneWeightsError,
        BundleError,
        ConfigError,
        DatasetError,
        InvalidImageError,
        SegcoreError,
    )
    from segcore.keras_metrics import dice_coef, dice_coef_loss, jaccard_coef
    from segcore.layers import DSPP, ConvBlock, ImageNetNormalization, ResizeLike
    from segcore.model import build_deeplabv3plus
    from segcore.model_config import ModelConfig
    from segcore.preprocessing import PreprocessConfig


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
