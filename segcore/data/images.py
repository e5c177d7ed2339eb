"""Reading images and masks into the arrays the rest of segcore expects.

Conventions, kept everywhere in the package:

* **Images** are ``uint8`` arrays of shape ``(H, W, 3)`` in **RGB** order. Grayscale images are
  repeated to three channels, an alpha channel is dropped (not composited), 16-bit images are
  scaled linearly to 8 bits (``value / 257``), and float images are taken as ``[0, 1]`` when their
  maximum is at most 1, else as ``[0, 255]``.
* **Masks** are ``uint8`` arrays of shape ``(H, W)`` holding 0 (background) or 1 (nucleus).
  Any pixel whose value is > 0 in any channel is nucleus, so 0/1, 0/255, RGB renderings and
  instance-label images (uint16 ids) all work. Palette PNGs are read as palette *indices*
  (index 0 is background), not as their display colours.
* Files are decoded as stored: EXIF orientation is **not** applied, so an image and its mask
  stay aligned pixel for pixel. Only the first page of a multi-page TIFF is read.

Every function that reads a file checks the size from the file header *before* decoding, so a
small file that would decode to gigabytes is refused cheaply: the pixel count (``max_pixels``,
default :data:`DEFAULT_MAX_PIXELS`) and each side (:data:`MAX_SIDE`, whatever ``max_pixels``
says). (Images above Pillow's decompression-bomb limit, about 179 megapixels, are refused
whatever ``max_pixels`` says.) All failures raise :class:`~segcore.errors.InvalidImageError`
naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segcore.errors import InvalidImageError

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image (height × width) accepted by default: about 64 megapixels (8000 × 8000)."""

MIN_PIXEL_SIZE = 0.01
"""Smallest pixel size accepted anywhere, µm/px (finer than any light microscope resolves: a
100× oil objective gives about 0.06)."""

MAX_PIXEL_SIZE = 10.0
"""Largest pixel size accepted anywhere, µm/px (a 1× overview is about 10)."""

PIXEL_SIZE_RANGE = f"[{MIN_PIXEL_SIZE:g}, {MAX_PIXEL_SIZE:g}] µm/px"
"""The one range of pixel sizes, as messages state it: for the library
(:func:`segcore.inference.resolution.check_pixel_size`), the command line's ``--pixel-size``, a
dataset's ``dataset.json``, a model card, the files' metadata (a value outside it is reported and
not used) and the app's µm/px box."""


def in_pixel_size_range(value: float) -> bool:
    """Whether ``value`` µm/px lies in :data:`PIXEL_SIZE_RANGE` (ends included)."""
    return MIN_PIXEL_SIZE <= value <= MAX_PIXEL_SIZE


MAX_SIDE = 32_767
"""Longest side accepted, in pixels, whatever the pixel limit: the largest canvas side of
Chrome and Firefox, half of the 65,500 that JPEG (the app's display format) can encode, and far
below OpenCV's decoding limit (1,048,576). A 70,000 × 900 strip is under 64 megapixels, but the
app could not show it after predicting it; it is refused from the header instead."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File suffixes recognised as images when scanning dataset folders."""

ImageSource = str | os.PathLike | bytes


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, bytes):
        return "<uploaded bytes>"
    return str(source)


