"""How long a training will take on this machine, from the measured speed of a past run.

The speed is measured, never guessed: :func:`measured_speed` takes the newest *completed* run in
the runs folder that trained on the same kind of device (its status's ``lock``, or ``device``),
and divides the median of its ``epoch_time_s`` (``metrics.csv``) by the crops of one of its
epochs (``steps_per_epoch`` in ``status.json`` times its batch size, or its
``crops_per_epoch``). A run with the same kind of crops (raw-context crops or not) is preferred.
:func:`estimate` scales that to a config: crops per epoch × epochs, by the square of the crop
side; what the measured run spent outside its epochs (loading, scoring validation sources,
the final evaluation) is added per epoch when both runs score validation sources or both do not.
Without such a run the estimate is unknown (:attr:`Estimate.text` says so).

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from segcore.data.datasets import ArraySampleSet, FileSampleSet, SampleSet
from segcore.data.images import image_shape
from segcore.errors import SegcoreError
from segcore.training import devices
from segcore.training.config import TrainConfig
from segcore.training.locks import lock_path
from segcore.training.runs import RunDir, default_runs_dir, list_runs

UNKNOWN_TEXT = (
    "How long: unknown until a training has completed on this machine (its measured speed is "
    "used for the estimate)."
)


@dataclass(frozen=True)
class Speed:
    """The measured training speed of one completed run.

    Attributes:
        run_id: the run it was measured on.
        seconds_per_crop: median epoch time divided by the crops of an epoch.
        image_size: that run's crop side.
        raw_crops: whether it cut raw-context crops (slower per crop).
        has_sources: whether it scored validation sources after every epoch.
        overhead_per_epoch_s: its wall time outside the epochs, per epoch, or None if unknown.
    """

    run_id: str
    seconds_per_crop: float
    image_size: int
    raw_crops: bool
    has_sources: bool
    overhead_per_epoch_s: float | None = None


@dataclass(frozen=True)
class Estimate:
    """How long a config will take: ``seconds`` (None when unknown) and why."""

    seconds: float | None
    epochs: int
    crops_per_epoch: int | None
    image_size: int
    speed: Speed | None
    overhead_included: bool = False

    @property
    def text(self) -> str:
        """One line for the form, e.g. ``"About 1 h 12 min on this machine (8 epochs of 600
        crops of 256², at the speed measured on run-…)"``."""
        if self.speed is None:
            return UNKNOWN_TEXT
        if self.seconds is None:
            return (
                "How long: unknown for these settings — give the crops per epoch (measured "
                f"speed: {self.speed.seconds_per_crop:.2f} s per crop of "
                f"{self.speed.image_size}², on {self.speed.run_id})."
            )
        extra = "" if self.overhead_included else "; validation scoring not included"
        return (
            f"About {format_duration(self.seconds)} on this machine ({self.epochs} epochs of "
            f"{self.crops_per_epoch} crops of {self.image_size}², at the speed measured on "
            f"{self.speed.run_id}{extra})."
        )


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"1 h 05 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _same_device(status: dict, key: str, runs_dir: Path) -> bool:
    """Whether the run of ``status`` trained on the device of lock ``key``."""
    if status.get("lock"):
        return status["lock"] == lock_path(runs_dir, key).name
    device = str(status.get("device") or "")
    if not device:
        return False
    return (device == "CPU") == (key == "cpu")


def _timestamp(text) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


def speed_of(run: RunDir) -> Speed | None:
    """The speed measured on ``run`` (completed, with epoch times and ``steps_per_epoch``),
    or None."""
    try:
        status = run.read_status()
        if status.get("state") != "completed":
            return None
        config = TrainConfig.from_dict(run.read_config())
        times = [r["epoch_time_s"] for r in run.read_metrics() if r.get("epoch_time_s")]
    except (SegcoreError, ValueError, KeyError):
        return None
    steps = int(status.get("steps_per_epoch") or 0)
    drawn = steps * config.batch_size  # what the run drew (its own share, if replay was absent)
    crops = min(config.crops_per_epoch, drawn) if config.crops_per_epoch else drawn
    if not times or not steps or not crops:
        return None
    overhead = None
    start, end = _timestamp(status.get("started_at")), _timestamp(status.get("ended_at"))
    if start is not None and end is not None and end - start >= sum(times):
        overhead = (end - start - sum(times)) / len(times)
    augment = config.augment_config()
    return Speed(
        run_id=run.run_id,
        seconds_per_crop=statistics.median(times) / crops,
        image_size=config.image_size,
        raw_crops=bool(augment and augment.raw_crops),
        has_sources=bool(config.validation_sources),
        overhead_per_epoch_s=overhead,
    )


