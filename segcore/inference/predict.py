"""Prediction on images of any size: whole-image preprocessing, then overlapping tiles, blended.

:func:`predict_probabilities` turns one ``uint8`` RGB image of any size (37×300, 1000×1000,
3000×2000, ...) into a float32 ``(H, W)`` nucleus-probability map:

1. **Preprocessing of the whole image, once** (:func:`~segcore.data.preprocessing.enhance_image`,
   unless the caller did it, then :func:`~segcore.data.preprocessing.to_model_input`).
   Histogram equalisation depends on the pixels it sees, so equalising each tile separately
   would give neighbouring tiles different contrast and leave seams in the probability map.
2. **Reflect padding** (:func:`~segcore.data.tiling.pad_to_at_least`) of images smaller than a tile
   on either side, so every tile is ``tile_size``×``tile_size``.
3. **Tiles** of ``tile_size`` (a multiple of 16, the model's output stride) stepping by
   ``tile_size - overlap``; positions from :func:`~segcore.data.tiling.tile_starts`, whose last
   tile on each axis ends exactly at the border.
4. **Blending**: each tile's prediction is multiplied by :func:`blend_window` — 1 in the middle,
   falling linearly to ``1 / (overlap + 1)`` over the ``overlap`` pixels at each edge, never 0 —
   and added into a running sum; the window is added into a running weight. The map is
   ``sum / weight``, cropped back to ``H×W``. Where two tiles overlap by exactly ``overlap``
   pixels their windows cross-fade linearly (the two weights sum to a constant), so the less
   reliable predictions near a tile's edge count less, without seams.

Memory is bounded by the tile batch: tiles are cut ``batch_size`` at a time; besides the
preprocessed image only the ``(H, W)`` float32 sum and weight arrays grow with the image.

**The model** is a ``keras.Model`` following :mod:`segcore.network.model`'s contract, or any
callable
mapping a float32 ``(B, T, T, 3)`` NumPy batch to ``(B, T, T, 1)`` or ``(B, T, T)``
probabilities (stand-ins for tests, other back-ends). A Keras model is called through one
``tf.function`` per model and tile size with the input signature ``[None, T, T, 3]``, cached
for the model's lifetime: it is traced once (about 3 s for the full DeepLabV3+ on the 2-core
CPU), and a last, partial batch neither retraces nor needs padding. (Measured there at
8×256×256: this ``tf.function``, one with a fixed batch of 8, ``model.predict_on_batch`` and
``model.predict`` are within noise of each other; eager ``model(x, training=False)`` is 1.5–2.5×
slower. A batch of 1 costs 1/8 of a batch of 8, so padding the last batch would only add work.)

This module imports TensorFlow only when given a Keras model.
"""

from __future__ import annotations

import logging
import math
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from segcore.data.images import to_rgb_uint8
from segcore.data.preprocessing import PreprocessConfig, enhance_image, to_model_input
from segcore.data.tiling import pad_to_at_least, tile_starts
from segcore.errors import ConfigError, InvalidImageError
from segcore.inference.classical import ClassicalBaseline
from segcore.metrics.counts import binarize
from segcore.network.config import OUTPUT_STRIDE

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], Any]
"""A callable mapping a float32 ``(B, T, T, 3)`` batch to ``(B, T, T, 1)`` or ``(B, T, T)``
probabilities in ``[0, 1]``."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: tiles predicted so far and tiles in all."""


DEFAULT_TILE_SIZE = 256
DEFAULT_OVERLAP = 64
DEFAULT_BATCH_SIZE = 8

# model -> {(height, width): tf.function}; weak keys, so a model's functions die with it.
_KERAS_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_tiling(tile_size: object, overlap: object, batch_size: object) -> tuple[int, int, int]:
    tile_size = _check_int("tile_size", tile_size, OUTPUT_STRIDE)
    if tile_size % OUTPUT_STRIDE:
        raise ConfigError(
            f"tile_size must be a multiple of {OUTPUT_STRIDE} (the model's output stride), "
            f"got {tile_size}; e.g. {max(OUTPUT_STRIDE, tile_size // OUTPUT_STRIDE * 16)}"
        )
    overlap = _check_int("overlap", overlap, 0)
    if overlap >= tile_size:
        raise ConfigError(
            f"overlap ({overlap}) must be smaller than tile_size ({tile_size}); "
            f"the tiles step by tile_size - overlap pixels"
        )
    batch_size = _check_int("batch_size", batch_size, 1)
    return tile_size, overlap, batch_size