def _read_bytes(source: ImageSource, label: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{label}: file not found")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidImageError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) == 0:
        raise InvalidImageError(f"{label}: the file is empty (0 bytes)")
    return data


def _header(data: bytes, label: str) -> tuple[int, int, str]:
    """Returns ``(height, width, pil_mode)`` read from the header only (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            # Bomb warnings, and Pillow's about corrupt metadata (EXIF, TIFF tags): the pixels
            # are checked below, and a file that cannot be decoded is refused.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                mode = img.mode
    except Image.DecompressionBombError as exc:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidImageError(
            f"{label}: more than {limit / 1e6:.0f} megapixels, above the limit of what segcore "
            "decodes; crop or downscale it first"
        ) from exc
    except Exception as exc:  # a damaged header makes Pillow raise nearly anything
        raise InvalidImageError(
            f"{label}: not a readable image (expected PNG, JPEG, TIFF or BMP; "
            f"{exc.__class__.__name__})"
        ) from exc
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"{label}: image has zero size ({width}×{height})")
    return height, width, mode


def _check_pixels(height: int, width: int, max_pixels: int | None, label: str) -> None:
    if max(height, width) > MAX_SIDE:
        side = "width" if width >= height else "height"
        raise InvalidImageError(
            f"{label}: {width}×{height} has a {side} of {max(height, width):,} pixels, over the "
            f"limit of {MAX_SIDE:,} per side (what browsers and the app's display can show); "
            "crop or downscale it first"
        )
    if max_pixels is not None and height * width > max_pixels:
        raise InvalidImageError(
            f"{label}: {width}×{height} = {height * width / 1e6:.1f} megapixels is more than the "
            f"limit of {max_pixels / 1e6:.1f} megapixels; crop or downscale it first"
        )


def image_shape(source: ImageSource, *, name: str | None = None) -> tuple[int, int]:
    """Returns ``(height, width)`` of an image file or bytes from its header, without decoding."""
    label = _describe(source, name)
    height, width, _ = _header(_read_bytes(source, label), label)
    return height, width


def _decode(
    source: ImageSource, name: str | None, max_pixels: int | None
) -> tuple[np.ndarray, str, str]:
    label = _describe(source, name)
    data = _read_bytes(source, label)
    height, width, mode = _header(data, label)
    _check_pixels(height, width, max_pixels, label)
    if mode == "P":
        # Palette image: keep the indices; OpenCV would expand them to display colours.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as img:
                    array = np.asarray(img)
        except Exception as exc:  # a damaged file makes Pillow raise nearly anything
            raise InvalidImageError(f"{label}: corrupt palette image ({exc})") from exc
        return array, label, mode
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. a header OpenCV reads differently from Pillow, over its limits
        array = None
    if array is None or array.size == 0:
        raise InvalidImageError(f"{label}: corrupt or truncated image; it could not be decoded")
    if array.shape[:2] != (height, width):
        raise InvalidImageError(
            f"{label}: decoded size {array.shape[1]}×{array.shape[0]} differs from the header's "
            f"{width}×{height}; the file is probably corrupt"
        )
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., 2::-1] if array.shape[2] == 3 else array[..., [2, 1, 0, 3]]
    return array, label, mode


def to_rgb_uint8(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Converts an image array to ``uint8`` RGB ``(H, W, 3)`` following the module conventions.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (taken as RGB) and ``(H, W, 4)`` (RGBA; alpha
    dropped) arrays of bool, unsigned integer or float type.

    Raises:
        InvalidImageError: for other shapes or dtypes, or an empty array.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise InvalidImageError(f"{name}: image has zero size {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InvalidImageError(
            f"{name}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidImageError(f"{name}: image contains NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    raise InvalidImageError(f"{name}: unsupported image dtype {array.dtype}")


def to_binary_mask(array: np.ndarray, *, name: str = "mask") -> np.ndarray:
    """Converts a mask array to ``uint8`` 0/1 ``(H, W)``: a pixel > 0 in any channel is nucleus.

    Accepts ``(H, W)`` label/binary masks and ``(H, W, C)`` renderings (C = 1, 3 or 4; a fourth
    channel is taken as alpha and ignored).

    Raises:
        InvalidImageError: for other shapes or an empty array.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise InvalidImageError(f"{name}: mask has zero size {array.shape}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array[..., : min(array.shape[2], 3)]
        return (channels > 0).any(axis=2).astype(np.uint8)
    if array.ndim != 2:
        raise InvalidImageError(
            f"{name}: expected a mask of shape (H, W) or (H, W, 3), got {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InvalidImageError(f"{name}: mask contains NaN or infinite values")
    return (array > 0).astype(np.uint8)


def read_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Reads an image file (or its bytes) as ``uint8`` RGB ``(H, W, 3)``.

    Args:
        source: a path, or the file's bytes (e.g. an upload).
        name: how to call the source in error messages; defaults to the path.
        max_pixels: refuse images with more pixels than this (checked from the header); ``None``
            for no limit.

    Raises:
        InvalidImageError: the file is missing, empty, not an image, corrupt or too large.
    """
    array, label, _ = _decode(source, name, max_pixels)
    return to_rgb_uint8(array, name=label)


def read_mask(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Reads a mask file (or its bytes) as ``uint8`` 0/1 ``(H, W)``.

    0/1, 0/255, palette PNGs, RGB renderings and 16-bit instance labels are accepted: any
    value > 0 is nucleus. Arguments and errors as for :func:`read_image`.
    """
    array, label, _ = _decode(source, name, max_pixels)
    return to_binary_mask(array, name=label)


def read_mask_array(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Reads a mask file (or its bytes) as stored: ``(H, W)`` labels or values (palette PNGs
    give their indices), or an ``(H, W, 3/4)`` RGB(A) rendering — the form instance ground truth
    needs (:func:`segcore.metrics.labels.ground_truth_instances`). Errors as for
    :func:`read_image`; a float mask with NaN or infinite values is refused too."""
    array, label, _ = _decode(source, name, max_pixels)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InvalidImageError(f"{label}: mask contains NaN or infinite values")
    return array


def check_same_size(image: np.ndarray, mask: np.ndarray, *, name: str = "image/mask") -> None:
    """Raises :class:`InvalidImageError` unless ``image`` and ``mask`` have the same H×W."""
    if image.shape[:2] != mask.shape[:2]:
        raise InvalidImageError(
            f"{name}: image is {image.shape[1]}×{image.shape[0]} but its mask is "
            f"{mask.shape[1]}×{mask.shape[0]}; they must have the same size"
        )


def encode_png(array: np.ndarray) -> bytes:
    """Encodes a ``uint8`` RGB ``(H, W, 3)`` or single-channel ``(H, W)`` array as PNG bytes."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise InvalidImageError(f"could not encode an array of shape {array.shape} as PNG")
    return buffer.tobytes()
