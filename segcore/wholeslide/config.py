"""The settings of a whole-slide run: :class:`SlideRunConfig` (saved in the run folder)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from segcore.configs import JsonConfig
from segcore.errors import ConfigError
from segcore.inference.instances import InstanceConfig
from segcore.inference.resolution import check_pixel_size
from segcore.inference.runtimes.base import AUTO, CHOICES
from segcore.slides.grid import MIN_CORE_SIZE
from segcore.slides.tissue import TissueConfig

__all__ = ["RESULT_FIELDS", "SlideRunConfig"]

MAX_CORE_SIZE = 8192
"""Largest core side accepted (a 8192² box of probabilities is 270 MB of float32)."""


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int)
    if bad or value < low or (high is not None and value > high):
        limit = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"SlideRunConfig.{name} must be an integer {limit}, got {value!r}")


@dataclass(frozen=True)
class SlideRunConfig(JsonConfig):
    """How a slide is segmented (every field but ``read_ahead`` shapes the results).

    Args:
        core_size: side of each tile's core on the work grid (the model's pixel size), in
            pixels, defaults to 1792. A multiple of the model's tile step (its input size less
            ``overlap``: 224 for a 256-pixel model) puts every tile's model tiles on one
            lattice, so the stitched probabilities equal one run over the whole slide
            (:mod:`segcore.slides.grid`). 1792 = 8 × 224 with a halo of 128 makes boxes of
            2048 = 256 + 8 × 224 (81 model tiles for 3.2 megapixels of core); larger cores
            spend less on halos but hold more memory per tile (a box's image, probabilities
            and labels: about 50 bytes per pixel, 210 MB at 2048², two or three boxes alive
            at once).
        halo: pixels of context around each core, defaults to 128 (32 µm at 0.25 µm/px):
            more than a large nucleus's diameter, and at least the model tiles' overlap, so
            the nuclei a core keeps are whole and see the context they would see in one large
            image.
        overlap: pixels shared by neighbouring model tiles inside a box, defaults to 32 (the
            Predict page and ``predict`` use 64). Measured on the 14 MoNuSeg test tiles with
            openvino-int8: pooled Dice 0.8019 at 32 against 0.8021 at 64
            (docs/benchmarks.md, "Tiling"), for 24 % less model time per megapixel here.
        chunk_tiles: tiles per resumable chunk (one part file each), defaults to 8: a stop
            or a crash loses at most this many tiles of work.
        threshold: probability threshold; None (the default) takes the model's.
        instances: :class:`~segcore.inference.instances.InstanceConfig` fields as a dict;
            None (the default) takes the model's.
        pixel_size: µm per level-0 pixel given by the user, for slides that record none (or
            record a wrong one); None (the default) takes the slide's.
        region: level-0 ``(x, y, w, h)`` to segment; None (the default): the whole slide.
        runtime: the runtime asked for (``auto``, ``keras``, ``openvino``, ...), defaults to
            ``auto``.
        flips: average the network over each model tile and its three mirror images
            (:mod:`segcore.inference.flips`), defaults to False. Better on other labs' stains
            (+0.003 to +0.018 pooled Dice on five labs' validation parts for the default), for
            four network calls per model tile instead of one.
        tissue: how the tissue is found (:class:`~segcore.slides.tissue.TissueConfig`).
        read_ahead: tiles read and resampled ahead of the model by a reader thread, defaults
            to 2; 0 reads each tile when it is needed.
    """

    core_size: int = 1792
    halo: int = 128
    overlap: int = 32
    chunk_tiles: int = 8
    threshold: float | None = None
    instances: dict[str, Any] | None = None
    pixel_size: float | None = None
    region: tuple[int, int, int, int] | None = None
    runtime: str = AUTO
    flips: bool = False
    tissue: TissueConfig = field(default_factory=TissueConfig)
    read_ahead: int = 2

    def __post_init__(self):
        _check_int("core_size", self.core_size, MIN_CORE_SIZE, MAX_CORE_SIZE)
        _check_int("halo", self.halo, 0, self.core_size)
        _check_int("overlap", self.overlap, 0, 192)
        _check_int("chunk_tiles", self.chunk_tiles, 1)
        _check_int("read_ahead", self.read_ahead, 0, 16)
        if self.threshold is not None:
            bad = isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float)
            if bad or not (math.isfinite(self.threshold) and 0 <= self.threshold <= 1):
                raise ConfigError(
                    f"SlideRunConfig.threshold must be in [0, 1] or null, got {self.threshold!r}"
                )
        if self.instances is not None:
            if not isinstance(self.instances, dict):
                raise ConfigError(
                    f"SlideRunConfig.instances must be an object, got {self.instances!r}"
                )
            InstanceConfig.from_dict(self.instances)  # checks the values
        if self.pixel_size is not None:
            check_pixel_size(self.pixel_size, what="SlideRunConfig.pixel_size")
        if self.region is not None:
            region = self.region
            if not isinstance(region, list | tuple) or len(region) != 4:
                raise ConfigError(f"SlideRunConfig.region must be x, y, w, h, got {region!r}")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in region):
                raise ConfigError(f"SlideRunConfig.region must be integers, got {region!r}")
            if region[2] <= 0 or region[3] <= 0:
                raise ConfigError(f"SlideRunConfig.region {region!r} is empty")
            object.__setattr__(self, "region", tuple(region))
        if self.runtime not in CHOICES:
            raise ConfigError(
                f"SlideRunConfig.runtime must be one of {', '.join(CHOICES)}, got {self.runtime!r}"
            )
        if not isinstance(self.flips, bool):
            raise ConfigError(f"SlideRunConfig.flips must be true or false, got {self.flips!r}")
        if isinstance(self.tissue, dict):
            object.__setattr__(self, "tissue", TissueConfig.from_dict(self.tissue))
        if not isinstance(self.tissue, TissueConfig):
            raise ConfigError(
                f"SlideRunConfig.tissue must be a TissueConfig, got {type(self.tissue).__name__}"
            )

    def instance_config(self, default: InstanceConfig) -> InstanceConfig:
        """The :class:`InstanceConfig` to use: this config's, else ``default`` (the model's)."""
        return default if self.instances is None else InstanceConfig.from_dict(self.instances)

    def result_dict(self) -> dict[str, Any]:
        """The fields that shape the results (:data:`RESULT_FIELDS`), as JSON values;
        ``flips`` only when on, so run folders made before it existed still match."""
        data = self.to_dict()
        return {name: data[name] for name in RESULT_FIELDS if name != "flips" or self.flips}


RESULT_FIELDS = (
    "core_size",
    "halo",
    "overlap",
    "chunk_tiles",
    "threshold",
    "instances",
    "pixel_size",
    "region",
    "runtime",
    "flips",
    "tissue",
)
"""The fields a resumed run must share with the run it continues (all but ``read_ahead``)."""
