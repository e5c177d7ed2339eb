"""``predict``'s work on a list of files, pipelined so both cores stay busy.

While the model predicts image *i* (it uses every core for its own arithmetic, but not
all the time), one worker thread decodes image *i + 1* and another writes image *i − 1*'s
outputs: the probability and mask PNGs and, with ``--instances``, the nucleus split, label
PNG, GeoJSON and CSV, which at 1000×1000 cost about as much as the fast runtimes' model call.
Outputs are written in input order, and one failing image (unreadable, too large, a nucleus
split over 65,535 labels) is reported on stderr without stopping the others.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcore.analysis.image_files import write_instance_files, write_probability_files
from segcore.cli.common import Progress
from segcore.errors import SegcoreError

log = logging.getLogger("segcore")


@dataclass(frozen=True)
class PredictJob:
    """What every file of one ``predict`` command shares.

    Args:
        bundle: the loaded bundle (preprocessing, pixel size, instance settings).
        model: what predicts (a runtime model, or the classical baseline).
        out: the output folder (checked writable).
        threshold: the mask threshold.
        pixel_size: ``--pixel-size`` (a number, or :data:`~segcore.inference.scale.AUTO`: each
            image's estimated from its nuclei), or ``None`` to read each image's own metadata,
            and where it records none, :data:`~segcore.inference.scale.PIXEL_SIZE_WHEN_UNKNOWN`.
        tile_size, overlap, batch_size: tiling (``tile_size`` ``None``: the bundle's).
        instances: also write the nuclei files.
        quiet: no progress bars.
    """

    bundle: Any
    model: Any
    out: Path
    threshold: float
    pixel_size: float | str | None
    tile_size: int | None
    overlap: int
    batch_size: int
    instances: bool
    quiet: bool


def _read(name: str) -> tuple[np.ndarray, float | None]:
    """The image and the pixel size its metadata records (a value out of range is logged as a
    warning and not used)."""
    from segcore.data.images import read_image
    from segcore.inference.resolution import read_pixel_size

    image = read_image(name)  # the header's size is checked first
    recorded = read_pixel_size(name)
    if recorded.note:
        log.warning("%s: %s", name, recorded.note)
    return image, recorded.value


def _write(job: PredictJob, name: str, image: np.ndarray, probs: np.ndarray, pixel_size) -> int:
    """Writes one image's outputs; returns 1 if it failed (reported), else 0."""
    stem = Path(name).stem
    write_probability_files(job.out, stem, probs, job.threshold)
    if job.instances:
        try:
            count = write_instance_files(
                job.out, stem, probs, image, job.bundle, job.threshold, pixel_size
            )
        except SegcoreError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 1
        log.info("%s: %d nuclei -> %s_labels.png, %s.geojson, %s_nuclei.csv", name, count,
                 stem, stem, stem)  # fmt: skip
    at = "the model's" if pixel_size is None else f"{pixel_size:g}"
    log.info(
        "%s -> %s_{prob,mask}.png (threshold %.2f, %s µm/px)",
        name,
        job.out / stem,
        job.threshold,
        at,
    )
    return 0


def _predict_auto(job: PredictJob, image: np.ndarray, label: str, tiling: dict):
    """Auto for one image (``--pixel-size auto``, or no pixel size anywhere): the first pass
    (at the model's pixel size) with its own progress bar, then
    :func:`~segcore.inference.scale.predict_auto`, whose second pass (only when the estimate is
    not the model's) has another. The nuclei are measured at the bundle's threshold (what the
    estimator was calibrated with), whatever ``--threshold``."""
    from segcore.inference.predict import predict_probabilities
    from segcore.inference.scale import predict_auto

    first = predict_probabilities(
        job.model, image, job.bundle.preprocess, progress=Progress(label, job.quiet), **tiling
    )
    return predict_auto(
        job.model,
        image,
        job.bundle.preprocess,
        threshold=job.bundle.threshold,
        model_pixel_size=job.bundle.pixel_size,
        first=first,
        progress=Progress(f"{label} at the estimated pixel size", job.quiet),
        **tiling,
    )


def predict_files(job: PredictJob, names: list[str]) -> int:
    """Predicts every file of ``names`` and writes its outputs (see the module docstring).

    Returns:
        How many files failed (each reported on stderr).
    """
    from segcore.inference.resolution import predict_at_pixel_size
    from segcore.inference.scale import PIXEL_SIZE_WHEN_UNKNOWN, is_auto

    failures = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="segcore-predict") as pool:
        next_read: Future | None = pool.submit(_read, names[0]) if names else None
        writing: Future | None = None
        for i, name in enumerate(names):
            read, next_read = (
                next_read,
                (pool.submit(_read, names[i + 1]) if i + 1 < len(names) else None),
            )
            try:
                image, own_pixel_size = read.result()
            except SegcoreError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failures += 1
                continue
            pixel_size = job.pixel_size if job.pixel_size is not None else own_pixel_size
            if pixel_size is None:
                pixel_size = PIXEL_SIZE_WHEN_UNKNOWN
            tiling = {
                "tile_size": job.tile_size or job.bundle.input_size,
                "overlap": job.overlap,
                "batch_size": job.batch_size,
            }
            label = f"{name} ({image.shape[1]}×{image.shape[0]})"
            try:
                if is_auto(pixel_size):
                    probs, estimate = _predict_auto(job, image, label, tiling)
                    log.info("%s: %s", name, estimate.describe())
                    pixel_size = estimate.pixel_size
                else:
                    probs = predict_at_pixel_size(
                        job.model,
                        image,
                        job.bundle.preprocess,
                        pixel_size=pixel_size,
                        model_pixel_size=job.bundle.pixel_size,
                        progress=Progress(label, job.quiet),
                        **tiling,
                    )
            except SegcoreError as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                failures += 1
                continue
            if writing is not None:
                failures += writing.result()
            writing = pool.submit(_write, job, name, image, probs, pixel_size)
        if writing is not None:
            failures += writing.result()
    return failures