def _check_image(image: object) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 4:
        raise InvalidImageError(
            f"predict_probabilities takes one image (H, W, 3), got a batch of shape "
            f"{array.shape}; call it once per image, or use predict_batch for preprocessed "
            "tiles of equal size"
        )
    if array.ndim not in (2, 3):
        raise InvalidImageError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# Calling the model
# --------------------------------------------------------------------------------------------


def is_keras_model(model: object) -> bool:
    """Whether ``model`` is a ``keras.Model`` (without importing Keras when it was not)."""
    # A Keras model cannot exist unless keras was imported, so plain callables never load it.
    if "keras" not in sys.modules:
        return False
    import keras

    return isinstance(model, keras.Model)


def keras_function(model: Any, height: int, width: int) -> Any:
    """Returns the cached ``tf.function`` calling ``model`` on ``[None, height, width, 3]``."""
    import tensorflow as tf

    functions = _KERAS_FUNCTIONS.setdefault(model, {})
    function = functions.get((height, width))
    if function is None:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def call(batch):
            return model_ref()(batch, training=False)

        function = tf.function(
            call,
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
        )
        functions[(height, width)] = function
    return function


def _predictor(model: Any, height: int, width: int) -> Predictor:
    if is_keras_model(model):
        function = keras_function(model, height, width)
        return lambda batch: function(batch).numpy()
    if not callable(model):
        raise ConfigError(
            f"model must be a keras.Model or a callable on (B, H, W, 3) batches, "
            f"got {type(model).__name__}"
        )
    return model


def _run(predict: Predictor, batch: np.ndarray) -> np.ndarray:
    """Calls ``predict`` on a float32 batch and returns float32 ``(B, H, W)``."""
    output = np.asarray(predict(batch))
    if output.ndim == 4 and output.shape[-1] == 1:
        output = output[..., 0]
    if output.shape != batch.shape[:3]:
        raise ConfigError(
            f"the model returned shape {output.shape} for a batch of shape {batch.shape}; "
            f"expected {(*batch.shape[:3], 1)} (one probability channel)"
        )
    low, high = float(output.min()), float(output.max())
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise ConfigError(
            f"the model returned values outside [0, 1] (min {low:g}, max {high:g}); it must "
            "return probabilities (end in a sigmoid), not logits"
        )
    return output.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def blend_window(tile_size: int, overlap: int) -> np.ndarray:
    """The 2-D weight each tile's prediction gets when overlapping tiles are blended.

    Along each axis the weight is ``min(1, (i + 1) / (overlap + 1), (tile_size - i) /
    (overlap + 1))`` for pixel ``i``: 1 in the middle, a linear ramp over the ``overlap``
    pixels at each edge, and never 0, so image borders (covered by one tile only) still count.
    Two tiles overlapping by ``overlap`` pixels have weights summing to 1 across the overlap
    (a linear cross-fade). With ``overlap=0`` every weight is 1.

    Args:
        tile_size: side of the square tile.
        overlap: width of the ramp, ``0 <= overlap < tile_size``.

    Returns:
        float32 ``(tile_size, tile_size)``, the outer product of the two axes' weights.

    Raises:
        ConfigError: ``tile_size`` or ``overlap`` is out of range.
    """
    tile_size = _check_int("tile_size", tile_size, 1)
    overlap = _check_int("overlap", overlap, 0)
    if overlap >= tile_size:
        raise ConfigError(f"overlap ({overlap}) must be smaller than tile_size ({tile_size})")
    i = np.arange(tile_size, dtype=np.float64)
    ramp = np.minimum(1.0, np.minimum(i + 1.0, tile_size - i) / (overlap + 1.0))
    return np.outer(ramp, ramp).astype(np.float32)


