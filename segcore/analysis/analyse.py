"""One image through the model, kept for exploration: what the Predict page shows.

:func:`analyse_image` runs the model once (tiled, any size) and returns an
:class:`ImageAnalysis`, which then answers everything threshold-dependent — pictures, metrics,
CSV rows — from the cached probabilities, without running the model again.

An analysis depends on the image's content only, so the app shares one between sessions; the
*name* (captions, CSV rows, download names) belongs to whoever uploaded it:
:meth:`ImageAnalysis.named` gives the same analysis under another name, sharing every array and
cache, so a shared store can keep analyses without a name and each session attach its own.

:func:`~segcore.analysis.uploads.read_upload` and :func:`~segcore.analysis.uploads.digest`
(uploaded bytes to an image and mask, and their cache key) are importable from here too.

This module imports neither Streamlit nor TensorFlow (the model is passed in).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.analysis.checks import stain_notice
from segcore.analysis.downloads import mask_png, metrics_csv, png_bytes
from segcore.analysis.explorer import ThresholdCurve, ThresholdExplorer
from segcore.analysis.objects import NucleiView, nuclei_view
from segcore.analysis.overlays import (
    comparison_overlay,
    display_stretch,
    heatmap,
    mask_image,
    prediction_overlay,
)
from segcore.analysis.uploads import digest, read_upload
from segcore.data.images import check_same_size
from segcore.data.preprocessing import PreprocessConfig, enhance_image
from segcore.inference.classical import ClassicalBaseline
from segcore.inference.flips import with_flips
from segcore.inference.instances import InstanceConfig
from segcore.inference.predict import ProgressCallback, predict_probabilities
from segcore.inference.resolution import (
    grid_pixel_size,
    predict_at_pixel_size,
    resampled_size,
)
from segcore.inference.runtimes.base import RuntimeModel
from segcore.inference.scale import ScaleEstimate, is_auto, predict_auto
from segcore.metrics.counts import check_threshold

__all__ = [
    "ImageAnalysis",
    "ThresholdComparison",
    "ThresholdView",
    "analyse_image",
    "digest",
    "read_upload",
]


@dataclass(frozen=True)
class ThresholdView:
    """Everything the Predict page shows for one threshold.

    Attributes:
        threshold: the threshold.
        metrics: :meth:`ThresholdExplorer.metrics_at` of it.
        mask: the binary prediction, ``uint8`` 0/1 ``(H, W)``.
        mask_picture: the prediction as a black/white RGB picture.
        overlay: the comparison overlay (TP/FP/FN colours and outlines) with ground truth,
            else the prediction overlay.
    """

    threshold: float
    metrics: dict[str, Any]
    mask: np.ndarray
    mask_picture: np.ndarray
    overlay: np.ndarray

    def mask_png(self) -> bytes:
        """The prediction as a 0/255 PNG (:func:`~segcore.analysis.downloads.mask_png`)."""
        return mask_png(self.mask)

    def overlay_png(self) -> bytes:
        """The overlay as a PNG download (:func:`~segcore.analysis.downloads.png_bytes`)."""
        return png_bytes(self.overlay)


@dataclass(frozen=True)
class ThresholdComparison:
    """Everything the Predict page's explorer shows: two thresholds and the threshold curve.

    Attributes:
        a: the view at threshold A.
        b: the view at threshold B.
        curve: Dice, Jaccard, precision and recall against the threshold, or ``None`` without
            ground truth.
    """

    a: ThresholdView
    b: ThresholdView
    curve: ThresholdCurve | None


class _Once:
    """A value made on first use, once, by whichever thread asks first; shared by the copies
    :meth:`ImageAnalysis.named` makes (they hold the same ``_Once``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None

    def get(self, make: Callable[[], Any]) -> Any:
        with self._lock:
            if self._value is None:
                self._value = make()
            return self._value

    def peek(self) -> Any:
        """The value if it was made, else ``None`` (makes nothing)."""
        return self._value


class _Last:
    """The last value made for a key, kept until another key is asked for; thread-safe and,
    like :class:`_Once`, shared by the copies :meth:`ImageAnalysis.named` makes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: tuple[Any, Any] | None = None

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if self._item is not None and self._item[0] == key:
                return self._item[1]
        value = make()
        with self._lock:
            self._item = (key, value)
        return value

    def peek(self) -> Any:
        """The last value, or ``None`` (makes nothing)."""
        item = self._item
        return None if item is None else item[1]


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """One image, its model input, its probabilities and (optionally) its ground truth.

    Attributes:
        name: the image's name (file name or sample id); the only field that is not about the
            image's content (see :meth:`named`).
        image: the original, ``uint8`` RGB ``(H, W, 3)``.
        model_input: the preprocessed image the model saw, ``uint8`` RGB.
        explorer: the :class:`~segcore.analysis.explorer.ThresholdExplorer` of the probabilities.
        seconds: how long the prediction took (preprocessing and model).
        model_name: the card name of the model that predicted it.
        runtime: the runtime that ran it (``"keras"``, ``"openvino-int8"``, ...; see
            :mod:`segcore.inference.runtimes`), ``""`` when not known (a plain callable, the
            classical baseline).
        display_image: the image contrast-stretched for display when it is dim or flat
            (:func:`~segcore.analysis.overlays.display_stretch`), else ``None``; see
            :attr:`picture`.
        display_note: what was done to show it (a caption), or ``None``.
        stain_note: why the image does not look like H&E
            (:func:`~segcore.analysis.checks.stain_notice`), or ``None``.
        scale: what was estimated of the image's pixel size when it was asked for ``"auto"``
            (:class:`~segcore.inference.scale.ScaleEstimate`: its ``describe()`` is the
            caption), else ``None``.
        flips: whether the probabilities are the mean of the image's four mirror-image
            predictions (:mod:`segcore.inference.flips`).
    """

    name: str
    image: np.ndarray
    model_input: np.ndarray
    explorer: ThresholdExplorer
    seconds: float
    model_name: str = ""
    runtime: str = ""
    display_image: np.ndarray | None = None
    display_note: str | None = None
    stain_note: str | None = None
    scale: ScaleEstimate | None = None
    flips: bool = False
    _baseline: _Once = dataclasses.field(default_factory=_Once, repr=False)
    _nuclei: _Last = dataclasses.field(default_factory=_Last, repr=False)

    def named(self, name: str) -> ImageAnalysis:
        """This analysis under another ``name``: every array and cache (the explorer's, the
        baseline's) is shared, nothing is copied or computed."""
        return dataclasses.replace(self, name=name)

    @property
    def picture(self) -> np.ndarray:
        """The image as the pictures show it: :attr:`display_image` if there is one, else
        :attr:`image`."""
        return self.image if self.display_image is None else self.display_image

    @property
    def nbytes(self) -> int:
        """About how many bytes this analysis holds: its arrays and the caches filled so far
        (the explorer's, and the baseline's once computed); shared arrays count once."""
        arrays = {id(a): a for a in (self.image, self.model_input, self.display_image)}
        total = sum(a.nbytes for a in arrays.values() if a is not None) + self.explorer.nbytes
        baseline, nuclei = self._baseline.peek(), self._nuclei.peek()
        total += 0 if nuclei is None else nuclei.labels.nbytes
        return total + (0 if baseline is None else baseline.nbytes)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self.explorer.shape

    @property
    def stem(self) -> str:
        """The name without its extension (``"tile_01.png"`` → ``"tile_01"``), for downloads."""
        return self.name.rsplit(".", 1)[0]

    @property
    def probabilities(self) -> np.ndarray:
        """float32 ``(H, W)`` probabilities."""
        return self.explorer.probabilities

    @property
    def truth(self) -> np.ndarray | None:
        """The ground truth (0/1), or ``None``."""
        return self.explorer.truth

    @property
    def pixel_size(self) -> float:
        """µm per pixel of the image (the given one, the estimated one for ``"auto"``, else the
        model's)."""
        return self.explorer.pixel_size

    @property
    def has_truth(self) -> bool:
        return self.explorer.has_truth

    @property
    def baseline(self) -> ThresholdExplorer:
        """The classical baseline's scores of this image (hematoxylin + Otsu,
        :mod:`segcore.inference.classical`), explorable like the model's; computed on first
        use, once (for every copy :meth:`named` made)."""
        return self._baseline.get(
            lambda: ThresholdExplorer(
                ClassicalBaseline().probabilities(self.image),
                self.explorer.truth_labels,
                pixel_size=self.explorer.pixel_size,
                instances=self.explorer.instances,
            )
        )

    def baseline_metrics(self) -> dict[str, Any]:
        """The classical baseline's metrics at its own threshold (0.5: Otsu's mask), in the form
        of :meth:`~segcore.analysis.explorer.ThresholdExplorer.metrics_at`."""
        return self.baseline.metrics_at(0.5)

    def heatmap(self) -> np.ndarray:
        """The probability heat map (viridis) as RGB."""
        return heatmap(self.probabilities)

    def truth_picture(self) -> np.ndarray | None:
        """The ground truth as a black/white RGB picture, or ``None``."""
        return None if self.truth is None else mask_image(self.truth)

    def view(
        self,
        threshold: float,
        *,
        opacity: float = 0.5,
        outline: bool = True,
        instances: InstanceConfig | None = None,
    ) -> ThresholdView:
        """The metrics and pictures at one threshold (no model call); ``instances`` is how the
        mask is split into nuclei for the count (default: the model's setting). The overlay is
        drawn on :attr:`picture`.

        Raises:
            ValueError: ``threshold`` or ``opacity`` is not a number in ``[0, 1]``.
        """
        metrics = self.explorer.metrics_at(threshold, instances)
        mask = self.explorer.mask_at(threshold)
        if self.truth is not None:
            overlay = comparison_overlay(
                self.picture, self.truth, mask, opacity=opacity, outline=outline
            )
        else:
            overlay = prediction_overlay(self.picture, mask, opacity=opacity, outline=outline)
        return ThresholdView(
            threshold=float(threshold),
            metrics=metrics,
            mask=mask,
            mask_picture=mask_image(mask),
            overlay=overlay,
        )

    def compare(
        self,
        threshold_a: float,
        threshold_b: float,
        *,
        opacity: float = 0.5,
        outline: bool = True,
        instances: InstanceConfig | None = None,
    ) -> ThresholdComparison:
        """The views at two thresholds and the threshold curve (no model call).

        Raises:
            ValueError: a threshold or ``opacity`` is not a number in ``[0, 1]``.
        """
        options = {"opacity": opacity, "outline": outline, "instances": instances}
        return ThresholdComparison(
            a=self.view(threshold_a, **options),
            b=self.view(threshold_b, **options),
            curve=self.explorer.curve(),
        )

    def nuclei(self, threshold: float, instances: InstanceConfig | None = None) -> NucleiView:
        """The predicted nuclei at ``threshold`` with ``instances`` (default: the model's
        setting): labels, measurements, figures against the ground truth and exports. Made from
        the cached probabilities; the last view is kept, so a page rerun that changes neither
        (another slider moved) measures nothing again.

        Raises:
            ValueError: ``threshold`` is not a number in ``[0, 1]``.
        """
        config = instances or self.explorer.instances
        threshold = float(check_threshold(threshold))
        return self._nuclei.get(
            (threshold, config),
            lambda: nuclei_view(
                self.explorer.labels_at(threshold, config),
                self.image,
                threshold=threshold,
                config=config,
                pixel_size=self.explorer.pixel_size,
                truth_labels=self.explorer.truth_labels,
                truth_note=self.explorer.truth_note,
            ),
        )

    def metrics_rows(self, thresholds: Sequence[float]) -> list[dict[str, Any]]:
        """One metrics row per threshold, each starting with ``image`` and ``model``."""
        return [
            {"image": self.name, "model": self.model_name, **self.explorer.metrics_at(t)}
            for t in thresholds
        ]

    def metrics_csv(self, thresholds: Sequence[float]) -> bytes:
        """:meth:`metrics_rows` as CSV bytes (UTF-8, header row first)."""
        return metrics_csv(self.metrics_rows(thresholds))


def analyse_image(
    model: Any,
    image: np.ndarray,
    preprocess: PreprocessConfig,
    truth: np.ndarray | None = None,
    *,
    name: str = "image",
    model_name: str = "",
    tile_size: int = 256,
    progress: ProgressCallback | None = None,
    pixel_size: float | str | None = None,
    model_pixel_size: float | None = None,
    instances: InstanceConfig | None = None,
    threshold: float = 0.5,
    flips: bool = False,
) -> ImageAnalysis:
    """Predicts one image of any size and keeps what exploring it needs.

    The image is preprocessed once (:func:`~segcore.data.preprocessing.enhance_image`): the
    result is both :attr:`ImageAnalysis.model_input` and what the model is given. At a pixel
    size other than the model's, the image is resampled for the model and the probabilities
    back (:func:`segcore.inference.resolution.predict_at_pixel_size`), so everything stays on
    the image's grid; :attr:`ImageAnalysis.model_input` then shows the image preprocessed at
    its own size. The pictures' version of the image (:attr:`ImageAnalysis.picture`) and its
    H&E check (:attr:`ImageAnalysis.stain_note`) are made here too.

    Args:
        model: a ``keras.Model`` (or callable) as
            :func:`segcore.inference.predict.predict_probabilities` accepts.
        image: ``uint8`` RGB ``(H, W, 3)``.
        preprocess: the bundle's preprocessing.
        truth: optional ground truth of the same H×W: instance labels, a binary mask or a
            colour rendering (:func:`segcore.metrics.labels.ground_truth_instances`).
        name: the image's name for captions and CSV rows.
        model_name: the model's name for CSV rows.
        tile_size: tile side for tiled inference (the bundle's input size), default 256.
        progress: ``progress(done, total)`` after each batch of tiles.
        pixel_size: the image's µm per pixel; ``None`` means the model's;
            :data:`~segcore.inference.scale.AUTO` estimates it from the nuclei of a first pass
            at the model's (:func:`segcore.inference.scale.predict_auto`), recorded in
            :attr:`ImageAnalysis.scale`.
        model_pixel_size: the model's µm per pixel (its card's); ``None`` means 0.25.
        instances: how the mask becomes nuclei (the bundle's setting), defaults to
            ``InstanceConfig()``.
        threshold: the threshold the nuclei are measured at for ``"auto"`` (the bundle's),
            default 0.5; nothing else depends on it (the explorer re-thresholds).
        flips: average the model over the image and its three mirror images
            (:func:`segcore.inference.flips.with_flips`: four network calls per tile), default
            False; the runtime recorded is still the model's.

    Raises:
        InvalidImageError: bad image, the mask's size differs from the image's, or the
            resampled image would be too large.
        ConfigError: a pixel size outside :data:`~segcore.data.images.PIXEL_SIZE_RANGE`, or
            ``flips`` for the classical baseline.
    """
    runtime = model.name if isinstance(model, RuntimeModel) else ""
    if flips:
        model = with_flips(model)
    if truth is not None:  # checked before the (slow) prediction
        check_same_size(np.asarray(image), np.asarray(truth), name=f"{name} (ground truth)")
    height, width = np.asarray(image).shape[:2]  # the resampled size too, before any work
    auto = is_auto(pixel_size)
    resampled = None
    if not auto:
        resampled = resampled_size(
            height, width, pixel_size=pixel_size, model_pixel_size=model_pixel_size
        )
    scale = None
    start = time.perf_counter()
    model_input = enhance_image(image, preprocess)  # once: shown, and what the model sees
    if resampled is None:  # at the model's pixel size: predict the enhanced image as it is
        probabilities = predict_probabilities(
            model,
            model_input,
            preprocess,
            tile_size=tile_size,
            progress=progress,
            already_enhanced=True,
        )
        if auto:  # that was the first pass: estimate, and predict again unless it is the model's
            probabilities, scale = predict_auto(
                model,
                image,
                preprocess,
                threshold=threshold,
                model_pixel_size=model_pixel_size,
                first=probabilities,
                tile_size=tile_size,
                progress=progress,
            )
            pixel_size = scale.pixel_size
    else:
        probabilities = predict_at_pixel_size(
            model,
            image,
            preprocess,
            pixel_size=pixel_size,
            model_pixel_size=model_pixel_size,
            tile_size=tile_size,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    display, display_note = display_stretch(image)
    return ImageAnalysis(
        name=name,
        image=np.asarray(image),
        model_input=model_input,
        explorer=ThresholdExplorer(
            probabilities,
            truth,
            pixel_size=grid_pixel_size(pixel_size, model_pixel_size),
            instances=instances,
        ),
        seconds=seconds,
        model_name=model_name,
        runtime=runtime,
        display_image=None if display_note is None else display,
        display_note=display_note,
        stain_note=stain_notice(display),
        scale=scale,
        flips=flips,
    )
