"""What the app shows of a whole slide: its overview (metadata, thumbnail, tissue), pictures of
the tissue outline and of the nuclei-density heat map over the thumbnail, and the regions a
click opens.

A slide is never read whole: :func:`open_overview` reads one thumbnail (from a low level) and
finds the tissue on it; :func:`read_region` reads one region at full resolution for the
explorer. Coordinates are level-0 pixels, as in :mod:`segcore.slides.reader`; a thumbnail pixel
is ``downsample`` level-0 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segcore.analysis.overlays import PALETTE
from segcore.errors import SlideError
from segcore.slides.reader import SlideInfo, open_slide
from segcore.slides.tissue import TissueConfig, TissueMask, detect_tissue, slide_tissue

REGION_SIDE = 1000
"""Side of the region a click opens, in level-0 pixels."""

OVERVIEW_SIDE = 1024
"""Longer side of the overview thumbnail (and of the tissue mask computed on it)."""

TISSUE_COLOR = PALETTE["false_negative"].rgb
"""The tissue outline's colour (Okabe–Ito blue)."""

REGION_COLOR = PALETTE["false_positive"].rgb
"""The opened region's frame colour (Okabe–Ito vermillion)."""

Box = tuple[int, int, int, int]
"""A level-0 box: ``(x, y, width, height)``."""


def slide_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """What identifies a slide file in cache keys: its path, size and modification time (ns).

    Raises:
        SlideError: the file is missing or cannot be looked at.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise SlideError(f"{path.name}: no such slide file ({exc.strerror})") from exc
    return (str(path), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class SlideOverview:
    """A slide seen whole: its metadata, thumbnail and the tissue found at Otsu's threshold.

    Attributes:
        info: the slide's :class:`~segcore.slides.reader.SlideInfo`.
        thumbnail: ``uint8`` RGB, longer side at most :data:`OVERVIEW_SIDE`.
        downsample: level-0 pixels per thumbnail pixel.
        tissue: the tissue at Otsu's threshold (:func:`~segcore.slides.tissue.detect_tissue`).
        identity: :func:`slide_identity` of the file when it was opened.
    """

    info: SlideInfo
    thumbnail: np.ndarray
    downsample: float
    tissue: TissueMask
    identity: tuple[str, int, int]

    def tissue_at(self, threshold: float | None) -> TissueMask:
        """The tissue at ``threshold`` (on the saturation score, in [0, 1]); ``None``: Otsu's."""
        if threshold is None or threshold == self.tissue.threshold:
            return self.tissue
        return detect_tissue(
            self.thumbnail,
            downsample=self.downsample,
            pixel_size=self.info.pixel_size,
            config=TissueConfig(threshold=float(threshold), max_side=OVERVIEW_SIDE),
        )

    def to_level0(self, x: float, y: float, shown_width: float, shown_height: float):
        """The level-0 point of a click at ``(x, y)`` on the thumbnail shown ``shown_width`` ×
        ``shown_height`` pixels large (a browser may scale it), clipped to the slide."""
        height, width = self.thumbnail.shape[:2]
        level0_x = x * width / max(shown_width, 1) * self.downsample
        level0_y = y * height / max(shown_height, 1) * self.downsample
        return (
            int(min(max(level0_x, 0), self.info.width - 1)),
            int(min(max(level0_y, 0), self.info.height - 1)),
        )


def open_overview(path: str | os.PathLike) -> SlideOverview:
    """Opens a slide, reads its thumbnail and finds its tissue; the file is closed after.

    Raises:
        SlideError: the file is not a slide, or cannot be read (one line naming it).
    """
    identity = slide_identity(path)
    with open_slide(path) as slide:
        thumbnail, tissue = slide_tissue(slide, TissueConfig(max_side=OVERVIEW_SIDE))
        return SlideOverview(slide.info, thumbnail, tissue.downsample, tissue, identity)


def describe(info: SlideInfo, pixel_size: float | None = None) -> dict[str, str]:
    """The slide's metadata as read-outs (label → text): format, size, levels, pixel size and
    where it comes from, objective. ``pixel_size``: the one the user gave when the file records
    none."""
    if info.pixel_size is not None:
        size = f"{info.pixel_size:.3g} µm/px"
        source = f"from {info.pixel_size_source}"
    elif pixel_size is not None:
        size, source = f"{pixel_size:.3g} µm/px", "given below (the file records none)"
    else:
        size, source = "unknown", "the file records none"
    objective = "–" if info.objective_power is None else f"{info.objective_power:g}×"
    return {
        "Format": f"{info.format} ({info.backend})",
        "Size (level 0)": f"{info.width:,d} × {info.height:,d} px",
        "Levels": f"{len(info.levels)} (down to 1/{info.levels[-1].downsample:.3g})",
        "Pixel size": f"{size} — {source}",
        "Objective": objective,
    }


