"""The architecture hyper-parameters of DeepLabV3+ (no TensorFlow import).

Kept apart from :mod:`segcore.network.model` so configurations (training forms, model cards) can be
read and validated without loading TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segcore.configs import JsonConfig
from segcore.errors import ConfigError

__all__ = ["OUTPUT_STRIDE", "ModelConfig"]

OUTPUT_STRIDE = 16
"""The network's output stride: input heights and widths must be multiples of this."""


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Architecture hyper-parameters of :func:`build_deeplabv3plus` (saved with every model).

    Args:
        backbone_weights: ``"imagenet"``, ``None`` (random initialisation) or a path to a
            ResNet50 "notop" ``.h5`` weights file; defaults to ``None``.
        aspp_filters: channels of every DSPP branch, defaults to 256.
        aspp_rates: dilation rates of the DSPP 3×3 branches, defaults to ``(6, 12, 18)``.
        low_level_filters: channels of the reduced stride-4 skip features, defaults to 48.
        decoder_filters: channels of the two decoder 3×3 ConvBlocks, defaults to 256.
    """

    backbone_weights: str | None = None
    aspp_filters: int = 256
    aspp_rates: tuple[int, ...] = field(default=(6, 12, 18))
    low_level_filters: int = 48
    decoder_filters: int = 256

    def __post_init__(self):
        object.__setattr__(self, "aspp_rates", tuple(int(r) for r in self.aspp_rates))
        for name in ("aspp_filters", "low_level_filters", "decoder_filters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer")
        if not self.aspp_rates or min(self.aspp_rates) < 1:
            raise ConfigError("ModelConfig.aspp_rates must be a non-empty list of positive ints")
