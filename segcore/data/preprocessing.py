"""The preprocessing DeepLabV3+ was designed with, described by one :class:`PreprocessConfig`.

Images (``uint8`` RGB, see :mod:`segcore.data.images`):

1. histogram equalisation of the **luminance** only (the L channel of CIELAB), globally or with
   CLAHE, so stain colours (the a/b chroma channels) are kept — equalising each RGB channel
   separately would shift hematoxylin and eosin hues;
2. Gaussian smoothing (kernel size and sigma);
3. scaling to the model's input range: float32 RGB in ``[0, 1]``.

Masks: any value > 0 is nucleus (binary 0/1), optionally dilated by an elliptical kernel.

Every trained model stores its config (JSON), so training and inference preprocess alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from segcore.configs import JsonConfig
from segcore.data.images import to_binary_mask, to_rgb_uint8
from segcore.errors import ConfigError

EqualizeMethod = Literal["none", "global", "clahe"]
_EQUALIZE_METHODS = ("none", "global", "clahe")


@dataclass(frozen=True)
class PreprocessConfig(JsonConfig):
    """How images and masks are prepared for the model (saved as JSON beside every model).

    Args:
        equalize: histogram equalisation of the luminance: ``"global"`` (the default),
            ``"clahe"`` (contrast-limited, adaptive) or ``"none"``.
        clahe_clip_limit: CLAHE contrast limit, defaults to 2.0.
        clahe_tile_grid: CLAHE tiles per side, defaults to 8.
        blur_kernel: Gaussian kernel side in pixels (odd); 0 or 1 turns smoothing off,
            defaults to 3.
        blur_sigma: Gaussian sigma in pixels; 0 derives it from the kernel size as OpenCV does
            (0.8 for a 3×3 kernel), defaults to 0.
        mask_dilate_kernel: side of the elliptical dilation kernel applied to masks; 0 or 1
            turns dilation off (the default).
        mask_dilate_iterations: how many times the dilation is applied, defaults to 1.
    """

    equalize: EqualizeMethod = "global"
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    blur_kernel: int = 3
    blur_sigma: float = 0.0
    mask_dilate_kernel: int = 0
    mask_dilate_iterations: int = 1

    def __post_init__(self):
        if self.equalize not in _EQUALIZE_METHODS:
            raise ConfigError(
                f"PreprocessConfig.equalize must be one of {_EQUALIZE_METHODS}, "
                f"got {self.equalize!r}"
            )
        if self.clahe_clip_limit <= 0:
            raise ConfigError("PreprocessConfig.clahe_clip_limit must be > 0")
        if self.clahe_tile_grid < 1:
            raise ConfigError("PreprocessConfig.clahe_tile_grid must be >= 1")
        if self.blur_kernel < 0 or (self.blur_kernel > 1 and self.blur_kernel % 2 == 0):
            raise ConfigError(
                "PreprocessConfig.blur_kernel must be 0 (off) or an odd size, "
                f"got {self.blur_kernel}"
            )
        if self.blur_sigma < 0:
            raise ConfigError("PreprocessConfig.blur_sigma must be >= 0")
        if self.mask_dilate_kernel < 0 or self.mask_dilate_iterations < 1:
            raise ConfigError(
                "PreprocessConfig.mask_dilate_kernel must be >= 0 and mask_dilate_iterations >= 1"
            )


def equalize_luminance(
    image: np.ndarray,
    method: EqualizeMethod = "global",
    *,
    clip_limit: float = 2.0,
    tile_grid: int = 8,
) -> np.ndarray:
    """Equalises the histogram of the CIELAB L channel of a ``uint8`` RGB image.

    Chroma (a, b) is untouched, so stain hues are kept. Returns a new ``uint8`` RGB image
    (``method="none"`` returns the input unchanged).
    """
    if method == "none":
        return image
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lightness = lab[..., 0]
    if method == "global":
        lab[..., 0] = cv2.equalizeHist(lightness)
    elif method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tile_grid, tile_grid))
        lab[..., 0] = clahe.apply(lightness)
    else:
        raise ConfigError(f"unknown equalisation method {method!r}; use one of {_EQUALIZE_METHODS}")
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def one_mapping(config: PreprocessConfig) -> bool:
    """Whether ``config``'s equalisation maps each lightness value the same way everywhere in an
    image (``"global"``, or ``"clahe"`` with one tile): one look-up table, which
    :func:`equalisation_lut` can compute from any histogram — such as a whole slide's."""
    return config.equalize == "global" or (
        config.equalize == "clahe" and config.clahe_tile_grid == 1
    )


