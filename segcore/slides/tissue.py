"""Finding the tissue on a slide: a mask at thumbnail resolution, so that glass is never read.

The method is the usual one for brightfield slides (as in CLAM and TIAToolbox): a tissue score
per thumbnail pixel, lightly blurred, thresholded at Otsu's value, holes filled, small pieces
dropped. The score is the HSV saturation ``(max − min) / max`` of the RGB pixel, in [0, 1]: glass
is grey-white (≈ 0–0.05 whatever its brightness), H&E-stained tissue is pink to purple (median
0.16–0.67 over the 44 MoNuSeg tiles, several organs and labs); dark grey dust and black pen
marks score low too, which is what we want.

Otsu's threshold assumes two populations and splits off pale tissue: with each of the 44
MoNuSeg tiles on glass (thumbnail at 1 µm/px), Otsu's value lay in 0.11–0.33 and kept 70–100 %
of the tile (median 96 %, under 90 % for 7 tiles), while 0.10 kept 85–100 % (median 99 %, under
90 % for 1), and no glass further than 5 µm from the tissue.
So the automatic threshold is Otsu's kept within [:data:`MIN_THRESHOLD`,
:data:`MAX_THRESHOLD`]: missing tissue loses nuclei, a little glass only costs a few tiles. A
thumbnail whose scores never reach :data:`MIN_THRESHOLD` (blank glass) or are constant gives no
Otsu at all. Give ``threshold`` to override it (the app's slider).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy import ndimage

from segcore.configs import JsonConfig
from segcore.errors import ConfigError, InvalidImageError

if TYPE_CHECKING:
    from segcore.slides.reader import Slide

logger = logging.getLogger(__name__)

MIN_THRESHOLD = 0.05
"""Lowest automatic threshold: saturation below it is glass (white balance, noise)."""

MAX_THRESHOLD = 0.10
"""Highest automatic threshold: pale tissue (eosin-light stroma, fat borders) stays in."""

FALLBACK_PIXEL_SIZE = 0.25
"""µm per level-0 pixel assumed to convert ``min_area_um2`` when the slide records none (40×)."""

BLUR_SIGMA = 1.0
"""Gaussian blur of the score before thresholding, in thumbnail pixels."""


@dataclass(frozen=True)
class TissueConfig(JsonConfig):
    """How tissue is found.

    Attributes:
        threshold: tissue when the saturation score (in [0, 1]) is above it; None for Otsu's
            (kept within [MIN_THRESHOLD, MAX_THRESHOLD]).
        min_area_um2: tissue pieces smaller than this (µm²) are dropped as specks.
        fill_holes: holes inside tissue (lumens, tears) count as tissue.
        max_side: the longer side of the thumbnail the mask is computed on.
    """

    threshold: float | None = None
    min_area_um2: float = 10_000.0
    fill_holes: bool = True
    max_side: int = 2048

    def __post_init__(self) -> None:
        if self.threshold is not None and (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not 0.0 <= self.threshold <= 1.0
        ):
            raise ConfigError(f"tissue threshold must be in [0, 1] or null, got {self.threshold!r}")
        if (
            isinstance(self.min_area_um2, bool)
            or not isinstance(self.min_area_um2, int | float)
            or not 0 <= self.min_area_um2 < math.inf
        ):
            raise ConfigError(f"min_area_um2 must be a number ≥ 0, got {self.min_area_um2!r}")
        if not isinstance(self.fill_holes, bool):
            raise ConfigError(f"fill_holes must be true or false, got {self.fill_holes!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int):
            raise ConfigError(f"max_side must be an integer, got {self.max_side!r}")
        if not 16 <= self.max_side <= 16_384:
            raise ConfigError(f"max_side must be in [16, 16384], got {self.max_side}")


@dataclass(frozen=True)
class TissueMask:
    """Where the tissue is, at thumbnail resolution.

    Attributes:
        mask: ``bool`` ``(h, w)``, True on tissue.
        downsample: level-0 pixels per mask pixel.
        threshold: the threshold used (Otsu's, clamped, or the given one).
    """

    mask: np.ndarray
    downsample: float
    threshold: float

    @property
    def fraction(self) -> float:
        """Tissue pixels / all pixels."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def area_mm2(self, pixel_size: float) -> float:
        """Tissue area in mm², given ``pixel_size`` in µm per level-0 pixel."""
        side_um = self.downsample * pixel_size
        return float(np.count_nonzero(self.mask)) * side_um * side_um / 1e6

    def covers(self, x: float, y: float, width: float, height: float) -> bool:
        """True when the level-0 box ``(x, y, width, height)`` holds any tissue."""
        ds = self.downsample
        rows, cols = self.mask.shape
        c0, r0 = max(0, math.floor(x / ds)), max(0, math.floor(y / ds))
        c1, r1 = min(cols, math.ceil((x + width) / ds)), min(rows, math.ceil((y + height) / ds))
        if c0 >= c1 or r0 >= r1:
            return False
        return bool(self.mask[r0:r1, c0:c1].any())


def tissue_score(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max − min) / max`` per pixel, ``float32`` in [0, 1] (0 on black)."""
    high = rgb.max(axis=2).astype(np.float32)
    low = rgb.min(axis=2).astype(np.float32)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)


def _auto_threshold(score: np.ndarray) -> float | None:
    """Otsu's threshold of ``score`` within the bounds; None when nothing reaches the lower."""
    from skimage.filters import threshold_otsu

    if float(score.max()) < MIN_THRESHOLD:
        return None
    if float(score.max() - score.min()) < 1e-3:  # one value: no two populations to split
        return MIN_THRESHOLD
    otsu = float(threshold_otsu(score, nbins=256))
    return min(max(otsu, MIN_THRESHOLD), MAX_THRESHOLD)


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without the 8-connected pieces of fewer than ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    return keep[labels]


def detect_tissue(
    rgb: np.ndarray,
    *,
    downsample: float,
    pixel_size: float | None,
    config: TissueConfig | None = None,
) -> TissueMask:
    """The tissue in a thumbnail.

    Args:
        rgb: ``uint8`` RGB thumbnail ``(h, w, 3)``.
        downsample: level-0 pixels per thumbnail pixel.
        pixel_size: µm per level-0 pixel, to convert ``config.min_area_um2`` to pixels; None
            when unknown: :data:`FALLBACK_PIXEL_SIZE` (0.25, 40×) is assumed for that
            conversion only.
        config: the settings; default :class:`TissueConfig`.

    Returns:
        The :class:`TissueMask` (empty on blank glass).

    Raises:
        InvalidImageError: ``rgb`` is not a ``uint8`` RGB image.
    """
    config = config or TissueConfig()
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or not rgb.size:
        raise InvalidImageError(f"tissue detection needs uint8 RGB, got {rgb.dtype} {rgb.shape}")
    score = cv2.GaussianBlur(tissue_score(rgb), (0, 0), BLUR_SIGMA)
    threshold = config.threshold
    if threshold is None:
        threshold = _auto_threshold(score)
        if threshold is None:
            logger.debug("blank thumbnail (saturation < %s everywhere): no tissue", MIN_THRESHOLD)
            return TissueMask(np.zeros(score.shape, bool), float(downsample), MIN_THRESHOLD)
    mask = score > threshold
    if config.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    side_um = downsample * (pixel_size or FALLBACK_PIXEL_SIZE)
    mask = _drop_small(mask, config.min_area_um2 / (side_um * side_um))
    return TissueMask(mask=mask, downsample=float(downsample), threshold=float(threshold))


def slide_tissue(slide: Slide, config: TissueConfig | None = None) -> tuple[np.ndarray, TissueMask]:
    """The tissue of a slide, found on its thumbnail (``config.max_side``).

    Args:
        slide: an open :class:`~segcore.slides.reader.Slide`.
        config: the settings; default :class:`TissueConfig`.

    Returns:
        ``(thumbnail RGB, mask of the same size)``.

    Raises:
        SlideError: the thumbnail cannot be read.
    """
    config = config or TissueConfig()
    thumbnail, downsample = slide.thumbnail(config.max_side)
    mask = detect_tissue(
        thumbnail, downsample=downsample, pixel_size=slide.info.pixel_size, config=config
    )
    return thumbnail, mask
