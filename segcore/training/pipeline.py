"""tf.data input pipelines for training and evaluation.

Both pipelines start from a :class:`~segcore.data.datasets.SampleSet` and run

    decode → preprocess → [random crop → augmentation] → batch → prefetch

Decoding and the deterministic preprocessing (:func:`~segcore.data.preprocessing.enhance_image`,
:func:`~segcore.data.preprocessing.preprocess_mask`) happen once per image, in a thread pool, when
the pipeline is made; the images are kept in memory as ``uint8``. Random crops and augmentation run
in TensorFlow, in parallel, every epoch.

Stain jitter in HED space (``AugmentConfig.hed_*``, :func:`hed_transform`) acts on the
preprocessed crop, the image the model sees — unless ``AugmentConfig.raw_crops``: then the
images are kept raw and each crop is made in the generator (:func:`raw_context_crop`, the recipe
that made the v3/v4 defaults): a context around it is cut from the raw tile, stain-jittered,
resampled by the crop's scale and preprocessed like a whole image at inference, and the crop is
cut from it; TensorFlow then only flips, rotates and colour-jitters it.

Randomness is keyed by ``(seed, epoch)``: the same seed gives the same crops and augmentations
whatever the parallelism, and epoch ``k`` can be reproduced on its own (for resuming).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf
from skimage.color import hed_from_rgb, rgb_from_hed

from segcore.data.datasets import SampleSet, load_samples
from segcore.data.preprocessing import PreprocessConfig, enhance_image, preprocess_mask
from segcore.data.tiling import extract_tiles, pad_to_at_least
from segcore.errors import ConfigError
from segcore.training.config import AugmentConfig

DEFAULT_AUGMENT = AugmentConfig()
"""The augmentation of :func:`make_training_dataset` unless told otherwise (immutable)."""


@dataclass
class TrainingData:
    """A training pipeline and how many batches make one epoch.

    Attributes:
        dataset: yields ``(images, masks)`` batches: float32 ``(B, S, S, 3)`` in ``[0, 1]`` and
            float32 ``(B, S, S, 1)`` 0/1. Each pass over it is one epoch.
        steps_per_epoch: batches per pass.
        crops_per_epoch: random crops per pass.
    """

    dataset: tf.data.Dataset
    steps_per_epoch: int
    crops_per_epoch: int


def prepare_samples(
    samples: SampleSet, config: PreprocessConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decodes and preprocesses every sample: ``[(enhanced uint8 RGB, uint8 0/1 mask), ...]``."""
    return [
        (enhance_image(image, config), preprocess_mask(mask, config))
        for image, mask in load_samples(samples)
    ]


def default_crops_per_epoch(shapes: list[tuple[int, int]], size: int) -> int:
    """As many crops as tiles of side ``size`` are needed to cover every image once."""
    return sum(math.ceil(h / size) * math.ceil(w / size) for h, w in shapes)


