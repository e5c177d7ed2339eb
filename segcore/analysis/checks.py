"""Input checks shared by :mod:`~segcore.analysis.overlays`, :mod:`~segcore.analysis.explorer`
and :mod:`~segcore.analysis.analyse`.

A probability map is an ``(H, W)`` (or ``(H, W, 1)``) array of reals in ``[0, 1]``; a mask is
any array :func:`~segcore.data.images.to_binary_mask` accepts, and must have the H×W of the
image (or probability map) it belongs to.

:func:`stain_notice` is a plausibility check, not a refusal: it says when an image does not
look like a brightfield H&E stain (the models are trained on H&E only), so the app can say so
rather than analyse a grayscale or fluorescence image as H&E without a word.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import numpy as np

from segcore.data.images import check_same_size, to_binary_mask
from segcore.errors import InvalidImageError

__all__ = [
    "COLOURED_CHROMA",
    "MIN_BRIGHTNESS",
    "MIN_COLOURED_FRACTION",
    "MIN_HE_HUE_FRACTION",
    "mask_like",
    "probability_map",
    "stain_notice",
]

COLOURED_CHROMA = 20
"""A pixel is *coloured* when its largest and smallest channel differ by at least this (of 255)."""

MIN_COLOURED_FRACTION = 0.05
"""Below this fraction of coloured pixels an image counts as having no colour (grayscale).
The built-in H&E samples have 0.83-0.99."""

MIN_HE_HUE_FRACTION = 0.6
"""Hematoxylin (purple) and eosin (pink) both absorb green most, so in H&E green is the weakest
channel of nearly every coloured pixel (over 0.9 in the built-in samples and every MoNuSeg
tile); below this fraction
the colours are not H&E's (e.g. the brown of DAB, or green or blue fluorescence)."""

MIN_BRIGHTNESS = 60
"""H&E is a brightfield stain: its median brightness (mean of R, G and B, of 255) is high (92-172
in the built-in samples). Below this the image is dark like fluorescence."""

_CHECK_PIXELS = 250_000  # the check looks at about this many pixels, evenly spread


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


def stain_notice(image: np.ndarray) -> str | None:
    """Why ``image`` does not look like brightfield H&E, or ``None`` when it does.

    Three simple checks, on about 250,000 pixels spread over the image (meant for the picture
    as shown, after :func:`~segcore.analysis.overlays.display_stretch`, so that a dim scan is
    judged by its colours rather than its brightness), in this order:

    1. **No colour**: under :data:`MIN_COLOURED_FRACTION` of the pixels have a chroma (largest
       minus smallest channel) of :data:`COLOURED_CHROMA` or more — a grayscale image, or a
       single-channel fluorescence image.
    2. **Not H&E's colours**: green is the weakest channel in under
       :data:`MIN_HE_HUE_FRACTION` of the coloured pixels — hematoxylin and eosin both absorb
       green most, so other stains (DAB's brown) and fluorescence (green, blue) fail this.
    3. **Dark**: the median brightness is under :data:`MIN_BRIGHTNESS` — fluorescence on a
       black background rather than stain on a light one.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)``.

    Returns:
        One sentence for the user, or ``None``.
    """
    pixels = np.asarray(image).reshape(-1, 3)
    pixels = pixels[:: max(1, len(pixels) // _CHECK_PIXELS)].astype(np.int16)
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    coloured = pixels[chroma >= COLOURED_CHROMA]
    advice = "The model was trained on H&E only, so its nuclei may be wrong."
    if len(coloured) < MIN_COLOURED_FRACTION * len(pixels):
        return (
            "This image has almost no colour (its red, green and blue are nearly equal), so it "
            f"does not look like H&E — a grayscale or fluorescence image? {advice}"
        )
    red, green, blue = coloured[:, 0], coloured[:, 1], coloured[:, 2]
    he_hue = float(np.mean((green < red) & (green < blue)))
    if he_hue < MIN_HE_HUE_FRACTION:
        return (
            f"Only {he_hue:.0%} of this image's coloured pixels have the pink or purple of H&E "
            "(green their weakest channel), so it does not look like H&E — another stain or "
            f"fluorescence? {advice}"
        )
    brightness = float(np.median(pixels.mean(axis=1)))
    if brightness < MIN_BRIGHTNESS:
        return (
            f"This image is mostly dark (median brightness {brightness:.0f} of 255), like "
            "fluorescence, while H&E is stained tissue on a light background. "
            f"{advice}"
        )
    return None
