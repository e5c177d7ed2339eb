"""The architecture hyper-parameters of DeepLabV3+ (no TensorFlow import).

Kept apart from :mod:`segcore.network.model` so configurations (training forms, model cards) can be
read and validated without loading TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from segcore.errors import ConfigError

__all__ = ["OUTPUT_STRIDE", "ModelConfig"]

OUTPUT_STRIDE = 16
"""The network's output stride: input heights and widths must be multiples of this."""


@dataclass(frozen=True)
class ModelConfig:
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

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of the fields."""
        data = asdict(self)
        data["aspp_rates"] = list(self.aspp_rates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Builds a config from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        """Returns the config as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parses :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))