def make_training_dataset(
    samples: SampleSet,
    config: PreprocessConfig,
    *,
    image_size: int = 256,
    batch_size: int = 8,
    augment: AugmentConfig | None = DEFAULT_AUGMENT,
    crops_per_epoch: int | None = None,
    seed: int = 0,
    first_epoch: int = 0,
    replay: SampleSet | None = None,
    replay_fraction: float = 0.0,
) -> TrainingData:
    """Builds the training pipeline: random ``image_size`` crops, augmented, batched.

    Args:
        samples: the training samples.
        config: preprocessing of images and masks.
        image_size: side of the square crops (a multiple of 16).
        batch_size: crops per batch; the last batch of an epoch may be smaller.
        augment: augmentation to apply, or ``None`` for plain random crops.
        crops_per_epoch: crops per pass; defaults to :func:`default_crops_per_epoch`.
        seed: seed of every random choice.
        first_epoch: number of the epoch the first pass produces (later passes count up), so a
            resumed run sees the same data as an uninterrupted one.
        replay: other training samples (:mod:`segcore.training.replay`), prepared and
            augmented as ``samples``; each crop comes from them with probability
            ``replay_fraction``, else from ``samples`` (each set's images equally likely).
        replay_fraction: see ``replay``; 0 (or no ``replay``) draws exactly as without them.

    Raises:
        ConfigError: empty sample set or invalid sizes.
    """
    if len(samples) == 0:
        raise ConfigError("the training set is empty")
    if image_size < 16 or image_size % 16 or batch_size < 1:
        raise ConfigError("image_size must be a multiple of 16 and batch_size >= 1")
    raw = augment is not None and augment.raw_crops
    replaying = replay is not None and len(replay) > 0 and replay_fraction > 0

    def prepare(sample_set):
        if raw:  # preprocessed crop by crop in the generator; TensorFlow does the rest
            return [
                (image, preprocess_mask(mask, config)) for image, mask in load_samples(sample_set)
            ]
        return prepare_samples(sample_set, config)

    prepared = prepare(samples)
    own = len(prepared)
    crops = crops_per_epoch or default_crops_per_epoch(
        [mask.shape for _, mask in prepared], image_size
    )
    if replaying:
        prepared += prepare(replay)
    in_tf = (
        dataclasses.replace(augment, scale_min=1.0, scale_max=1.0, hed_probability=0.0)
        if raw
        else augment
    )
    images = [pad_to_at_least(img, image_size) for img, _ in prepared]
    masks = [pad_to_at_least(mask, image_size) for _, mask in prepared]
    epochs = itertools.count(first_epoch)

    def generate():
        rng = np.random.default_rng([seed, next(epochs)])
        picks = rng.integers(0, own, size=crops)
        seeds = rng.integers(0, 2**31 - 1, size=(crops, 2), dtype=np.int64)
        if replaying:  # drawn after the above, so a run without replay draws as before
            replayed = rng.random(crops) < replay_fraction
            others = rng.integers(own, len(images), size=crops)
            picks = np.where(replayed, others, picks)
        for index, pair in zip(picks, seeds, strict=True):
            if raw:
                crop_rng = np.random.default_rng(pair)
                image, mask = raw_context_crop(
                    images[index], masks[index], crop_rng, image_size, augment, config
                )
                yield image, mask, pair
            else:
                yield images[index], masks[index], pair

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.uint8),
            tf.TensorSpec((None, None), tf.uint8),
            tf.TensorSpec((2,), tf.int64),
        ),
    ).apply(tf.data.experimental.assert_cardinality(crops))  # so Keras knows the epoch length

    def crop_and_augment(image, mask, pair_seed):
        return _random_crop_augment(image, mask, pair_seed, image_size, in_tf)

    dataset = (
        dataset.map(crop_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return TrainingData(dataset, math.ceil(crops / batch_size), crops)


def raw_context_crop(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    size: int,
    augment: AugmentConfig,
    config: PreprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop made from the raw image, as the v3/v4 defaults were trained.

    A crop of side ``size / scale`` (scale log-uniform in ``[augment.scale_min,
    augment.scale_max]``) and a square context of ``augment.context`` times that side around it
    are drawn; the context's stain is jittered in HED space on ``augment.hed_probability`` of
    crops, it is resampled so the crop becomes ``size``², preprocessed
    (:func:`~segcore.data.preprocessing.enhance_image`: equalised over the context, as inference
    equalises a whole image) and the crop cut out. Returns ``(uint8 RGB (size, size, 3), uint8
    mask (size, size))``; ``image`` and ``mask`` must be at least ``size`` on each side.
    """
    height, width = mask.shape
    scale = math.exp(rng.uniform(math.log(augment.scale_min), math.log(augment.scale_max)))
    side = min(round(size / scale), height, width)
    context = min(round(augment.context * side), height, width)
    cy, cx = rng.integers(0, height - context + 1), rng.integers(0, width - context + 1)
    region = image[cy : cy + context, cx : cx + context]
    if rng.random() < augment.hed_probability:
        factors = rng.uniform(1 - augment.hed_scale, 1 + augment.hed_scale, 3)
        shifts = rng.uniform(-augment.hed_shift, augment.hed_shift, 3)
        region = hed_transform_uint8(region, factors, shifts)
    y, x = rng.integers(0, context - side + 1), rng.integers(0, context - side + 1)
    factor = size / side
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    region = enhance_image(
        cv2.resize(region, None, fx=factor, fy=factor, interpolation=method), config
    )
    region = pad_to_at_least(region, size)
    top = max(0, min(round(y * factor), region.shape[0] - size))
    left = max(0, min(round(x * factor), region.shape[1] - size))
    crop = region[top : top + size, left : left + size]
    truth = mask[cy + y : cy + y + side, cx + x : cx + x + side]
    truth = cv2.resize(truth, (size, size), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(crop), truth


def _random_crop_augment(image, mask, seed, size: int, augment: AugmentConfig | None):
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    stacked = tf.concat([image, mask[..., None]], axis=-1)  # crop uint8 first: cheap
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    if augment is not None and (augment.scale_min != 1 or augment.scale_max != 1):
        scale = tf.random.stateless_uniform(
            (), seeds[0], math.log(augment.scale_min), math.log(augment.scale_max)
        )
        side = tf.cast(tf.round(size / tf.exp(scale)), tf.int32)
        side = tf.minimum(side, tf.minimum(height, width))
    else:
        side = tf.constant(size, tf.int32)
    crop = tf.image.stateless_random_crop(stacked, tf.stack([side, side, 4]), seeds[1])
    crop_image = tf.image.resize(tf.cast(crop[..., :3], tf.float32) / 255.0, (size, size))
    crop_mask = tf.cast(tf.image.resize(crop[..., 3:], (size, size), method="nearest"), tf.float32)
    if augment is not None:
        crop_image, crop_mask = _augment(crop_image, crop_mask, seeds, augment)
    crop_image = tf.ensure_shape(tf.clip_by_value(crop_image, 0.0, 1.0), (size, size, 3))
    return crop_image, tf.ensure_shape(crop_mask, (size, size, 1))


_HED_FROM_RGB = tf.constant(hed_from_rgb, tf.float32)
_RGB_FROM_HED = tf.constant(rgb_from_hed, tf.float32)
_LOG_ADJUST = math.log(1e-6)  # skimage's constant in rgb2hed/hed2rgb


def hed_transform(image, scale, shift):
    """Rescales and shifts an RGB image's stains in HED optical-density space (TensorFlow).

    The same arithmetic as ``skimage.color.hed2rgb(rgb2hed(image) * scale + shift)``: ``image``
    float ``(..., 3)`` in ``[0, 1]``, ``scale`` and ``shift`` of shape ``(3,)`` for the
    hematoxylin, eosin and DAB channels; the result is clipped to ``[0, 1]``.
    """
    density = tf.math.log(tf.maximum(image, 1e-6)) / _LOG_ADJUST
    stains = tf.maximum(tf.tensordot(density, _HED_FROM_RGB, axes=1), 0.0)
    stains = stains * scale + shift
    rgb = tf.exp(-tf.tensordot(stains * -_LOG_ADJUST, _RGB_FROM_HED, axes=1))
    return tf.clip_by_value(rgb, 0.0, 1.0)


def hed_transform_uint8(image: np.ndarray, scale, shift) -> np.ndarray:
    """:func:`hed_transform` in NumPy for a uint8 RGB image (rounded back to uint8)."""
    density = np.log(np.maximum(image.astype(np.float32) / 255.0, 1e-6)) / _LOG_ADJUST
    stains = np.maximum(density @ hed_from_rgb.astype(np.float32), 0.0)
    stains = stains * np.float32(scale) + np.float32(shift)
    rgb = np.exp(-((stains * -_LOG_ADJUST) @ rgb_from_hed.astype(np.float32)))
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _hed_jitter(image, seed, augment: AugmentConfig):
    """:func:`hed_transform` with random factors, on ``augment.hed_probability`` of crops."""
    use, scale_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    scale = tf.random.stateless_uniform(
        (3,), scale_seed, 1 - augment.hed_scale, 1 + augment.hed_scale
    )
    shift = tf.random.stateless_uniform((3,), shift_seed, -augment.hed_shift, augment.hed_shift)
    jittered = hed_transform(image, scale, shift)
    return tf.where(tf.random.stateless_uniform((), use) < augment.hed_probability, jittered, image)


def _augment(image, mask, seeds, augment: AugmentConfig):
    if augment.flips or augment.rot90:
        both = tf.concat([image, mask], axis=-1)
        if augment.flips:
            both = tf.image.stateless_random_flip_left_right(both, seeds[2])
            both = tf.image.stateless_random_flip_up_down(both, seeds[3])
        if augment.rot90:
            k = tf.random.stateless_uniform((), seeds[4], 0, 4, dtype=tf.int32)
            both = tf.image.rot90(both, k)
        image, mask = both[..., :3], both[..., 3:]
    if augment.hed_probability > 0:
        # A seed derived from the scale's, so the other augmentations' streams are unchanged.
        hed_seed = tf.random.experimental.stateless_split(seeds[0], 2)[1]
        image = _hed_jitter(image, hed_seed, augment)
    if augment.brightness:
        image = tf.image.stateless_random_brightness(image, augment.brightness, seeds[5])
    if augment.contrast:
        image = tf.image.stateless_random_contrast(
            image, 1 - augment.contrast, 1 + augment.contrast, seeds[6]
        )
    if augment.saturation or augment.hue:
        sat_seed, hue_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[7], 2))
        if augment.saturation:
            image = tf.image.stateless_random_saturation(
                tf.clip_by_value(image, 0.0, 1.0),
                1 - augment.saturation,
                1 + augment.saturation,
                sat_seed,
            )
        if augment.hue:
            image = tf.image.stateless_random_hue(
                tf.clip_by_value(image, 0.0, 1.0), augment.hue, hue_seed
            )
    return image, mask


def make_eval_dataset(
    samples: SampleSet,
    config: PreprocessConfig,
    *,
    image_size: int = 256,
    batch_size: int = 8,
) -> tf.data.Dataset:
    """Builds an evaluation pipeline: every image cut into ``image_size`` tiles, in order.

    Images larger than ``image_size`` are covered by tiles
    (:func:`~segcore.data.tiling.extract_tiles`;
    the last row and column of tiles overlap their neighbours, so a few pixels count twice);
    smaller ones are reflect-padded. No augmentation.

    Returns:
        A dataset of ``(images, masks)`` batches as in :class:`TrainingData`.
    """
    if len(samples) == 0:
        raise ConfigError("the evaluation set is empty")
    prepared = prepare_samples(samples, config)
    tiles = np.concatenate([extract_tiles(img, image_size) for img, _ in prepared])
    tile_masks = np.concatenate([extract_tiles(mask, image_size) for _, mask in prepared])
    images = tiles.astype(np.float32) / np.float32(255.0)
    masks = tile_masks[..., None].astype(np.float32)
    return (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
