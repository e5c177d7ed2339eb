"""The accuracy gate: a fast runtime is used by ``auto`` only if it predicts what Keras predicts.

:func:`run_gate` predicts the gate images (:func:`gate_samples`: the repository's built-in
MoNuSeg crops with their ground truth, else synthetic tiles) with the reference runtime and
each candidate, all tiled the same way, and checks each candidate:

* a float32 runtime: every probability within :data:`MAX_ABS_DIFF_FLOAT32` (1e-3) of Keras's;
* a reduced-precision runtime (bfloat16, int8): its masks at the model's threshold overlap
  Keras's with Dice ≥ :data:`MIN_MASK_DICE` (0.99, pooled over the gate images), and its
  pooled Dice against the ground truth is within :data:`MAX_DICE_CHANGE` (0.005) of Keras's.

The same run measures each runtime's time per tile (model calls only, after a warm-up call,
images interleaved so that a noisy machine slows all runtimes alike), so ``auto`` can pick the
fastest runtime that passed. :func:`calibration_tiles` gives int8 quantisation its calibration
data: synthetic H&E tiles the project generates, so no evaluation image is used to fit it.

A bundle may ship a reduced-precision runtime prepared where it was made, with Keras's masks of
the gate images (:mod:`segcore.bundles.prepared`). :func:`gate_against_masks` gates such a
runtime on this CPU without Keras: the same images and the same two checks, against those
masks and Keras's pooled Dice as recorded; Keras's time per tile (and so the time ratio) is
the one measured where the bundle was made.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from segcore.data.preprocessing import PreprocessConfig, enhance_image, to_model_input
from segcore.errors import SegcoreError
from segcore.inference.predict import DEFAULT_OVERLAP, predict_probabilities
from segcore.inference.runtimes.base import REDUCED_PRECISION, RuntimeModel
from segcore.metrics.counts import ConfusionCounts, confusion_counts
from segcore.timestamps import utc_now

MAX_ABS_DIFF_FLOAT32 = 1e-3
"""Largest probability difference a float32 runtime may show against Keras."""

MIN_MASK_DICE = 0.99
"""Smallest Dice between a reduced-precision runtime's masks and Keras's (pooled)."""

MAX_DICE_CHANGE = 0.005
"""Largest change of pooled Dice against the ground truth a reduced-precision runtime may make."""

GATE_SAMPLES = 7
"""How many built-in samples the gate predicts (all seven 512² crops: 63 tiles of 256²)."""

CALIBRATION_TILES = 30
"""How many synthetic tiles calibrate int8 quantisation."""

CALIBRATION_SEED = 20261201


@dataclass(frozen=True)
class GateResult:
    """One candidate runtime's gate figures on this CPU.

    Args:
        runtime: the candidate's name.
        passed: whether it passed (see the module docstring).
        reason: why it failed, or what it passed on, in words.
        max_abs_diff: largest |p - p_keras| over every pixel of every gate image; ``None``
            when gated against Keras's masks only (:func:`gate_against_masks`).
        mask_dice: Dice between its masks and Keras's at ``threshold``, pooled.
        dice: its pooled Dice against the ground truth.
        dice_keras: Keras's pooled Dice against the ground truth.
        ms_per_tile: its milliseconds per tile (model calls only, all tiles of the run).
        keras_ms_per_tile: Keras's, in the same run.
        time_ratio: ``ms_per_tile / keras_ms_per_tile``.
        images: gate images predicted; tiles: tiles per runtime.
        threshold: the model's threshold the masks were made at.
        measured: UTC time of the run.
    """

    runtime: str
    passed: bool
    reason: str
    max_abs_diff: float | None
    mask_dice: float
    dice: float
    dice_keras: float
    ms_per_tile: float
    keras_ms_per_tile: float
    time_ratio: float
    images: int
    tiles: int
    threshold: float
    measured: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def gate_samples(count: int = GATE_SAMPLES) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image, 0/1 mask)`` pairs the gate predicts: the built-in samples (real MoNuSeg test
    crops with their annotation) when the repository has them, else synthetic 512² tiles."""
    from segcore.data import samples

    try:
        split = samples.open_source(samples.BUILT_IN).split("test")
        return [split.load(i) for i in range(min(count, len(split)))]
    except SegcoreError:
        from segcore.data.synthetic import generate_tile

        return [generate_tile([CALIBRATION_SEED + 1, i], 512) for i in range(count)]


