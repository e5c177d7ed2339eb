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
