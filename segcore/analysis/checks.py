"""Input checks shared by :mod:`~segcore.analysis.overlays` and :mod:`~segcore.analysis.explorer`.

A probability map is an ``(H, W)`` (or ``(H, W, 1)``) array of reals in ``[0, 1]``; a mask is
any array :func:`~segcore.data.images.to_binary_mask` accepts, and must have the H×W of the
image (or probability map) it belongs to.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import numpy as np

from segcore.data.images import check_same_size, to_binary_mask
from segcore.errors import InvalidImageError

__all__ = ["mask_like", "probability_map"]


def probability_map(probabilities, name: str = "probabilities") -> np.ndarray:
    """Returns ``probabilities`` as a 2-D float32/float64 array checked to lie in ``[0, 1]``.

    ``(H, W, 1)`` is squeezed to ``(H, W)``; float32 and float64 arrays are returned as they
    are (not copied), float16 becomes float32 and integer arrays float64.

    Raises:
        InvalidImageError: another shape, an empty or non-real array, or values outside
            ``[0, 1]`` or NaN.
    """
    array = np.asarray(probabilities)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise InvalidImageError(
            f"{name}: expected a non-empty probability map of shape (H, W), got {array.shape}"
        )
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InvalidImageError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32 if array.dtype == np.float16 else np.float64)
    low, high = array.min(), array.max()
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise InvalidImageError(
            f"{name}: values must be probabilities in [0, 1] (after a sigmoid), got min "
            f"{float(low):g} and max {float(high):g}"
        )
    return array


def mask_like(mask, name: str, like: np.ndarray) -> np.ndarray:
    """Returns ``mask`` as a contiguous ``uint8`` 0/1 ``(H, W)`` array with the H×W of ``like``.

    Args:
        mask: the mask; nonzero pixels are nucleus.
        name: what the mask is (e.g. ``"ground truth"``), for error messages.
        like: the image or probability map the mask belongs to.

    Raises:
        InvalidImageError: the mask has a bad shape or is empty, or its size differs from
            ``like``'s (:func:`~segcore.data.images.check_same_size`).
    """
    binary = to_binary_mask(mask, name=name)
    check_same_size(like, binary, name=name)
    return np.ascontiguousarray(binary)