def calibration_tiles(
    preprocess: PreprocessConfig, count: int = CALIBRATION_TILES, size: int = 256
) -> list[np.ndarray]:
    """``count`` synthetic H&E tiles, preprocessed as the model expects, each float32
    ``(1, size, size, 3)``: int8 quantisation's calibration data."""
    from segcore.data.synthetic import generate_tile

    tiles = []
    for i in range(count):
        image, _ = generate_tile([CALIBRATION_SEED, i], size)
        tiles.append(to_model_input(enhance_image(image, preprocess))[None].astype(np.float32))
    return tiles


class _Timed:
    """A predictor that adds up the seconds and tiles of its calls."""

    def __init__(self, model: RuntimeModel) -> None:
        self.model = model
        self.seconds = 0.0
        self.tiles = 0

    def __call__(self, batch: np.ndarray) -> Any:
        start = time.perf_counter()
        out = np.asarray(self.model(batch))
        self.seconds += time.perf_counter() - start
        self.tiles += batch.shape[0]
        return out


def sample_digest(image: np.ndarray) -> str:
    """The SHA-256 of a gate image's shape and pixels: which images a shipped reference of
    Keras's masks (:func:`gate_against_masks`) was made on."""
    import hashlib

    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def judge(
    runtime: str, max_abs_diff: float | None, mask_dice: float, dice: float, dice_keras: float
) -> tuple[bool, str]:
    """Whether the figures pass the gate for ``runtime``, and why (see the module docstring)."""
    if runtime in REDUCED_PRECISION:
        if mask_dice < MIN_MASK_DICE:
            return False, f"masks agree with Keras's at Dice {mask_dice:.4f} < {MIN_MASK_DICE}"
        change = abs(dice - dice_keras)
        if change > MAX_DICE_CHANGE:
            return False, (
                f"pooled Dice {dice:.4f} against Keras's {dice_keras:.4f} "
                f"(change {change:.4f} > {MAX_DICE_CHANGE})"
            )
        return True, (
            f"masks {mask_dice:.4f} Dice of Keras's (≥ {MIN_MASK_DICE}); pooled Dice "
            f"{dice:.4f} vs {dice_keras:.4f} (within {MAX_DICE_CHANGE})"
        )
    if max_abs_diff is None or not max_abs_diff <= MAX_ABS_DIFF_FLOAT32:  # also NaN
        return False, f"max |Δp| {max_abs_diff:.2e} > {MAX_ABS_DIFF_FLOAT32:g}"
    return True, f"max |Δp| {max_abs_diff:.2e} ≤ {MAX_ABS_DIFF_FLOAT32:g}"


