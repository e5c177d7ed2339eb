"""Pixel size from the image itself, when neither the user nor the file says: ``auto``.

A model sees nuclei at the scale it was trained on (the default bundle: MoNuSeg at 40×, 0.25
µm/px). An image that records no pixel size is otherwise predicted as if it were at the model's,
so a 20× scan is read as 40× and its nuclei, half as wide, are partly missed. ``auto`` estimates
the scale from the nuclei, as Cellpose estimates its objects' diameter:

1. a first pass of the model over the image as it is (read at the model's pixel size);
2. its mask split into nuclei (:func:`~segcore.inference.instances.label_instances` with
   :data:`MEASURE_INSTANCES`) and their size summarised by the **area-weighted median area**
   ``A`` in px² (the area of the nucleus that the median nucleus pixel lies in: specks and
   fragments hardly move it, unlike the plain median);
3. the measured pixel size ``sqrt(REFERENCE_NUCLEUS_AREA_UM2 / A)`` µm/px: the one at which
   ``A`` px² would be the training nuclei's typical area;
4. snapped to a scanner magnification of :data:`MAGNIFICATION_PIXEL_SIZES`: a measured value
   up to :data:`SNAP_BOUNDARY` (0.38 µm/px) reads as 40×, above it as 20×; fewer than
   :data:`MIN_NUCLEI` nuclei give no estimate and the model's pixel size is used;
5. the image predicted at the snapped pixel size with the existing resampling
   (:func:`~segcore.inference.resolution.predict_at_pixel_size`); when that is the model's own,
   the first pass *is* the prediction, so a 40× image costs no second pass.

Why snapped: nuclear size varies between tissues and nuclear types (lymphocytes against tumour
nuclei) by far more than the 40× pixel sizes of different scanners (roughly 0.22–0.26 µm/px)
differ, so a continuous estimate would resample most 40× images by a tissue-dependent factor
for no gain; the size cue is only trusted to tell 40× from 20×. 10× scans (1 µm/px) read as
20× (not validated at 10×: give their pixel size).

Measured on the default bundle (v4.1, keras runtime) with ``python benchmarks/bench_scale.py``
(estimates, and pooled Dice as is, told and auto, at 40× and at half size): the 14 MoNuSeg test
tiles all read as 40× (Dice 0.802, unchanged) and, at half size, all as 20× (Dice 0.749 as is,
0.785 auto, the same as told); on the validation parts of TNBC, CryoNuSeg, PanNuke-breast and
CoNSeP at 40× auto changes pooled Dice by 0, 0, 0 and +0.0004.

No TensorFlow here (the model is passed in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.data.images import DEFAULT_MAX_PIXELS
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError, InvalidImageError
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.inference.predict import predict_probabilities
from segcore.inference.resolution import (
    DEFAULT_MODEL_PIXEL_SIZE,
    check_pixel_size,
    predict_at_pixel_size,
    resampled_size,
)

__all__ = [
    "AUTO",
    "MAGNIFICATION_PIXEL_SIZES",
    "MEASURE_INSTANCES",
    "MIN_NUCLEI",
    "PIXEL_SIZE_WHEN_UNKNOWN",
    "REFERENCE_NUCLEUS_AREA_UM2",
    "SNAP_BOUNDARY",
    "ScaleEstimate",
    "combine_estimates",
    "estimate_from_probabilities",
    "estimate_samples",
    "is_auto",
    "nucleus_area_px",
    "parse_pixel_size",
    "predict_auto",
    "snap_pixel_size",
]

AUTO = "auto"
"""The pixel size that says: estimate it from the image (``--pixel-size auto``, the app's
"Auto")."""

REFERENCE_NUCLEUS_AREA_UM2 = 36.1
"""The training nuclei's typical area in µm², what :func:`estimate_from_probabilities` compares
an image's nuclei with.