def tissue_readouts(tissue: TissueMask, pixel_size: float | None) -> dict[str, str]:
    """The tissue's fraction of the slide and its area in mm² (``pixel_size``: µm per level-0
    pixel; without one the area reads "–")."""
    area = "–" if pixel_size is None else f"{tissue.area_mm2(pixel_size):,.2f} mm²"
    return {
        "Tissue fraction": f"{tissue.fraction:.1%}",
        "Tissue area": area,
    }


def shown_size(picture: np.ndarray, longer_side: int) -> dict[str, int]:
    """``{"width", "height"}`` of ``picture`` scaled so that its longer side is
    ``longer_side`` (never enlarged), for showing a thumbnail at a fixed size."""
    height, width = picture.shape[:2]
    scale = min(1.0, longer_side / max(height, width))
    return {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}


def clip_box(x: int, y: int, width: int, height: int, side: int = REGION_SIDE) -> Box:
    """The ``side`` × ``side`` level-0 box whose top-left corner is ``(x, y)``, moved and cut so
    that it lies inside a ``width`` × ``height`` slide."""
    w, h = min(side, width), min(side, height)
    x = int(min(max(x, 0), width - w))
    y = int(min(max(y, 0), height - h))
    return (x, y, int(w), int(h))


def box_around(x: int, y: int, width: int, height: int, side: int = REGION_SIDE) -> Box:
    """The ``side`` × ``side`` level-0 box centred on ``(x, y)``, clipped to the slide
    (:func:`clip_box`)."""
    return clip_box(x - side // 2, y - side // 2, width, height, side)


def tissue_box(view: SlideOverview, tissue: TissueMask, side: int = REGION_SIDE) -> Box:
    """The box a slide opens on before any click: around the tissue pixel nearest to the
    tissue's centre of mass (the slide's centre when there is no tissue)."""
    rows, cols = np.nonzero(tissue.mask)
    if len(rows):
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        x, y = (cols[nearest] + 0.5) * view.downsample, (rows[nearest] + 0.5) * view.downsample
    else:
        x, y = view.info.width / 2, view.info.height / 2
    return box_around(int(x), int(y), view.info.width, view.info.height, side)


def read_region(path: str | os.PathLike, box: Box) -> tuple[np.ndarray, None]:
    """The level-0 pixels of ``box``, as the explorer's loader wants them: ``(rgb, None)``
    (no ground truth).

    Raises:
        SlideError: the region cannot be read (naming the file and the region).
    """
    with open_slide(path) as slide:
        return slide.read_region(*box), None


def _thumbnail_box(box: Box, downsample: float, shape: tuple[int, ...]) -> tuple[int, ...]:
    x, y, w, h = (v / downsample for v in box)
    right = min(shape[1] - 1, round(x + max(w, 2)))
    bottom = min(shape[0] - 1, round(y + max(h, 2)))
    return round(x), round(y), right, bottom


def outline_picture(overview: SlideOverview, tissue: TissueMask, box: Box | None = None):
    """The thumbnail with the tissue outlined (:data:`TISSUE_COLOR`) and, when ``box`` is
    given, the opened region framed (:data:`REGION_COLOR`); ``uint8`` RGB."""
    picture = overview.thumbnail.copy()
    thickness = max(1, round(max(picture.shape[:2]) / 400))
    contours, _ = cv2.findContours(
        tissue.mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(picture, contours, -1, TISSUE_COLOR, thickness)
    if box is not None:
        x0, y0, x1, y1 = _thumbnail_box(box, overview.downsample, picture.shape)
        cv2.rectangle(picture, (x0, y0), (x1, y1), REGION_COLOR, thickness + 1)
    return picture


def density_overlay(thumbnail: np.ndarray, rgba: np.ndarray, opacity: float = 0.7) -> np.ndarray:
    """A run's density heat map (``density.png``: RGBA, transparent off the tissue, at the
    tissue mask's resolution) laid over the thumbnail with ``opacity``; ``uint8`` RGB."""
    height, width = thumbnail.shape[:2]
    layer = cv2.resize(rgba, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = layer[..., 3:4].astype(np.float32) / 255.0 * float(opacity)
    mixed = thumbnail.astype(np.float32) * (1.0 - alpha) + layer[..., :3] * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def run_readouts(summary: Mapping) -> dict[str, str]:
    """A whole-slide run's counts (from its ``summary.json``) as read-outs."""
    density = summary.get("density_per_mm2")
    seconds = summary.get("seconds")
    return {
        "Nuclei (whole slide)": f"{int(summary.get('nuclei', 0)):,d}",
        "Tissue segmented": f"{float(summary.get('tissue_mm2', 0.0)):,.2f} mm²",
        "Nuclei density": "–" if density is None else f"{density:,.0f} /mm²",
        "Run time": "–"
        if seconds is None
        else f"{seconds:,.1f} s" + (" (with test-time flips)" if summary.get("flips") else ""),
    }