def predict_batch(
    model: Any, images_float: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Predicts already-preprocessed images of equal size (validation tiles, training previews).

    Args:
        model: a ``keras.Model`` (called through a cached ``tf.function`` for this image size)
            or a callable on float32 ``(B, H, W, 3)`` batches; see the module docstring.
        images_float: float32 ``(N, H, W, 3)`` in ``[0, 1]``, the output of
            :func:`~segcore.data.preprocessing.preprocess_image` stacked; H and W multiples of 16.
        batch_size: images per model call, defaults to 8.

    Returns:
        float32 ``(N, H, W)`` probabilities.

    Raises:
        InvalidImageError: ``images_float`` is not a non-empty ``(N, H, W, 3)`` float array in
            ``[0, 1]`` with H and W multiples of 16.
        ConfigError: ``batch_size`` is not a positive integer, ``model`` is not callable, or
            the model returns the wrong shape or values outside ``[0, 1]``.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    images = np.asarray(images_float)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InvalidImageError(
            f"predict_batch expects a non-empty batch (N, H, W, 3), got shape {images.shape}; "
            "add a batch axis with image[None] for a single image"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidImageError(
            f"predict_batch expects preprocessed float images in [0, 1], got dtype "
            f"{images.dtype}; run segcore.data.preprocessing.preprocess_image first"
        )
    height, width = images.shape[1:3]
    if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise InvalidImageError(
            f"predict_batch: image size {width}×{height} is not a multiple of {OUTPUT_STRIDE}; "
            "crop or pad the tiles, or use predict_probabilities, which tiles any size"
        )
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 1.0):
        raise InvalidImageError(
            f"predict_batch: values must be in [0, 1], got min {low:g}, max {high:g}; "
            "run segcore.data.preprocessing.preprocess_image first"
        )
    images = images.astype(np.float32, copy=False)
    predict = _predictor(model, height, width)
    out = np.empty(images.shape[:3], dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size])
        out[start : start + batch_size] = _run(predict, batch)
    return out