Measured on ``../shared/data/monuseg/train/masks`` (the 30 MoNuSeg 2018 training tiles, 40×,
0.25 µm/px, uint16 instance labels; the default bundle was trained on them): for each tile, the
area-weighted median nucleus area (:func:`nucleus_area_px` of its labels); the median over the 30
tiles is 578 px², × 0.25² = 36.1 µm² (an equivalent diameter of 6.8 µm). The per-tile values
range from 129 to 1129 px² (the ``TCGA-HE-71*`` tiles hold the smallest nuclei): nuclear
size can tell 40× from 20× (a factor 4 in area), not finer, and not always.
"""

PIXEL_SIZE_WHEN_UNKNOWN: str | None = AUTO
"""What an image is predicted at when neither the user nor its file's metadata (TIFF
resolution, OME) gives a pixel size — ``predict``, ``batch``'s images, an upload on the
Predict page: :data:`AUTO`, because auto costs nothing at 40× (see :data:`SNAP_BOUNDARY` and
the figures above); ``None`` would mean the model's pixel size (the behaviour before auto).
A dataset's samples (``evaluate``, the Evaluate page, the Predict page's samples) keep their
``dataset.json``'s pixel size, else the model's, unless auto is asked for: a score is of a
stated scale, and the same sample scores the same on every page."""

MAGNIFICATION_PIXEL_SIZES = (0.25, 0.5)
"""The pixel sizes an estimate snaps to: 40× and 20× scans (µm/px)."""

SNAP_BOUNDARY = 0.38
"""A measured pixel size up to this snaps to 40× (0.25 µm/px), above it to 20× (0.5 µm/px).

Nearer 20× than the two magnifications' geometric mean (0.354): in doubt, the model's own
scale, because reading a 40× image as 20× can cost Dice where auto must cost nothing. (The
first pass reads a 20× image's nuclei about 3.1 times smaller in area than at 40×, not 4 times,
so its 20× estimates come out low: median 0.44 on the MoNuSeg train tiles at half size.)