def measured_speed(
    runs_dir: str | os.PathLike | None = None,
    *,
    device_key: str | None = None,
    raw_crops: bool | None = None,
    limit: int = 50,
) -> Speed | None:
    """The speed of the newest completed run on this kind of device in ``runs_dir``.

    Args:
        runs_dir: where runs live, defaults to :func:`segcore.training.runs.default_runs_dir`.
        device_key: the device lock key, defaults to
            :func:`segcore.training.devices.default_lock_key`.
        raw_crops: prefer a run that cut raw-context crops (True) or not (False); any run
            serves when none matches.
        limit: look at this many newest runs at most.

    Returns:
        Its :class:`Speed`, or None when no completed run on this device was measured.
    """
    root = Path(runs_dir if runs_dir is not None else default_runs_dir())
    key = device_key or devices.default_lock_key()
    found = []
    for run in list_runs(root)[:limit]:
        try:
            status = run.read_status_raw()
        except SegcoreError:
            continue
        if status.get("state") != "completed" or not _same_device(status, key, root):
            continue
        speed = speed_of(run)
        if speed is None:
            continue
        if raw_crops is None or speed.raw_crops == raw_crops:
            return speed
        found.append(speed)
    return found[0] if found else None


def estimate(config: TrainConfig, speed: Speed | None, crops_per_epoch: int | None) -> Estimate:
    """How long ``config`` takes at ``speed``.

    Args:
        config: the settings.
        speed: the measured speed (:func:`measured_speed`), or None (then unknown).
        crops_per_epoch: the crops one epoch will draw (e.g.
            :func:`segcore.training.replay.planned_crops`, or what the dataset gives when the
            config leaves it open); None: ``config.crops_per_epoch``, which may be unknown too.
    """
    crops = crops_per_epoch if crops_per_epoch is not None else config.crops_per_epoch
    base = dict(
        epochs=config.epochs, crops_per_epoch=crops, image_size=config.image_size, speed=speed
    )
    if speed is None or not crops:
        return Estimate(seconds=None, **base)
    per_crop = speed.seconds_per_crop * (config.image_size / speed.image_size) ** 2
    seconds = config.epochs * crops * per_crop
    overhead = speed.overhead_per_epoch_s is not None and speed.has_sources == bool(
        config.validation_sources
    )
    if overhead:
        seconds += config.epochs * speed.overhead_per_epoch_s
    complete = overhead or not config.validation_sources
    return Estimate(seconds=seconds, overhead_included=complete, **base)


def tiles_per_image(shape: tuple[int, int], image_size: int) -> int:
    """The crops one image gives an epoch when ``crops_per_epoch`` is None (as the pipeline:
    tiles of ``image_size`` covering it, after padding to at least one tile)."""
    height, width = (max(int(side), image_size) for side in shape[:2])
    return math.ceil(height / image_size) * math.ceil(width / image_size)


def epoch_crops(train: SampleSet, image_size: int, sample: int = 200) -> int | None:
    """The crops of one epoch over ``train`` when ``crops_per_epoch`` is None: the tiles of
    ``image_size`` covering each image (read from the file headers of at most ``sample``
    images, spread over the set, and extrapolated), or None when the sizes cannot be read."""
    n = len(train)
    if not n:
        return None
    if isinstance(train, ArraySampleSet):
        shape = np.load(train.images_file, mmap_mode="r", allow_pickle=False).shape[1:3]
        return n * tiles_per_image(shape, image_size)
    if not isinstance(train, FileSampleSet):
        return None
    picks = sorted({round(i * (n - 1) / max(1, min(n, sample) - 1)) for i in range(min(n, sample))})
    try:
        tiles = [tiles_per_image(image_shape(train.pairs[i].image), image_size) for i in picks]
    except (SegcoreError, OSError, ValueError):
        return None
    return round(sum(tiles) * n / len(picks))
