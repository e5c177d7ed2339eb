"""The Predict page's downloads: metrics as CSV, pictures and masks as PNG.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segcore.data.images import encode_png, to_binary_mask
from segcore.errors import InvalidImageError

__all__ = ["mask_png", "metrics_csv", "png_bytes"]


def _csv_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf"
    return value


def metrics_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Writes rows of metrics as a UTF-8 CSV file with a header line.

    The columns are the keys of all rows in order of first appearance; a row without a key
    leaves that cell empty, and so does ``None``. Numbers are written with ``str`` (floats
    round-trip exactly); lines end with CRLF as in RFC 4180, with no byte-order mark. Values
    are written as they are: a text cell starting with ``=`` is not escaped against
    spreadsheet formula injection.

    Args:
        rows: one mapping per row, e.g. results of
            :meth:`~segcore.analysis.explorer.ThresholdExplorer.metrics_at`.

    Returns:
        The file's bytes.

    Raises:
        ValueError: ``rows`` is empty.
    """
    if not rows:
        raise ValueError("metrics_csv needs at least one row")
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(value) for key, value in row.items()})
    return buffer.getvalue().encode("utf-8")


def png_bytes(array) -> bytes:
    """Encodes a picture as PNG bytes (via :func:`segcore.data.images.encode_png`).

    Args:
        array: ``uint8`` RGB ``(H, W, 3)`` or ``uint8`` greyscale ``(H, W)``. A 0/1 mask
            encodes as a nearly black image: use :func:`mask_png` for masks.

    Returns:
        The PNG file's bytes.

    Raises:
        InvalidImageError: another dtype or shape, or an empty array.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.size == 0:
        raise InvalidImageError(
            f"png_bytes expects a non-empty uint8 array, got dtype {array.dtype} and shape "
            f"{array.shape}"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise InvalidImageError(
            f"png_bytes expects an RGB (H, W, 3) or greyscale (H, W) array, got {array.shape}"
        )
    return encode_png(array)


def mask_png(mask) -> bytes:
    """Encodes a binary mask as a single-channel PNG holding 0 and 255.

    :func:`segcore.data.images.read_mask` reads the file back as the same 0/1 mask.

    Args:
        mask: ``(H, W)`` mask; nonzero pixels are nucleus.

    Returns:
        The PNG file's bytes.

    Raises:
        InvalidImageError: the mask has a bad shape or is empty.
    """
    return encode_png(to_binary_mask(mask, name="mask") * np.uint8(255))
