"""Pixel size: an image is resampled to the model's µm per pixel before prediction, and the
probabilities back to the image's own grid, so masks and metrics stay at the input's size.

A model sees nuclei at the scale it was trained on (MoNuSeg: 40×, ≈ 0.25 µm/px). A 20× scan
(≈ 0.5 µm/px) shows the same nuclei at half the size; resampling it ×2 first lets the model
see them as it learned them. Where the pixel size comes from, in order:
the caller (``--pixel-size``), the image's own metadata (:func:`image_pixel_size`: TIFF
resolution tags, OME-XML ``PhysicalSizeX``), else an estimate from the image's nuclei
(:mod:`segcore.inference.scale`, ``auto``; it falls back to the model's pixel size, no
resampling, when it finds too few nuclei). Every pixel size
lies in :data:`PIXEL_SIZE_RANGE` (:data:`MIN_PIXEL_SIZE` to :data:`MAX_PIXEL_SIZE`, defined in
:mod:`segcore.data.images` so that dataset descriptions share it).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image

from segcore.data.images import (  # the one range of pixel sizes, stated there (layer 1)
    DEFAULT_MAX_PIXELS,
    MAX_PIXEL_SIZE,
    MAX_SIDE,
    MIN_PIXEL_SIZE,
    PIXEL_SIZE_RANGE,
    in_pixel_size_range,
)
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, InvalidImageError
from segcore.inference.predict import predict_probabilities

__all__ = [
    "DEFAULT_MODEL_PIXEL_SIZE",
    "MAX_PIXEL_SIZE",
    "MIN_PIXEL_SIZE",
    "PIXEL_SIZE_RANGE",
    "RecordedPixelSize",
    "check_pixel_size",
    "grid_pixel_size",
    "image_pixel_size",
    "in_pixel_size_range",
    "predict_at_pixel_size",
    "read_pixel_size",
    "resampled_size",
]

DEFAULT_MODEL_PIXEL_SIZE = 0.25
"""µm per pixel assumed for a model whose card does not say (MoNuSeg's 40×)."""

_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre
_OME_SIZE = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"(?:[^>]*?PhysicalSizeXUnit="([^"]+)")?')
_OME_UNITS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def grid_pixel_size(pixel_size: float | None, model_pixel_size: float | None) -> float:
    """µm per pixel of an image's own grid: ``pixel_size`` when given, else the model's, else
    :data:`DEFAULT_MODEL_PIXEL_SIZE` — the size the µm settings (nucleus areas, split depth,
    densities) are converted with."""
    return float(pixel_size or model_pixel_size or DEFAULT_MODEL_PIXEL_SIZE)


def check_pixel_size(value: Any, *, what: str = "pixel size") -> float:
    """Returns ``value`` as a float; :class:`ConfigError` naming it unless in
    :data:`PIXEL_SIZE_RANGE`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{what} must be a number of µm per pixel, got {value!r}")
    if not in_pixel_size_range(value):
        raise ConfigError(
            f"{what} {value:g} µm/px is out of range: give a value in {PIXEL_SIZE_RANGE} "
            "(40× ≈ 0.25, 20× ≈ 0.5)"
        )
    return float(value)


@dataclass(frozen=True)
class RecordedPixelSize:
    """What an image file's metadata says about its pixel size.

    Attributes:
        value: the pixel size to use, µm/px, or None (none recorded, or out of range).
        recorded: what the file records, µm/px, even when out of range (None: nothing).
    """

    value: float | None = None
    recorded: float | None = None

    @property
    def note(self) -> str:
        """Why a recorded value is not used ("" when it is, or when there is none)."""
        if self.recorded is None or self.value is not None:
            return ""
        return f"The file records {self.recorded:.4g} µm/px, outside {PIXEL_SIZE_RANGE}: not used."


def read_pixel_size(source: str | os.PathLike | BinaryIO) -> RecordedPixelSize:
    """The µm per pixel recorded in an image file (a path or a binary stream).

    Reads OME-XML ``PhysicalSizeX`` (µm, nm or mm) and TIFF ``XResolution`` with
    ``ResolutionUnit`` inch or centimetre. A value outside :data:`PIXEL_SIZE_RANGE` — such as
    the 72 dpi that many programs write by default — is kept in ``recorded`` but not used. Only
    the header is read, whatever size it declares: a file Pillow cannot open (damaged, or a
    decompression bomb it refuses) records nothing here; the image readers
    (:mod:`segcore.data.images`) refuse it with their own message.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-metadata warnings: header only
            with Image.open(source) as image:
                tags = getattr(image, "tag_v2", None)
                if not tags:
                    return RecordedPixelSize()
                description = str(tags.get(270, ""))
                match = _OME_SIZE.search(description)
                if match:
                    factor = _OME_UNITS.get(match.group(2) or "µm")
                    if not factor:
                        return RecordedPixelSize()
                    size = float(match.group(1)) * factor
                else:
                    resolution, unit = tags.get(282), tags.get(296, 2)
                    if not resolution or unit not in _UM_PER_UNIT:
                        return RecordedPixelSize()
                    size = _UM_PER_UNIT[unit] / float(resolution)
    except Exception:  # a damaged header makes Pillow raise nearly anything, bombs included
        return RecordedPixelSize()
    if not math.isfinite(size):
        return RecordedPixelSize()
    return RecordedPixelSize(size if in_pixel_size_range(size) else None, size)


def image_pixel_size(source: str | os.PathLike | BinaryIO) -> float | None:
    """The µm per pixel recorded in an image file, or None when it records none that is usable
    (:func:`read_pixel_size`'s ``value``)."""
    return read_pixel_size(source).value


def resampled_size(
    height: int,
    width: int,
    *,
    pixel_size: float | None,
    model_pixel_size: float | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int] | None:
    """The ``(width, height)`` an image of ``height`` × ``width`` is resampled to for the model,
    or None when it is predicted as it is; checked against the limits before any work.

    Args:
        height, width: the image's size in pixels.
        pixel_size: the image's µm per pixel; ``None`` means the model's (no resampling).
        model_pixel_size: the model's µm per pixel; ``None`` means
            :data:`DEFAULT_MODEL_PIXEL_SIZE`.
        max_pixels: the largest resampled image accepted.

    Raises:
        ConfigError: a pixel size outside :data:`PIXEL_SIZE_RANGE`.
        InvalidImageError: the resampled image would exceed ``max_pixels`` or have a side over
            :data:`~segcore.data.images.MAX_SIDE`.
    """
    model_size = check_pixel_size(
        DEFAULT_MODEL_PIXEL_SIZE if model_pixel_size is None else model_pixel_size,
        what="the model's pixel size",
    )
    if pixel_size is None:
        return None
    factor = check_pixel_size(pixel_size) / model_size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if abs(factor - 1) < 1e-3 or size == (width, height):
        return None
    if size[0] * size[1] > max_pixels or max(size) > MAX_SIDE:
        limit = f"{max_pixels:,} pixels" if max(size) <= MAX_SIDE else f"{MAX_SIDE:,} per side"
        raise InvalidImageError(
            f"at {pixel_size:g} µm/px the {width}×{height} image becomes {size[0]}×{size[1]} "
            f"for the model ({model_size:g} µm/px), over the limit of {limit}; "
            "check the pixel size, or crop the image"
        )
    return size


def predict_at_pixel_size(
    model: Any,
    image: np.ndarray,
    preprocess: PreprocessConfig,
    *,
    pixel_size: float | None,
    model_pixel_size: float | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **tiling: Any,
) -> np.ndarray:
    """:func:`~segcore.inference.predict.predict_probabilities` of ``image`` seen at the model's
    pixel size, returned on the image's own grid (float32 ``(H, W)``).

    Args:
        model, preprocess, **tiling: as for ``predict_probabilities``.
        image: ``uint8`` RGB ``(H, W, 3)``.
        pixel_size: the image's µm per pixel; ``None`` means the model's (no resampling).
        model_pixel_size: the model's µm per pixel; ``None`` means
            :data:`DEFAULT_MODEL_PIXEL_SIZE`.
        max_pixels: the largest resampled image accepted.

    Raises:
        ConfigError: a pixel size outside :data:`PIXEL_SIZE_RANGE`.
        InvalidImageError: the resampled image would exceed ``max_pixels`` or have a side over
            :data:`~segcore.data.images.MAX_SIDE` (:func:`resampled_size`, before any work).
    """
    height, width = image.shape[:2]
    size = resampled_size(
        height,
        width,
        pixel_size=pixel_size,
        model_pixel_size=model_pixel_size,
        max_pixels=max_pixels,
    )
    if size is None:
        return predict_probabilities(model, image, preprocess, **tiling)
    factor = pixel_size / (model_pixel_size or DEFAULT_MODEL_PIXEL_SIZE)
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resampled = cv2.resize(image, size, interpolation=method)
    prob = predict_probabilities(model, resampled, preprocess, **tiling)
    back = cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR
    return np.clip(cv2.resize(prob, (width, height), interpolation=back), 0.0, 1.0)