def _tiled(runtime, enhanced: np.ndarray, preprocess: PreprocessConfig, tile_size: int):
    """``runtime``'s probabilities of an enhanced gate image, tiled as every gate run tiles."""
    return predict_probabilities(
        runtime,
        enhanced,
        preprocess,
        tile_size=tile_size,
        overlap=min(DEFAULT_OVERLAP, tile_size // 4),
        already_enhanced=True,
    )


def keras_masks(
    reference: RuntimeModel,
    samples: list[tuple[np.ndarray, np.ndarray]],
    preprocess: PreprocessConfig,
    threshold: float,
    *,
    tile_size: int = 256,
) -> list[np.ndarray]:
    """``reference``'s (Keras's) boolean masks of ``samples`` at ``threshold``, predicted as
    :func:`run_gate` predicts them: what a bundle ships for :func:`gate_against_masks`."""
    return [
        _tiled(reference, enhance_image(image, preprocess), preprocess, tile_size) >= threshold
        for image, _ in samples
    ]


def gate_against_masks(
    candidate: RuntimeModel,
    samples: list[tuple[np.ndarray, np.ndarray]],
    masks: list[np.ndarray],
    preprocess: PreprocessConfig,
    threshold: float,
    *,
    dice_keras: float,
    keras_ms_per_tile: float,
    time_ratio: float,
    tile_size: int = 256,
) -> GateResult:
    """Gates a reduced-precision ``candidate`` against Keras's ``masks`` of ``samples`` (made
    by :func:`keras_masks` where the bundle was made) without Keras: its masks must overlap
    them with Dice ≥ :data:`MIN_MASK_DICE`, and its pooled Dice against the ground truth must be
    within :data:`MAX_DICE_CHANGE` of ``dice_keras``, Keras's as recorded there.
    ``keras_ms_per_tile`` and ``time_ratio`` are the figures measured there (Keras is not run
    here); ``ms_per_tile`` is this CPU's.

    Raises:
        ValueError: no samples, a float32 candidate (its check needs Keras's probabilities),
            or masks that do not match the samples one for one in shape.
    """
    if not samples:
        raise ValueError("the gate needs at least one image")
    if candidate.name not in REDUCED_PRECISION:
        raise ValueError(f"{candidate.name} is checked against Keras's probabilities, not masks")
    if len(masks) != len(samples) or any(
        np.shape(mask) != np.shape(image)[:2]
        for mask, (image, _) in zip(masks, samples, strict=True)
    ):
        raise ValueError("Keras's masks do not match the gate images")
    timed = _Timed(candidate)
    candidate(np.zeros((1, tile_size, tile_size, 3), np.float32))  # compiles; not timed
    empty = ConfusionCounts(0, 0, 0, 0)
    against_keras, against_truth = empty, empty
    for (image, truth), keras_mask in zip(samples, masks, strict=True):
        mask = _tiled(timed, enhance_image(image, preprocess), preprocess, tile_size) >= threshold
        against_truth = against_truth + confusion_counts(np.asarray(truth) > 0, mask)
        against_keras = against_keras + confusion_counts(np.asarray(keras_mask, bool), mask)
    mask_dice, dice = against_keras.dice, against_truth.dice
    passed, reason = judge(candidate.name, None, mask_dice, dice, dice_keras)
    return GateResult(
        runtime=candidate.name,
        passed=passed,
        reason=reason + " (against Keras's masks shipped with the bundle)",
        max_abs_diff=None,
        mask_dice=round(mask_dice, 5),
        dice=round(dice, 5),
        dice_keras=round(dice_keras, 5),
        ms_per_tile=round(1000.0 * timed.seconds / max(1, timed.tiles), 4),
        keras_ms_per_tile=round(keras_ms_per_tile, 4),
        time_ratio=round(time_ratio, 3),
        images=len(samples),
        tiles=timed.tiles,
        threshold=threshold,
        measured=utc_now(),
    )


def run_gate(
    reference: RuntimeModel,
    candidates: list[RuntimeModel],
    samples: list[tuple[np.ndarray, np.ndarray]],
    preprocess: PreprocessConfig,
    threshold: float,
    *,
    tile_size: int = 256,
) -> list[GateResult]:
    """Gates each candidate against ``reference`` (Keras) on ``samples``.

    Every runtime predicts every image with
    :func:`~segcore.inference.predict.predict_probabilities` at ``tile_size`` with the default
    overlap (at most a quarter of the tile) and batch, images interleaved (image 1 by every
    runtime, then image 2, ...).

    Returns:
        One :class:`GateResult` per candidate, in order.
    """
    if not samples:
        raise ValueError("the gate needs at least one image")
    timed = [_Timed(m) for m in (reference, *candidates)]
    warm_batch = np.zeros((1, tile_size, tile_size, 3), np.float32)
    for runtime in timed:  # first calls trace or compile; not timed
        runtime.model(warm_batch)
    worst = [0.0] * len(candidates)
    empty = ConfusionCounts(0, 0, 0, 0)
    against_keras = [empty] * len(candidates)  # each candidate's masks against keras's
    against_truth = [empty] * len(timed)  # every runtime's masks against the annotation
    for image, truth in samples:
        enhanced = enhance_image(image, preprocess)
        probs = [_tiled(runtime, enhanced, preprocess, tile_size) for runtime in timed]
        truth_mask = np.asarray(truth) > 0
        reference_mask = probs[0] >= threshold
        for i, prob in enumerate(probs):
            mask = prob >= threshold
            against_truth[i] = against_truth[i] + confusion_counts(truth_mask, mask)
            if i:
                worst[i - 1] = max(worst[i - 1], float(np.max(np.abs(prob - probs[0]))))
                against_keras[i - 1] = against_keras[i - 1] + confusion_counts(reference_mask, mask)
    keras_ms = 1000.0 * timed[0].seconds / max(1, timed[0].tiles)
    dice_keras = against_truth[0].dice
    measured = utc_now()
    results = []
    for i, candidate in enumerate(candidates):
        mask_dice = against_keras[i].dice
        dice = against_truth[i + 1].dice
        passed, reason = judge(candidate.name, worst[i], mask_dice, dice, dice_keras)
        ms = 1000.0 * timed[i + 1].seconds / max(1, timed[i + 1].tiles)
        results.append(
            GateResult(
                runtime=candidate.name,
                passed=passed,
                reason=reason,
                max_abs_diff=round(worst[i], 6),
                mask_dice=round(mask_dice, 5),
                dice=round(dice, 5),
                dice_keras=round(dice_keras, 5),
                ms_per_tile=round(ms, 4),
                keras_ms_per_tile=round(keras_ms, 4),
                time_ratio=round(ms / keras_ms, 3) if keras_ms > 0 else float("nan"),
                images=len(samples),
                tiles=timed[i + 1].tiles,
                threshold=threshold,
                measured=measured,
            )
        )
    return results
