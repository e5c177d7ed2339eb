"""Opening a whole-slide image and reading regions of it: :func:`open_slide` → :class:`Slide`.

Vendor formats (Aperio SVS, Hamamatsu NDPI/VMS/VMU, MIRAX, Leica SCN, Ventana BIF, Philips
TIFF, DICOM, generic tiled TIFF) are read with OpenSlide (``openslide-python`` + the
``openslide-bin`` wheel that carries the native library;
:mod:`segcore.slides.openslide_backend`). OME-TIFF, whose SubIFD pyramid
OpenSlide sees as one level, and plain TIFFs OpenSlide refuses (stripped, untiled) are read
with ``tifffile`` (:mod:`segcore.slides.tiff_backend`).

A slide is never read whole: regions only, and a thumbnail from a reduced level. Coordinates
follow OpenSlide: a region's corner is in level-0 pixels, its size in pixels of the level read.
Pixels outside the slide and transparent pixels come back white (glass).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from segcore.data import images
from segcore.errors import ConfigError, SlideError
from segcore.inference.resolution import check_pixel_size
from segcore.slides import tiff_backend
from segcore.slides.openslide_backend import OpenSlideBackend

logger = logging.getLogger(__name__)

SLIDE_SUFFIXES: tuple[str, ...] = (
    ".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".tif", ".tiff", ".vms", ".vmu", ".svslide", ".dcm",
)  # fmt: skip
"""File suffixes offered as slides (``.ome.tif``/``.ome.tiff`` end in ``.tif``/``.tiff``)."""

FORMATS_READ = (
    "Aperio SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN, Ventana BIF, Philips TIFF, DICOM, "
    "tiled TIFF and OME-TIFF"
)
"""What :func:`open_slide` reads, in words (for error messages)."""

_BAND_PIXELS = 8_000_000  # pixels of a level read at once while making a thumbnail


@dataclass(frozen=True)
class SlideLevel:
    """One level of a slide's pyramid."""

    width: int
    height: int
    downsample: float  # level-0 pixels per pixel of this level


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: format, pyramid, pixel size.

    Attributes:
        path: the slide file.
        format: OpenSlide's vendor (``"aperio"``, ``"hamamatsu"``, ``"mirax"``,
            ``"generic-tiff"``, ...), ``"ome-tiff"``, or ``"tiff"`` for a TIFF read by tifffile.
        backend: ``"openslide"`` or ``"tifffile"``.
        levels: the pyramid, level 0 (full resolution) first.
        pixel_size: µm per level-0 pixel along x; None when the file records none usable.
        pixel_size_source: ``"openslide.mpp-x"``, ``"OME PhysicalSizeX"``,
            ``"TIFF resolution"``, ``"given"`` (the caller's) or ``"none"``.
        objective_power: the scanner's objective magnification, None when not recorded.
    """

    path: Path
    format: str
    backend: str
    levels: tuple[SlideLevel, ...]
    pixel_size: float | None
    pixel_size_source: str
    objective_power: float | None

    @property
    def width(self) -> int:
        """Level-0 width in pixels."""
        return self.levels[0].width

    @property
    def height(self) -> int:
        """Level-0 height in pixels."""
        return self.levels[0].height

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (for ``slide info --json``, run summaries and the app)."""
        return {
            "path": str(self.path),
            "name": self.path.name,
            "format": self.format,
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "levels": [
                {"width": lv.width, "height": lv.height, "downsample": lv.downsample}
                for lv in self.levels
            ],
            "pixel_size": self.pixel_size,
            "pixel_size_source": self.pixel_size_source,
            "objective_power": self.objective_power,
        }


class _Backend(Protocol):
    """What :class:`Slide` needs of a backend (``OpenSlideBackend``, ``TiffBackend``)."""

    format: str
    dimensions: list[tuple[int, int]]
    downsamples: list[float]
    pixel_size: float | None
    pixel_size_source: str
    objective_power: float | None

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray: ...

    def close(self) -> None: ...


class Slide:
    """An open slide. Use :func:`open_slide`; close it (or use it as a context manager).

    :meth:`read_region` may be called from several threads at once.

    Attributes:
        info: the slide's :class:`SlideInfo`.
    """

    def __init__(self, info: SlideInfo, backend: _Backend):
        self.info = info
        self._backend: _Backend | None = backend

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.info
        return (
            f"Slide({info.path.name!r}, {info.format}, {info.width}×{info.height}, "
            f"{len(info.levels)} levels, pixel size {info.pixel_size})"
        )

    def read_region(self, x: int, y: int, width: int, height: int, *, level: int = 0) -> np.ndarray:
        """Reads a region as RGB.

        Args:
            x, y: the top-left corner in level-0 pixel coordinates (as OpenSlide).
            width, height: the size in pixels of ``level``.
            level: the pyramid level to read.

        Returns:
            ``uint8`` RGB array of shape ``(height, width, 3)``; parts outside the slide and
            transparent pixels are white (255).

        Raises:
            SlideError: naming the file and the region: a bad level or size, a region over
                :data:`segcore.data.images.DEFAULT_MAX_PIXELS` pixels, a closed slide, or
                pixels that cannot be read (a corrupt or truncated file).
        """
        where = f"{self.info.path.name}: region x={x}, y={y}, {width}×{height} at level {level}"
        if not 0 <= level < len(self.info.levels):
            raise SlideError(f"{where}: the slide has levels 0–{len(self.info.levels) - 1}")
        if width < 1 or height < 1 or width * height > images.DEFAULT_MAX_PIXELS:
            raise SlideError(
                f"{where}: a region must have 1 to {images.DEFAULT_MAX_PIXELS:,} pixels"
            )
        backend = self._backend
        if backend is None:
            raise SlideError(f"{where}: the slide is closed")
        try:
            return backend.read(int(x), int(y), level, int(width), int(height))
        except SlideError:
            raise
        except Exception as exc:  # OpenSlideError, tifffile/imagecodecs errors, OSError
            raise SlideError(f"{where} cannot be read: {exc}") from exc

    def level_pixel_size(self, level: int) -> float | None:
        """µm per pixel of ``level``, or None when the slide's pixel size is unknown."""
        if self.info.pixel_size is None:
            return None
        return self.info.pixel_size * self.info.levels[level].downsample

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (1 % tolerance).

        Never coarser than asked: reading it and shrinking loses nothing. Level 0 when
        ``downsample`` is below every level's.
        """
        best = 0
        for index, level in enumerate(self.info.levels):
            if level.downsample <= downsample * 1.01 and level.downsample >= (
                self.info.levels[best].downsample
            ):
                best = index
        return best

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """The whole slide, small: RGB with its longer side at most ``max_side``.

        Read from the coarsest level that is at least as fine as the thumbnail (never a large
        level 0), in bands, then shrunk with area averaging.

        Returns:
            ``(rgb, downsample)``: the thumbnail and the level-0 pixels per thumbnail pixel.

        Raises:
            SlideError: as for :meth:`read_region`; ``max_side`` below 1.
        """
        if max_side < 1:
            raise SlideError(f"{self.info.path.name}: a thumbnail needs max_side ≥ 1")
        width, height = self.info.width, self.info.height
        scale = min(1.0, max_side / max(width, height))
        t_width, t_height = max(1, round(width * scale)), max(1, round(height * scale))
        downsample = (width / t_width + height / t_height) / 2
        level = self.level_for_downsample(downsample)
        lv = self.info.levels[level]
        # Thumbnail rows per band, so that one band of the level holds about _BAND_PIXELS.
        band = max(1, int(_BAND_PIXELS / lv.width * t_height / lv.height))
        bands = []
        for top in range(0, t_height, band):
            bottom = min(t_height, top + band)
            row0 = math.floor(top * lv.height / t_height)
            row1 = max(row0 + 1, math.ceil(bottom * lv.height / t_height))
            y = math.ceil(row0 * lv.downsample)
            pixels = self.read_region(0, y, lv.width, row1 - row0, level=level)
            bands.append(_shrink(pixels, t_width, bottom - top))
        return np.concatenate(bands, axis=0), downsample

    def close(self) -> None:
        """Releases the file; later reads raise :class:`SlideError`. Call it once no other
        thread is reading (OpenSlide frees the handle under a read in flight)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


def _shrink(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _file_pixel_size(name: str, value: float | None, source: str) -> tuple[float | None, str]:
    """The file's pixel size when within range; out-of-range values are treated as absent."""
    if value is None:
        return None, "none"
    try:
        return check_pixel_size(float(value), what=f"{name}: {source}"), source
    except (ConfigError, ValueError) as exc:
        logger.info("ignoring the pixel size recorded in the file: %s", exc)
        return None, "none"


def _parse_tiff(path: Path) -> tuple[Any, str | None]:
    """``(tifffile.TiffFile, None)`` for a TIFF that parses, else ``(None, the problem)``.

    Raises:
        SlideError: the TIFF parses but a directory or a page's data lies past the end of the
            file (truncated).
    """
    import tifffile

    tiff_backend.check_directories(path)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # TiffFileError, or anything tifffile trips on in a corrupt file
        return None, str(exc) or type(exc).__name__
    try:
        pages = [p for p in tif.pages if hasattr(p, "dataoffsets")]
        tiff_backend.check_complete(path, pages)
    except SlideError:
        tif.close()
        raise
    except Exception as exc:  # tifffile's lazy page parsing on a malformed file
        tif.close()
        return None, str(exc)
    return tif, None


def _open_backend(path: Path) -> tuple[_Backend, str]:
    """Chooses the backend: tifffile for OME-TIFF and TIFFs OpenSlide refuses, else OpenSlide.

    Returns:
        ``(backend, its name)``.
    """
    import openslide

    tif, tiff_problem = _parse_tiff(path) if tiff_backend.is_tiff(path) else (None, None)
    try:
        if tif is not None and tif.is_ome:
            return _tifffile_backend(path, tif), "tifffile"
        vendor = openslide.OpenSlide.detect_format(str(path))
        if vendor:
            if tif is not None:
                tif.close()
            return OpenSlideBackend(path, vendor), "openslide"
        if tif is not None:
            return _tifffile_backend(path, tif), "tifffile"
    except BaseException:
        if tif is not None:
            tif.close()
        raise
    if tiff_problem:
        raise SlideError(
            f"{path.name}: a TIFF that cannot be read, truncated or corrupt? ({tiff_problem})"
        )
    raise SlideError(f"{path.name}: not a slide (reads {FORMATS_READ})")


def _tifffile_backend(path: Path, tif: Any) -> tiff_backend.TiffBackend:
    """The tifffile backend of ``tif``; a TIFF whose structure it cannot follow is a
    :class:`SlideError` (a foreign file, not a bug of ours)."""
    try:
        backend = tiff_backend.TiffBackend(path, tif)
    except SlideError:
        raise
    except Exception as exc:  # tifffile's series and page parsing on a malformed file
        raise SlideError(f"{path.name}: a TIFF that cannot be read as a slide ({exc})") from exc
    tiff_backend.check_complete(path, backend.pages)
    return backend


def open_slide(path: str | os.PathLike, *, pixel_size: float | None = None) -> Slide:
    """Opens a whole-slide image.

    Args:
        path: the slide file (for MIRAX the ``.mrxs`` beside its data folder).
        pixel_size: µm per level-0 pixel; supplies or overrides the file's (source
            ``"given"``).

    Returns:
        The open :class:`Slide` (close it, or use ``with``).

    Raises:
        SlideError: one line naming the file: missing, a folder, not a slide (the message says
            which formats are read), truncated or corrupt, or without a level small enough for
            an overview (more than :data:`segcore.data.images.DEFAULT_MAX_PIXELS` pixels: no
            pyramid).
        ConfigError: ``pixel_size`` outside :data:`~segcore.data.images.PIXEL_SIZE_RANGE`.
    """
    path = Path(path)
    given = None if pixel_size is None else check_pixel_size(pixel_size, what="the pixel size")
    if path.is_dir():
        raise SlideError(f"{path}: a folder, not a slide file")
    if not path.is_file():
        raise SlideError(f"{path}: no such slide file")
    try:
        backend, backend_name = _open_backend(path)
    except OSError as exc:
        raise SlideError(f"{path.name}: cannot be read ({exc})") from exc
    if given is not None:
        pixel_size, source = given, "given"
    else:
        pixel_size, source = _file_pixel_size(
            path.name, backend.pixel_size, backend.pixel_size_source
        )
    info = SlideInfo(
        path=path,
        format=backend.format,
        backend=backend_name,
        levels=tuple(
            SlideLevel(w, h, d)
            for (w, h), d in zip(backend.dimensions, backend.downsamples, strict=True)
        ),
        pixel_size=pixel_size,
        pixel_size_source=source,
        objective_power=backend.objective_power,
    )
    smallest = min(info.levels, key=lambda lv: lv.width * lv.height)
    if smallest.width * smallest.height > images.DEFAULT_MAX_PIXELS:
        backend.close()
        raise SlideError(
            f"{path.name}: no pyramid; its smallest level is {smallest.width}×{smallest.height} "
            f"(over {images.DEFAULT_MAX_PIXELS:,} pixels); convert it with e.g. "
            "`vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg`"
        )
    logger.debug("opened %s", info)
    return Slide(info, backend)
