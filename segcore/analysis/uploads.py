"""Uploaded files: their bytes decoded into an image and an optional ground-truth mask, with
errors that name the file (:func:`read_upload`), and the content hash that identifies them in
caches (:func:`digest`).

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import hashlib

import numpy as np

from segcore.data.annotations import annotation_labels, is_annotation_file
from segcore.data.images import DEFAULT_MAX_PIXELS, read_image, read_mask_array
from segcore.errors import InvalidImageError

__all__ = ["digest", "read_upload"]


def digest(*parts: bytes | str) -> str:
    """A short content hash (SHA-256, 16 hex digits) identifying an input for caching."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def read_upload(
    image_bytes: bytes,
    image_name: str,
    mask_bytes: bytes | None = None,
    mask_name: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decodes an uploaded image and its optional ground-truth mask.

    Args:
        image_bytes: the image file's bytes (PNG, JPEG, TIFF, BMP).
        image_name: its file name, used in error messages.
        mask_bytes: the mask file's bytes, or ``None``; binary, 0/255, palette, instance
            labels or a colour rendering (any nonzero pixel is nucleus), or a QuPath GeoJSON
            export of the image's objects when ``mask_name`` ends in ``.geojson`` or ``.json``
            (rasterised at the image's size: :mod:`segcore.data.annotations`).
        mask_name: its file name.
        max_pixels: the largest accepted image.

    Returns:
        ``(image, mask)``: ``uint8`` RGB ``(H, W, 3)`` and the mask as stored (``(H, W)`` values
        or labels, ``int32`` instance labels from a GeoJSON, or an ``(H, W, 3/4)``
        rendering; read it with :func:`segcore.metrics.labels.ground_truth_instances`), or
        ``None``.

    Raises:
        InvalidImageError: a file is empty, not an image, corrupt or too large, the mask's
            size differs from the image's, or a GeoJSON mask is not usable (not GeoJSON, no
            outlines, outlines beyond this image); the message names the file.
    """
    image = read_image(image_bytes, name=image_name, max_pixels=max_pixels)
    if mask_bytes is None:
        return image, None
    mask_label = mask_name or "mask"
    if mask_name and is_annotation_file(mask_name):
        return image, annotation_labels(mask_bytes, image.shape[:2], name=mask_label)
    mask = read_mask_array(mask_bytes, name=mask_label, max_pixels=max_pixels)
    if mask.shape[:2] != image.shape[:2]:
        raise InvalidImageError(
            f"{mask_label}: mask is {mask.shape[1]}×{mask.shape[0]} but the image "
            f"{image_name} is {image.shape[1]}×{image.shape[0]}; upload the mask of this image"
        )
    return image, mask
