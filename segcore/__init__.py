"""segcore: DeepLabV3+ nuclei segmentation for H&E histopathology.

The public names below are imported lazily, so ``import segcore`` (and the NumPy-only modules
such as :mod:`segcore.metrics`, :mod:`segcore.data.images`,
:mod:`segcore.data.preprocessing`) do not load
TensorFlow; the model, layers and Keras metrics load it on first use.

Channel order is RGB everywhere; see :mod:`segcore.data.images` for the array conventions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from segcore.version import __version__  # noqa: F401 - the public version

_EXPORTS = {
    # model and layers (TensorFlow)
    "ConvBlock": "segcore.network.layers",
    "DSPP": "segcore.network.layers",
    "ResizeLike": "segcore.network.layers",
    "ImageNetNormalization": "segcore.network.layers",
    "build_deeplabv3plus": "segcore.network.model",
    "ModelConfig": "segcore.network.config",
    # Keras metrics and loss (TensorFlow)
    "dice_coef": "segcore.network.keras_metrics",
    "dice_coef_loss": "segcore.network.keras_metrics",
    "jaccard_coef": "segcore.network.keras_metrics",
    # preprocessing (NumPy / OpenCV)
    "PreprocessConfig": "segcore.data.preprocessing",
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
    from segcore.data.preprocessing import PreprocessConfig
    from segcore.errors import (
        BackboneWeightsError,
        BundleError,
        ConfigError,
        DatasetError,
        InvalidImageError,
        SegcoreError,
    )
    from segcore.network.config import ModelConfig
    from segcore.network.keras_metrics import dice_coef, dice_coef_loss, jaccard_coef
    from segcore.network.layers import DSPP, ConvBlock, ImageNetNormalization, ResizeLike
    from segcore.network.model import build_deeplabv3plus


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
