"""The nuclei-density heat map of a whole-slide run, at the tissue mask's resolution.

* ``density.npy`` — float32 nuclei per mm²: the centroids counted per mask cell
  (:class:`DensityCounter`), divided by the cell's area (``(downsample × µm/px)²``, every cell
  taken as a full square), not smoothed, so ``sum(density) × cell area == nuclei``;
* ``density.png`` — the same map for display: smoothed (a Gaussian of
  :data:`DENSITY_SMOOTHING_UM` µm, normalised over the tissue so that its edges do not fade),
  coloured (``inferno``, from 0 to the 99th percentile over the tissue, which the summary
  gives), transparent outside the tissue mask and the region.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcore.errors import SlideError
from segcore.wholeslide.outputs import DENSITY_NPY, DENSITY_PNG, atomic_output

__all__ = [
    "DENSITY_SMOOTHING_UM",
    "DensityCounter",
    "density_per_mm2",
    "density_picture",
    "write_density",
]

DENSITY_SMOOTHING_UM = 50.0
"""Sigma of the Gaussian smoothing of ``density.png``, µm."""

_MAX_SIGMA = 8.0


class DensityCounter:
    """Centroids counted per tissue-mask cell.

    Args:
        shape: ``(h, w)`` of the mask.
        downsample: level-0 pixels per mask cell.
    """

    def __init__(self, shape: tuple[int, int], downsample: float):
        self.counts = np.zeros(shape, np.int64)
        self.downsample = downsample

    def add(self, xs: list[float], ys: list[float]) -> None:
        """Counts centroids given in level-0 pixels (those past the mask's edge in its last
        row or column)."""
        if not xs:
            return
        height, width = self.counts.shape
        cols = np.clip((np.asarray(xs) / self.downsample).astype(np.int64), 0, width - 1)
        rows = np.clip((np.asarray(ys) / self.downsample).astype(np.int64), 0, height - 1)
        np.add.at(self.counts, (rows, cols), 1)


def density_per_mm2(counts: np.ndarray, cell_um: float) -> np.ndarray:
    """Nuclei per mm² of each cell: ``counts / (cell_um / 1000)²``, float32."""
    return (counts / (cell_um / 1000.0) ** 2).astype(np.float32)


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one (a fine mask: small slides) on a coarser copy, then enlarged
    back, so it costs the same whatever ``sigma``."""
    if sigma <= _MAX_SIGMA:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    factor = sigma / _MAX_SIGMA
    height, width = values.shape
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    coarse = cv2.resize(values, small, interpolation=cv2.INTER_AREA)
    coarse = cv2.GaussianBlur(coarse, (0, 0), _MAX_SIGMA)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def density_picture(density: np.ndarray, visible: np.ndarray, cell_um: float):
    """The coloured heat map (see the module docstring).

    Args:
        density: nuclei per mm² per cell.
        visible: bool, the cells shown (tissue inside the region); the rest is transparent.
        cell_um: side of a cell, µm.

    Returns:
        ``(rgba, top)``: uint8 RGBA ``(h, w, 4)`` and the density the brightest colour stands
        for (nuclei per mm²).
    """
    sigma = DENSITY_SMOOTHING_UM / cell_um
    weight = visible.astype(np.float32)
    if sigma >= 0.3:
        smooth = _blur(density * weight, sigma)
        norm = _blur(weight, sigma)
        smoothed = np.divide(smooth, norm, out=np.zeros_like(smooth), where=norm > 1e-3)
        smoothed *= weight
    else:
        smoothed = density * weight
    top = float(np.percentile(smoothed[visible], 99)) if visible.any() else 0.0
    scaled = np.clip(smoothed / top, 0, 1) if top > 0 else np.zeros_like(smoothed)
    bgr = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    rgba = np.dstack([bgr[..., ::-1], np.where(visible, 255, 0).astype(np.uint8)])
    return rgba, top


def write_density(out_dir: Path, density: np.ndarray, rgba: np.ndarray) -> None:
    """Writes ``density.npy`` and ``density.png`` atomically."""
    with atomic_output(out_dir / DENSITY_NPY) as handle:
        np.save(handle, density, allow_pickle=False)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGRA array
        raise SlideError(f"could not encode {out_dir / DENSITY_PNG}")
    with atomic_output(out_dir / DENSITY_PNG) as handle:
        handle.write(png.tobytes())