The rule, on validation data only (the validation parts of TNBC, CryoNuSeg, PanNuke-breast and
CoNSeP, at native 40× and at half size): the smallest of 0.354, 0.36, 0.37 and 0.38 at which
auto lowers no source's pooled Dice at 40×. At 0.354 CoNSeP lost 0.002 (11 of its 64 patches
read as 20×); at 0.36 and 0.37 TNBC lost 0.002 and 0.0016 and CoNSeP 0.0025; at 0.38 TNBC,
CryoNuSeg and PanNuke-breast read every tile as 40× and CoNSeP 57 of 64 patches (+0.0003). The
price: of the 30 MoNuSeg train tiles at half size, 18 read as 20× at 0.38 (25 at 0.354); the
others are predicted as they are, as before auto.
"""

MIN_NUCLEI = 10
"""Fewer nuclei found on the first pass give no estimate (the model's pixel size is used)."""

MEASURE_INSTANCES = InstanceConfig(min_area_um2=0.5, split_depth_um=0.15, fill_holes=True)
"""How the first pass's mask is split into nuclei for measuring: the default bundle's split
depth, and a minimum area of only 0.5 µm² (8 px at 0.25 µm/px), so that the small nuclei of a 20×
image read as 40× (a quarter of their area) are not dropped as specks."""


def is_auto(pixel_size: object) -> bool:
    """Whether ``pixel_size`` asks for an estimate (:data:`AUTO`, any case)."""
    return isinstance(pixel_size, str) and pixel_size.strip().lower() == AUTO


def parse_pixel_size(text: str) -> float | str:
    """A pixel size as typed (``--pixel-size``): :data:`AUTO`, or a number of µm per pixel.

    Raises:
        ConfigError: neither ``auto`` nor a number in
            :data:`~segcore.data.images.PIXEL_SIZE_RANGE`.
    """
    if is_auto(text):
        return AUTO
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(
            f"pixel size must be 'auto' or a number of µm per pixel, got {text!r}"
        ) from None
    return check_pixel_size(value)


def nucleus_area_px(labels: np.ndarray) -> tuple[float | None, int]:
    """The area-weighted median nucleus area of an instance-label image, and the nucleus count.

    The area-weighted median is the area of the nucleus that the median nucleus *pixel* lies in
    (nuclei sorted by area, the one where the running sum of areas passes half the total).

    Returns:
        ``(area in px², count)``; the area is None when there is no nucleus.
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = np.sort(areas[areas > 0]).astype(np.float64)
    if areas.size == 0:
        return None, 0
    running = np.cumsum(areas)
    return float(areas[np.searchsorted(running, running[-1] / 2)]), int(areas.size)


def snap_pixel_size(measured: float) -> float:
    """The magnification's pixel size that ``measured`` reads as: 40×'s (0.25 µm/px) up to
    :data:`SNAP_BOUNDARY`, 20×'s (0.5 µm/px) above."""
    low, high = MAGNIFICATION_PIXEL_SIZES
    return low if measured <= SNAP_BOUNDARY else high


_MAGNIFICATION_NAMES = {0.25: "40×", 0.5: "20×"}


@dataclass(frozen=True)
class ScaleEstimate:
    """What :func:`predict_auto` estimated (or could not) about an image's pixel size.

    Attributes:
        pixel_size: the pixel size used, µm/px: the snapped estimate, else the model's.
        measured: the continuous estimate ``sqrt(REFERENCE_NUCLEUS_AREA_UM2 / area)`` µm/px
            (the median of the images' for several), or None when not estimated.
        nuclei: the nuclei measured on the first pass (summed over images).
        images: how many images the estimate comes from.
        agree: how many of them snap to ``pixel_size`` on their own (``images`` for one).
        note: why the estimate was not used, or ``""``.
    """

    pixel_size: float
    measured: float | None
    nuclei: int
    images: int = 1
    agree: int = 1
    note: str = ""

    @property
    def estimated(self) -> bool:
        """Whether ``pixel_size`` comes from the nuclei (else it is the model's)."""
        return self.measured is not None and not self.note

    def describe(self) -> str:
        """One line for the CLI and the app's caption, e.g. ``"pixel size estimated from the
        nuclei: 0.50 µm/px (20×; 412 nuclei, measured 0.47 µm/px)"``."""
        if self.measured is None:
            return (
                f"pixel size not estimated ({self.nuclei} nuclei found, {MIN_NUCLEI} needed): "
                f"predicted at the model's {self.pixel_size:g} µm/px"
            )
        snapped = snap_pixel_size(self.measured)
        several = (
            f"median of {self.images} images, {self.agree} of them agree; "
            if self.images > 1
            else ""
        )
        line = (
            f"pixel size estimated from the nuclei: {snapped:.2f} µm/px "
            f"({_MAGNIFICATION_NAMES[snapped]}; {several}{self.nuclei} nuclei, measured "
            f"{self.measured:.2f} µm/px)"
        )
        return f"{line}; {self.note}" if self.note else line


def _measured(area_px: float | None, count: int) -> float | None:
    if area_px is None or count < MIN_NUCLEI:
        return None
    return math.sqrt(REFERENCE_NUCLEUS_AREA_UM2 / area_px)


def estimate_from_probabilities(
    probabilities: np.ndarray,
    threshold: float,
    *,
    model_pixel_size: float | None = None,
) -> ScaleEstimate:
    """The pixel size of an image from the first pass's probabilities (steps 2–4 of the module
    docstring).

    Args:
        probabilities: float ``(H, W)``: the model's, for the image read at the model's pixel
            size (not resampled).
        threshold: the mask threshold (the bundle's).
        model_pixel_size: the model's µm per pixel (used when nothing is estimated, and to
            convert :data:`MEASURE_INSTANCES`' minimum area); None means 0.25.
    """
    model_size = model_pixel_size or DEFAULT_MODEL_PIXEL_SIZE
    labels = label_instances(probabilities, threshold, MEASURE_INSTANCES, pixel_size=model_size)
    area, count = nucleus_area_px(labels)
    measured = _measured(area, count)
    if measured is None:
        return ScaleEstimate(pixel_size=model_size, measured=None, nuclei=count)
    return ScaleEstimate(pixel_size=snap_pixel_size(measured), measured=measured, nuclei=count)


def combine_estimates(
    estimates: Sequence[ScaleEstimate], *, model_pixel_size=None
) -> ScaleEstimate:
    """One estimate for images from one scanner (a dataset's split): the median of the images'
    measured pixel sizes, snapped; images without an estimate do not vote."""
    measured = [e.measured for e in estimates if e.measured is not None]
    nuclei = sum(e.nuclei for e in estimates)
    if not measured:
        size = model_pixel_size or DEFAULT_MODEL_PIXEL_SIZE
        return ScaleEstimate(size, None, nuclei, images=len(estimates), agree=0)
    median = float(np.median(measured))
    size = snap_pixel_size(median)
    agree = sum(snap_pixel_size(m) == size for m in measured)
    return ScaleEstimate(size, median, nuclei, images=len(estimates), agree=agree)


def predict_auto(
    model: Any,
    image: np.ndarray,
    preprocess: PreprocessConfig,
    *,
    threshold: float,
    model_pixel_size: float | None,
    first: np.ndarray | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **tiling: Any,
) -> tuple[np.ndarray, ScaleEstimate]:
    """The probabilities of ``image`` at the pixel size estimated from its nuclei (the module
    docstring's steps), on the image's own grid.

    Args:
        model, preprocess, **tiling: as for
            :func:`~segcore.inference.predict.predict_probabilities`.
        image: ``uint8`` RGB ``(H, W, 3)``.
        threshold: the mask threshold the nuclei are measured at (the bundle's).
        model_pixel_size: the model's µm per pixel; None means 0.25.
        first: the first pass, if the caller already has it (the probabilities of ``image``
            as it is); else it is computed here.
        max_pixels: the largest resampled image accepted.

    Returns:
        ``(probabilities, estimate)``. When the estimated image would exceed ``max_pixels`` (or
        :data:`~segcore.data.images.MAX_SIDE`), the first pass is returned and the estimate's
        ``note`` says so: auto never fails where predicting as it is would not.
    """
    model_size = check_pixel_size(
        model_pixel_size or DEFAULT_MODEL_PIXEL_SIZE, what="the model's pixel size"
    )
    if first is None:
        first = predict_probabilities(model, image, preprocess, **tiling)
    estimate = estimate_from_probabilities(first, threshold, model_pixel_size=model_size)
    if not estimate.estimated or abs(estimate.pixel_size / model_size - 1) < 1e-3:
        return first, estimate
    height, width = image.shape[:2]
    try:
        resampled_size(
            height,
            width,
            pixel_size=estimate.pixel_size,
            model_pixel_size=model_size,
            max_pixels=max_pixels,
        )
    except InvalidImageError:
        note = (
            f"resampled to it the image would be over the size limit: predicted at the "
            f"model's {model_size:g} µm/px instead"
        )
        return first, ScaleEstimate(model_size, estimate.measured, estimate.nuclei, note=note)
    probabilities = predict_at_pixel_size(
        model,
        image,
        preprocess,
        pixel_size=estimate.pixel_size,
        model_pixel_size=model_size,
        max_pixels=max_pixels,
        **tiling,
    )
    return probabilities, estimate


def predict_at_given_pixel_size(
    model: Any,
    image: np.ndarray,
    preprocess: PreprocessConfig,
    *,
    pixel_size: float | str | None,
    threshold: float,
    model_pixel_size: float | None,
    **tiling: Any,
) -> tuple[np.ndarray, float, ScaleEstimate | None]:
    """The probabilities of ``image`` at a pixel size that is given (µm/px), unknown (None: as
    it is, at the model's) or :data:`AUTO` (:func:`predict_auto`, nuclei measured at
    ``threshold``). Returns ``(probabilities, the pixel size they are taken to be at — the
    estimate's for auto, else ``pixel_size`` as given, None for the model's — and the estimate
    or None)``: what ``batch`` and the quality benchmark each need."""
    if is_auto(pixel_size):
        probabilities, estimate = predict_auto(
            model,
            image,
            preprocess,
            threshold=threshold,
            model_pixel_size=model_pixel_size,
            **tiling,
        )
        return probabilities, estimate.pixel_size, estimate
    probabilities = predict_at_pixel_size(
        model,
        image,
        preprocess,
        pixel_size=pixel_size,
        model_pixel_size=model_pixel_size,
        **tiling,
    )
    return probabilities, pixel_size, None


def estimate_samples(
    model: Any,
    samples: Any,
    preprocess: PreprocessConfig,
    *,
    threshold: float,
    model_pixel_size: float | None,
    max_images: int = 16,
    progress: Callable[[int, int, str], None] | None = None,
    **tiling: Any,
) -> ScaleEstimate:
    """One pixel size for a whole sample set (``evaluate``): each image's first pass and
    measurement, then :func:`combine_estimates` (one scanner, one estimate: the median over many
    images is far steadier than one image's).

    Args:
        model, preprocess, **tiling: as for :func:`predict_auto`.
        samples: a :class:`~segcore.data.datasets.SampleSet` (``len``, ``load(i)``, ``ids``).
        threshold: the mask threshold (the bundle's).
        model_pixel_size: the model's µm per pixel; None means 0.25.
        max_images: at most this many images are measured, evenly spread over the set (the
            first pass is a whole prediction: this bounds what auto adds to an evaluation).
        progress: called as ``progress(done, total, sample_id)`` after each image.
    """
    count = len(samples)
    chosen = sorted({round(i) for i in np.linspace(0, count - 1, min(count, max_images))})
    estimates = []
    for done, index in enumerate(chosen, start=1):
        image, _ = samples.load(index)
        first = predict_probabilities(model, image, preprocess, **tiling)
        estimates.append(
            estimate_from_probabilities(first, threshold, model_pixel_size=model_pixel_size)
        )
        if progress is not None:
            progress(done, len(chosen), samples.ids[index])
    return combine_estimates(estimates, model_pixel_size=model_pixel_size)