def predict_probabilities(
    model: Any,
    image: np.ndarray,
    preprocess: PreprocessConfig,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    already_enhanced: bool = False,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Predicts the nucleus probability of every pixel of an image of any size.

    See the module docstring for the steps (whole-image preprocessing, reflect padding,
    overlapping tiles, blending). An image that fits in one tile (after padding to
    ``tile_size``) takes one model call and no blending.

    A caller that also needs the preprocessed picture (the Predict page shows it) computes
    ``enhance_image(image, preprocess)`` itself and passes that with ``already_enhanced=True``,
    so the whole image is preprocessed once; the probabilities are the same as for the
    original image with ``already_enhanced=False``.

    Args:
        model: a ``keras.Model`` following :mod:`segcore.network.model`'s contract, a callable
            on float32 ``(B, T, T, 3)`` batches returning ``(B, T, T, 1)`` or ``(B, T, T)``, or
            a :class:`~segcore.inference.classical.ClassicalBaseline`, which scores the whole
            image itself (no tiles, no ``preprocess``; the other arguments are ignored).
        image: ``uint8`` RGB ``(H, W, 3)`` of any size; other forms that
            :func:`segcore.data.images.to_rgb_uint8` accepts (grayscale, RGBA, 16-bit) are
            converted first.
        preprocess: the preprocessing the model was trained with.
        tile_size: side of the square tiles, a multiple of 16; defaults to 256.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile_size``; defaults
            to 64.
        batch_size: tiles per model call (bounds the memory used by the model), defaults to 8.
        progress: called as ``progress(done, total)`` after each model call, with the number of
            tiles predicted so far and the total.
        already_enhanced: ``image`` is the output of
            :func:`~segcore.data.preprocessing.enhance_image` with this ``preprocess``, so
            it is only scaled to the model's input range (``preprocess`` is still checked).
        where: optional ``(H, W)`` mask of the pixels worth predicting (a slide's tissue):
            tiles holding none of them are not given to the model, and pixels that no
            predicted tile covers get probability 0. ``None`` predicts every tile.

    Returns:
        float32 ``(H, W)`` probabilities in ``[0, 1]``.

    Raises:
        InvalidImageError: ``image`` is not one image (e.g. a 4-D batch) or is empty.
        ConfigError: ``tile_size``, ``overlap``, ``batch_size``, ``preprocess`` or ``model``
            is invalid, or the model returns the wrong shape or values outside ``[0, 1]``.
    """
    if isinstance(model, ClassicalBaseline):  # whole image, no tiles, no preprocessing
        return model.probabilities(_check_image(image))
    tile_size, overlap, batch_size = _check_tiling(tile_size, overlap, batch_size)
    if not isinstance(preprocess, PreprocessConfig):
        raise ConfigError(f"preprocess must be a PreprocessConfig, got {type(preprocess).__name__}")
    array = _check_image(image)
    # uint8 RGB; raises InvalidImageError
    enhanced = to_rgb_uint8(array) if already_enhanced else enhance_image(array, preprocess)
    height, width = enhanced.shape[:2]
    padded = to_model_input(pad_to_at_least(enhanced, tile_size))
    del enhanced
    predict = _predictor(model, tile_size, tile_size)

    stride = tile_size - overlap
    rows = tile_starts(padded.shape[0], tile_size, stride)
    cols = tile_starts(padded.shape[1], tile_size, stride)
    positions = [(y, x) for y in rows for x in cols]
    if where is not None:
        positions = _worth_predicting(positions, where, (height, width), tile_size)
        if not positions:
            return np.zeros((height, width), np.float32)
    total = len(positions)
    log.debug(
        "predicting %d×%d image: %d tile(s) of %d px, overlap %d, %d model call(s)",
        width,
        height,
        total,
        tile_size,
        overlap,
        math.ceil(total / batch_size),
    )

    if total == 1 and where is None:  # fast path: one tile, nothing to blend
        probs = _run(predict, padded[None, :tile_size, :tile_size])[0, :height, :width]
        if progress is not None:
            progress(1, 1)
        return np.array(probs, dtype=np.float32)  # a copy: the model's output may be reused

    window = blend_window(tile_size, overlap)
    summed = np.zeros(padded.shape[:2], dtype=np.float32)
    weight = np.zeros(padded.shape[:2], dtype=np.float32)
    for start in range(0, total, batch_size):
        chunk = positions[start : start + batch_size]
        batch = np.stack([padded[y : y + tile_size, x : x + tile_size] for y, x in chunk])
        predictions = _run(predict, batch)
        for (y, x), prediction in zip(chunk, predictions, strict=True):
            summed[y : y + tile_size, x : x + tile_size] += prediction * window
            weight[y : y + tile_size, x : x + tile_size] += window
        if progress is not None:
            progress(start + len(chunk), total)
    summed, weight = summed[:height, :width], weight[:height, :width]
    probs = np.zeros((height, width), np.float32)
    np.divide(summed, weight, out=probs, where=weight > 0)
    return np.clip(probs, 0.0, 1.0, out=probs)


def _worth_predicting(
    positions: list[tuple[int, int]], where: np.ndarray, shape: tuple[int, int], tile: int
) -> list[tuple[int, int]]:
    """The tile positions whose window holds a pixel of ``where`` (summed-area table)."""
    mask = np.asarray(where)
    if mask.shape != shape:
        raise InvalidImageError(
            f"where has shape {mask.shape}, the image is {shape[1]}×{shape[0]}: they must match"
        )
    table = np.zeros((shape[0] + 1, shape[1] + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask != 0, axis=0), axis=1)
    kept = []
    for y, x in positions:  # windows of the padded image, clipped to the image
        y1, x1 = min(y + tile, shape[0]), min(x + tile, shape[1])
        y0, x0 = min(y, y1), min(x, x1)
        if table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0] > 0:
            kept.append((y, x))
    return kept


def predict_mask(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Thresholds a probability map: ``uint8`` 0/1, positive where ``prob >= threshold``.

    The rule of :func:`segcore.metrics.counts.binarize`, so masks agree with the metrics'
    counts.

    Args:
        probabilities: probabilities in ``[0, 1]``, any shape.
        threshold: a number in ``[0, 1]``, defaults to 0.5.

    Returns:
        ``uint8`` array of the same shape holding 0 and 1.

    Raises:
        ValueError: ``threshold`` is outside ``[0, 1]`` or ``probabilities`` holds NaN or
            values outside ``[0, 1]``.
    """
    return binarize(probabilities, threshold)
