"""Nuclei as objects: an instance-label image from a probability map.

The model gives one probability per pixel; touching nuclei form one blob in its mask. This
module splits them with a marker-controlled watershed on the distance transform:

1. ``mask = probabilities >= threshold``, holes filled;
2. ``distance`` = Euclidean distance of each mask pixel to the background (µm), lightly
   smoothed;
3. markers = the regional maxima of ``distance`` that stand at least ``split_depth_um`` above
   the saddle joining them to a higher maximum (an h-maxima transform): two round nuclei
   touching at a neck become two markers when the neck is that much thinner (in radius) than
   the smaller nucleus;
4. watershed of ``-distance`` from the markers, inside the mask;
5. objects smaller than ``min_area_um2`` dropped; labels renumbered ``1..N``.

Lengths are in µm and converted with the image's pixel size, so the same settings hold at 20×
and 40×. The settings live in the model's card (chosen on validation tiles) and can be changed
in the app without re-running the model: this works on the cached probabilities.

No TensorFlow; uses OpenCV, SciPy and scikit-image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import reconstruction
from skimage.segmentation import watershed

from segcore.configs import JsonConfig
from segcore.errors import ConfigError
from segcore.metrics.counts import check_threshold
from segcore.metrics.labels import consecutive_labels

__all__ = ["InstanceConfig", "label_instances"]


@dataclass(frozen=True)
class InstanceConfig(JsonConfig):
    """How a probability map becomes nuclei (saved in the model card as ``instances``).

    Args:
        min_area_um2: objects smaller than this many µm² are dropped (specks), defaults to
            8.0 (a nucleus of about 3 µm across; MoNuSeg's median is about 40 µm²).
            The defaults are what ``tune-instances`` chose for the v4 default model on the
            MoNuSeg validation tiles.
        split_depth_um: how much thinner, in µm of radius, the neck between two touching
            nuclei must be than the smaller of them for the watershed to split them; smaller
            values split more; ``0`` would split at every local maximum, a large value (say
            10) never splits (connected components). Defaults to 0.15.
        fill_holes: fill holes inside each object before splitting, defaults to True.
    """

    min_area_um2: float = 8.0
    split_depth_um: float = 0.15
    fill_holes: bool = True

    def __post_init__(self):
        for name in ("min_area_um2", "split_depth_um"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"InstanceConfig.{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"InstanceConfig.{name} must be >= 0, got {value!r}")
        if not isinstance(self.fill_holes, bool):
            raise ConfigError(
                f"InstanceConfig.fill_holes must be true or false, got {self.fill_holes!r}"
            )


def _h_domes(distance: np.ndarray, depth_px: float) -> np.ndarray:
    """``distance`` minus its reconstruction from ``distance - depth_px``: the h-domes.

    Done per connected blob on its bounding box: several times faster than one
    reconstruction over the whole image, which also walks the background.
    """
    domes = np.zeros_like(distance)
    blobs, _ = ndimage.label(distance > 0, structure=np.ones((3, 3)))
    for index, box in enumerate(ndimage.find_objects(blobs), start=1):
        inside = blobs[box] == index
        values = np.where(inside, distance[box], 0)
        seed = np.maximum(values - depth_px, 0)
        domes[box] += np.where(inside, values - reconstruction(seed, values), 0)
    return domes


def _markers(distance: np.ndarray, depth_px: float) -> np.ndarray:
    """Labels of the h-maxima of ``distance`` (height ``depth_px``), 8-connected."""
    if depth_px <= 0:
        peaks = distance == ndimage.maximum_filter(distance, size=3)
    else:
        peaks = _h_domes(distance, depth_px) >= depth_px * 0.999 - 1e-6
    peaks &= distance > 0
    _, markers = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    return markers


def _drop_small(labels: np.ndarray, min_pixels: float) -> np.ndarray:
    areas = np.bincount(labels.ravel())
    small = areas < min_pixels
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels


def label_instances(
    probabilities: np.ndarray,
    threshold: float,
    config: InstanceConfig | None = None,
    *,
    pixel_size: float = 0.25,
) -> np.ndarray:
    """Instance labels of the nuclei in a probability map.

    Args:
        probabilities: ``(H, W)`` float probabilities in ``[0, 1]``.
        threshold: a pixel is nucleus when its probability is ``>= threshold``.
        config: the splitting and size settings, defaults to ``InstanceConfig()``.
        pixel_size: µm per pixel of ``probabilities``' grid (converts the µm settings).

    Returns:
        ``int32 (H, W)``: 0 background, nuclei ``1..N``.

    Raises:
        ConfigError: a bad threshold or pixel size.
    """
    config = config or InstanceConfig()
    threshold = check_threshold(threshold)
    if not (isinstance(pixel_size, int | float) and pixel_size > 0):
        raise ConfigError(f"pixel size must be > 0 µm/px, got {pixel_size!r}")
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2:
        raise ConfigError(f"probabilities must be (H, W), got shape {probabilities.shape}")
    mask = probabilities >= threshold
    if config.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    mask = mask.astype(np.uint8)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = cv2.GaussianBlur(distance, (0, 0), 1.0) * mask
    markers = _markers(distance, config.split_depth_um / pixel_size)
    labels = watershed(-distance, markers, mask=mask.astype(bool)).astype(np.int32)
    # A blob lower than the split depth has no marker: it is one nucleus as it stands.
    unreached = (mask > 0) & (labels == 0)
    if unreached.any():
        _, extra = cv2.connectedComponents(unreached.astype(np.uint8), connectivity=8)
        labels = np.where(extra > 0, extra + labels.max(), labels)
    labels = _drop_small(labels, config.min_area_um2 / pixel_size**2)
    return consecutive_labels(labels)[0]