def lightness_histogram(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The histogram of the CIELAB L channel (OpenCV's 8-bit scale) of a ``uint8`` RGB image.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)``.
        mask: optional ``(H, W)``; only pixels where it is nonzero count.

    Returns:
        int64 ``(256,)`` pixel counts; histograms of several images add up.
    """
    lightness = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)[..., 0]
    values = lightness if mask is None else lightness[np.asarray(mask) != 0]
    return np.bincount(values.ravel(), minlength=256).astype(np.int64)


def equalisation_lut(histogram: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
    """The lightness look-up table ``config``'s equalisation applies to an image whose L channel
    has ``histogram`` — OpenCV's own rule, so applying it (:func:`enhance_with_lut`) to that
    image gives exactly :func:`enhance_image`'s result (the tests check it).

    * ``"global"``: :func:`cv2.equalizeHist` — the cumulative histogram from the darkest
      occupied value, scaled to 0–255;
    * ``"clahe"`` with one tile: the histogram clipped at ``max(1, int(clip_limit · N / 256))``
      per value, the excess spread evenly (the remainder one by one from value 0, every
      ``256 // remainder`` values), then cumulated and scaled by ``255 / N``.

    A whole slide's tissue histogram gives the one mapping its tiles share, so the nuclei found
    do not depend on where the tile borders fall or on how much glass a tile holds.

    Args:
        histogram: ``(256,)`` lightness counts (:func:`lightness_histogram`).
        config: the preprocessing.

    Returns:
        ``uint8 (256,)``, or None when ``config`` equalises nothing (``"none"``).

    Raises:
        ConfigError: ``config``'s equalisation is not one mapping (CLAHE with several tiles:
            :func:`one_mapping`), or the histogram is not 256 non-negative counts.
    """
    counts = np.asarray(histogram, dtype=np.int64)
    if counts.shape != (256,) or (counts < 0).any():
        raise ConfigError(f"a lightness histogram has 256 non-negative counts, got {counts.shape}")
    if config.equalize == "none":
        return None
    if not one_mapping(config):
        raise ConfigError(
            f"CLAHE with {config.clahe_tile_grid}×{config.clahe_tile_grid} tiles adapts to each "
            "part of an image: it has no single look-up table"
        )
    total = int(counts.sum())
    if total == 0:
        return np.arange(256, dtype=np.uint8)
    if config.equalize == "global":
        return _equalize_hist_lut(counts, total)
    return _clahe_lut(counts, total, config.clahe_clip_limit)


def _equalize_hist_lut(counts: np.ndarray, total: int) -> np.ndarray:
    first = int(np.flatnonzero(counts)[0])
    if counts[first] == total:  # one value: OpenCV maps the whole image to it
        return np.full(256, first, dtype=np.uint8)
    scale = np.float32(255.0) / np.float32(total - counts[first])
    cumulative = np.cumsum(counts).astype(np.float32) - np.float32(counts[first])
    lut = np.rint(cumulative * scale)
    lut[:first] = 0
    return np.clip(lut, 0, 255).astype(np.uint8)


def _clahe_lut(counts: np.ndarray, total: int, clip_limit: float) -> np.ndarray:
    clip = max(int(clip_limit * total / 256), 1)
    clipped = np.minimum(counts, clip)
    excess = int((counts - clipped).sum())
    batch, residual = divmod(excess, 256)
    clipped = clipped + batch
    if residual:
        step = max(256 // residual, 1)
        clipped[np.arange(0, 256, step)[:residual]] += 1
    scale = np.float32(255.0) / np.float32(total)
    return np.clip(np.rint(np.cumsum(clipped).astype(np.float32) * scale), 0, 255).astype(np.uint8)


def enhance_with_lut(
    image: np.ndarray, lut: np.ndarray | None, config: PreprocessConfig
) -> np.ndarray:
    """:func:`enhance_image` with a given lightness mapping (:func:`equalisation_lut`, e.g. a
    whole slide's) in place of the image's own equalisation; ``None`` equalises nothing.

    Returns ``uint8`` RGB of the image's size.
    """
    image = to_rgb_uint8(image)
    if lut is not None:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.LUT(lab[..., 0], np.asarray(lut, dtype=np.uint8))
        image = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return smooth(image, config.blur_kernel, config.blur_sigma)


def smooth(image: np.ndarray, kernel: int = 3, sigma: float = 0.0) -> np.ndarray:
    """Gaussian-smooths an image; ``kernel`` 0 or 1 returns it unchanged.

    Borders are handled by reflection (OpenCV's default ``BORDER_REFLECT_101``).
    """
    if kernel <= 1:
        return image
    return cv2.GaussianBlur(image, (kernel, kernel), sigmaX=sigma, sigmaY=sigma)


def enhance_image(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Equalises and smooths an image, keeping ``uint8`` RGB (steps 1–2 of the module docstring).

    Accepts any array :func:`segcore.data.images.to_rgb_uint8` accepts.
    """
    image = to_rgb_uint8(image)
    image = equalize_luminance(
        image, config.equalize, clip_limit=config.clahe_clip_limit, tile_grid=config.clahe_tile_grid
    )
    return smooth(image, config.blur_kernel, config.blur_sigma)


def to_model_input(image: np.ndarray) -> np.ndarray:
    """Scales a ``uint8`` RGB image (or batch) to the model's float32 ``[0, 1]`` input range."""
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def preprocess_image(image: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Runs the full image preprocessing: returns float32 RGB ``(H, W, 3)`` in ``[0, 1]``.

    Args:
        image: an image array (see :func:`segcore.data.images.to_rgb_uint8` for accepted forms).
        config: the preprocessing to apply; defaults to ``PreprocessConfig()``.
    """
    config = config or PreprocessConfig()
    return to_model_input(enhance_image(image, config))


def preprocess_mask(mask: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Makes a mask binary (``uint8`` 0/1 ``(H, W)``) and dilates it if the config says so.

    Args:
        mask: a mask array (see :func:`segcore.data.images.to_binary_mask` for accepted forms).
        config: the preprocessing to apply; defaults to ``PreprocessConfig()``.
    """
    config = config or PreprocessConfig()
    binary = to_binary_mask(mask)
    if config.mask_dilate_kernel > 1:
        kernel = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (config.mask_dilate_kernel, config.mask_dilate_kernel)
        )
        binary = cv2.dilate(binary, kernel, iterations=config.mask_dilate_iterations)
    return binary
