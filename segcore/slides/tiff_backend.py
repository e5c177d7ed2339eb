"""Reading slides with tifffile: OME-TIFF pyramids and the TIFFs that OpenSlide does not read.

OpenSlide sees an OME-TIFF whose reduced levels are SubIFDs (the layout of Bio-Formats,
QuPath and ``tifffile``) as one level without a pixel size, and refuses stripped (untiled)
TIFFs. :class:`TiffBackend` reads both through ``tifffile``: it decodes only the tiles (or
strips) under the region asked for, with ``imagecodecs`` for JPEG, LZW and the other codecs.
``tiffslide`` would do the same through zarr 3; a hundred lines here avoid zarr, numcodecs and
tiffslide's cap on tifffile's version, and keep the locking in our hands.

Thread safety: the file handle is shared, so its seeks and reads are serialised by a lock;
decoding (most of the time) runs outside it, in parallel.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from segcore.errors import SlideError

logger = logging.getLogger(__name__)

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""The first four bytes of a classic or BigTIFF file, either byte order."""

_OME_UNITS_UM = {
    "µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "pm": 1e-6, "Å": 1e-4,
    "mm": 1e3, "cm": 1e4, "m": 1e6,
}  # fmt: skip
_RESOLUTION_UNIT_UM = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre
MAX_TILE_PIXELS = 1 << 26
"""Largest tile accepted (8192², far above the 240–1024² that scanners write)."""
_PHOTOMETRIC_OK = {0, 1, 2, 6}  # MINISWHITE, MINISBLACK, RGB, YCBCR (JPEG only)
_JPEG = {6, 7, 33007, 34892}


def is_tiff(path: Path) -> bool:
    """True when the file starts with a TIFF (or BigTIFF) signature."""
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGIC


def check_complete(path: Path, pages: list[tifffile.TiffPage]) -> None:
    """Raises :class:`SlideError` when a tile or strip of ``pages`` lies past the end of the file,
    or a page's tiles are of an impossible size.

    A slide cut short (an interrupted copy or download) otherwise opens and fails, or returns
    garbage, only where the missing tiles are read.
    """
    size = os.path.getsize(path)
    for page in pages:
        tile = (page.tilewidth, page.tilelength) if getattr(page, "is_tiled", False) else None
        if tile and not (1 <= tile[0] * tile[1] <= MAX_TILE_PIXELS):
            # A corrupt tile size makes OpenSlide abort the process on a huge allocation.
            raise SlideError(f"{path.name}: corrupt — tiles of {tile[0]}×{tile[1]} pixels")
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.shape != counts.shape:
            raise SlideError(
                f"{path.name}: corrupt — {offsets.size} tile offsets but {counts.size} byte counts"
            )
        if offsets.size and int((offsets + counts).max()) > size:
            end = int((offsets + counts).max())
            raise SlideError(
                f"{path.name}: truncated or incomplete — its image data runs to byte {end:,} "
                f"but the file has {size:,} bytes; copy the slide again"
            )


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TYPE_SIZES.update({16: 8, 17: 8, 18: 8})  # BigTIFF's 64-bit integers and IFD8


class _Directories:
    """Walks a TIFF's image directories (IFDs) with plain reads, checking each lies, with
    every tag value it points to, inside the file."""

    def __init__(self, handle: BinaryIO, size: int):
        self.handle, self.size = handle, size
        head = handle.read(16)
        self.order = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        self.count_fmt, self.entry_fmt, self.offset_fmt = (
            ("Q", "HHQQ", "Q") if big else ("H", "HHII", "I")
        )
        self.first = self._unpack(self.offset_fmt, head[8:16] if big else head[4:8])

    def _unpack(self, fmt: str, data: bytes) -> int:
        return struct.unpack(self.order + fmt, data[: struct.calcsize(self.order + fmt)])[0]

    def check(self, offset: int) -> tuple[str | None, int, list[int]]:
        """``(problem or None, the next directory's offset, its SubIFD offsets)`` for the IFD at
        ``offset``."""
        # standard sizes ("<" or ">"): natively aligned, BigTIFF's HHQQ entry would be 24 bytes
        count_size = struct.calcsize(self.order + self.count_fmt)
        entry_size = struct.calcsize(self.order + self.entry_fmt)
        offset_size = struct.calcsize(self.order + self.offset_fmt)
        if offset + count_size > self.size:
            return f"an image directory at byte {offset:,}", 0, []
        self.handle.seek(offset)
        count = self._unpack(self.count_fmt, self.handle.read(count_size))
        if offset + count_size + count * entry_size + offset_size > self.size:
            return f"the image directory at byte {offset:,}", 0, []
        entries = self.handle.read(count * entry_size + offset_size)
        subifds: list[int] = []
        for i in range(count):
            raw = entries[i * entry_size : (i + 1) * entry_size]
            tag, kind, n, value = struct.unpack(self.order + self.entry_fmt, raw)
            length = _TYPE_SIZES.get(kind, 1) * n
            if length > offset_size and value + length > self.size:
                return f"the value of tag {tag} at byte {value:,}", 0, []
            if tag == 330 and kind in (4, 13, 16, 18):  # SubIFDs: the reduced levels of OME
                if length > offset_size:
                    self.handle.seek(value)
                    data = self.handle.read(length)
                else:
                    data = raw[-offset_size:]
                fmt = f"{self.order}{n}{'I' if kind in (4, 13) else 'Q'}"
                subifds.extend(struct.unpack(fmt, data[: struct.calcsize(fmt)]))  # fmt has order
        return None, self._unpack(self.offset_fmt, entries[count * entry_size :]), subifds


def check_directories(path: Path) -> None:
    """Raises :class:`SlideError` when an image directory (IFD), main chain or SubIFD, or a tag
    value one points to, lies past the end of the file: a file cut just after a level's data
    would otherwise open with fewer levels or without its metadata.

    Plain reads, before tifffile parses the file (which logs its own errors on such files).
    """
    size = os.path.getsize(path)
    problem = None
    with open(path, "rb") as handle:
        try:
            walker = _Directories(handle, size)
            pending, seen = [walker.first], set()
            while pending and problem is None and len(seen) < 100_000:
                offset = pending.pop()
                while offset and problem is None and offset not in seen:
                    seen.add(offset)
                    problem, offset, subifds = walker.check(offset)
                    pending.extend(subifds)
        except struct.error:
            problem = "the TIFF header"
    if problem:
        raise SlideError(
            f"{path.name}: truncated or incomplete — {problem} lies past the end of the file "
            f"({size:,} bytes); copy the slide again"
        )


@dataclass(frozen=True)
class _Layout:
    """Where the segments (tiles or strips) of one level lie."""

    seg_height: int
    seg_width: int
    rows: int
    cols: int
    planes: int  # 1 for interleaved samples, the sample count for planar (separate) ones
    samples: int


def _layout(page: tifffile.TiffPage) -> _Layout:
    width, height = page.imagewidth, page.imagelength
    if page.is_tiled:
        seg_height, seg_width = page.tilelength, page.tilewidth
    else:
        seg_height, seg_width = min(page.rowsperstrip or height, height), width
    seg_height, seg_width = int(seg_height), int(seg_width)
    if seg_height < 1 or seg_width < 1 or width < 1 or height < 1:
        raise ValueError(f"tiles of {seg_width}×{seg_height} in a {width}×{height} image")
    planes = page.samplesperpixel if page.planarconfig == 2 else 1
    layout = _Layout(
        seg_height=seg_height,
        seg_width=seg_width,
        rows=math.ceil(height / seg_height),
        cols=math.ceil(width / seg_width),
        planes=planes,
        samples=page.samplesperpixel,
    )
    if layout.rows * layout.cols * planes != len(page.dataoffsets):
        raise ValueError(f"{len(page.dataoffsets)} segments where {layout} needs another count")
    return layout


def _check_page(name: str, page: tifffile.TiffPage) -> None:
    """Refuses what the RGB reading below cannot represent."""
    problem = None
    if page.dtype != np.uint8:
        problem = f"{page.dtype} samples (only 8-bit brightfield RGB slides are read)"
    elif int(page.photometric) not in _PHOTOMETRIC_OK:
        problem = f"photometric {page.photometric.name} (only RGB or greyscale is read)"
    elif int(page.photometric) == 6 and int(page.compression) not in _JPEG:
        problem = "uncompressed subsampled YCbCr"
    elif page.imagedepth != 1:
        problem = "a volume (image depth > 1)"
    if problem:
        raise SlideError(f"{name}: cannot read {problem}")


def ome_physical_size(xml: str | None) -> tuple[float | None, float | None]:
    """(µm per pixel along x, objective magnification) of the first OME image, None if absent.

    ``PhysicalSizeX`` is converted from its ``PhysicalSizeXUnit`` (µm when absent); an unknown
    unit or a malformed document gives None rather than a guess.
    """
    if not xml:
        return None, None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None, None
    size = magnification = None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is not None and pixels.get("PhysicalSizeX"):
        factor = _OME_UNITS_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
        try:
            size = float(pixels.get("PhysicalSizeX")) * factor if factor else None
        except ValueError:
            size = None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Objective" and el.get("NominalMagnification"):
            try:
                magnification = float(el.get("NominalMagnification"))
            except ValueError:
                continue
            break
    return size, magnification


def tiff_resolution(page: tifffile.TiffPage) -> float | None:
    """µm per pixel from a page's ``XResolution`` and ``ResolutionUnit`` (inch or cm), or None."""
    unit_um = _RESOLUTION_UNIT_UM.get(int(page.resolutionunit))
    resolution = page.resolution[0] if page.resolution else 0
    if not unit_um or not resolution:
        return None
    return unit_um / resolution


class TiffBackend:
    """One TIFF opened with tifffile; reads regions of any of its levels as RGB.

    Args:
        path: the file.
        tif: the open :class:`tifffile.TiffFile` (closed by :meth:`close`).

    Raises:
        SlideError: a level the reader cannot represent (not 8-bit, not RGB or grey, several
            planes, channels or focal planes) or whose segments do not add up.
    """

    def __init__(self, path: Path, tif: tifffile.TiffFile):
        self.path = path
        self._tif = tif
        self._lock = threading.RLock()
        series = tif.series[0]
        extra = [n for n, axis in zip(series.shape, series.axes, strict=True) if axis not in "YXS"]
        if math.prod(extra) != 1:
            raise SlideError(
                f"{path.name}: a multi-plane image (axes {series.axes}, shape {series.shape}); "
                "only brightfield RGB slides are read"
            )
        self.format = "ome-tiff" if tif.is_ome else "tiff"
        self.pages: list[tifffile.TiffPage] = [level.keyframe for level in series.levels]
        self.layouts: list[_Layout] = []
        self._decoders = []
        for page in self.pages:
            _check_page(path.name, page)
            try:
                self.layouts.append(_layout(page))
            except ValueError as exc:
                raise SlideError(f"{path.name}: malformed TIFF level ({exc})") from exc
            args = {"_fullsize": page.is_tiled}
            if int(page.compression) in _JPEG:
                args.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)
            self._decoders.append((page.decode, args))
        self.dimensions = [(p.imagewidth, p.imagelength) for p in self.pages]
        width, height = self.dimensions[0]
        self.downsamples = [(width / w + height / h) / 2 for w, h in self.dimensions]
        ome_size, self.objective_power = ome_physical_size(tif.ome_metadata if tif.is_ome else None)
        if ome_size is not None:
            self.pixel_size, self.pixel_size_source = ome_size, "OME PhysicalSizeX"
        else:
            self.pixel_size = tiff_resolution(self.pages[0])
            self.pixel_size_source = "TIFF resolution" if self.pixel_size else "none"

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` of ``level`` from level-0 corner ``(x, y)``; white outside.

        Raises:
            ValueError, OSError, RuntimeError: a segment could not be read or decoded (the
                caller turns these into :class:`SlideError`).
        """
        page, layout = self.pages[level], self.layouts[level]
        ds = self.downsamples[level]
        lx, ly = math.floor(x / ds + 1e-6), math.floor(y / ds + 1e-6)
        out = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, page.imagewidth), min(ly + height, page.imagelength)
        if x0 >= x1 or y0 >= y1:
            return out
        buffer = np.full((y1 - y0, x1 - x0, layout.samples), 255, np.uint8)
        self._fill(level, buffer, x0, y0)
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = _to_rgb(buffer, page)
        return out

    def _fill(self, level: int, buffer: np.ndarray, x0: int, y0: int) -> None:
        """Decodes the segments that overlap ``buffer`` (placed at level pixel ``x0, y0``)."""
        page, layout = self.pages[level], self.layouts[level]
        decode, args = self._decoders[level]
        rows = range(y0 // layout.seg_height, (y0 + buffer.shape[0] - 1) // layout.seg_height + 1)
        cols = range(x0 // layout.seg_width, (x0 + buffer.shape[1] - 1) // layout.seg_width + 1)
        per_plane = layout.rows * layout.cols
        indices = [
            plane * per_plane + row * layout.cols + col
            for plane in range(layout.planes)
            for row in rows
            for col in cols
        ]
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        with self._lock:
            if self._tif.filehandle.closed:
                raise ValueError("the slide is closed")
            raw = list(
                self._tif.filehandle.read_segments(offsets, counts, indices, lock=self._lock)
            )
        for data, index in raw:
            segment, (plane, _, sy, sx, _), _shape = decode(data, index, **args)
            if segment is None:
                continue  # an empty (sparse) segment: left as glass
            segment = segment[0]
            ty0, tx0 = max(sy, y0), max(sx, x0)
            ty1 = min(sy + segment.shape[0], y0 + buffer.shape[0])
            tx1 = min(sx + segment.shape[1], x0 + buffer.shape[1])
            if ty0 >= ty1 or tx0 >= tx1:
                continue
            piece = segment[ty0 - sy : ty1 - sy, tx0 - sx : tx1 - sx]
            channels = slice(plane, plane + 1) if layout.planes > 1 else slice(None)
            buffer[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0, channels] = piece

    def close(self) -> None:
        """Closes the file (later reads raise)."""
        with self._lock:
            self._tif.close()


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray, *, premultiplied: bool) -> np.ndarray:
    """RGB over white glass: ``rgb·a + 255·(1 − a)`` (``rgb + 255·(1 − a)`` when ``rgb`` is
    premultiplied by ``a``), in integer arithmetic, rounded. ``alpha`` is ``(h, w, 1)``."""
    a = alpha.astype(np.uint32)
    colour = rgb.astype(np.uint32) * (255 if premultiplied else a)
    return np.clip((colour + 255 * (255 - a) + 127) // 255, 0, 255).astype(np.uint8)


def _to_rgb(buffer: np.ndarray, page: tifffile.TiffPage) -> np.ndarray:
    """RGB from decoded samples: grey repeated, alpha composited on white, extras dropped."""
    samples = buffer.shape[2]
    if samples < 3:
        grey = buffer[..., 0]
        if int(page.photometric) == 0:  # MINISWHITE
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=2)
    rgb = buffer[..., :3]
    extras = tuple(int(e) for e in (page.extrasamples or ()))
    if samples >= 4 and extras and extras[0] in (1, 2):  # associated or unassociated alpha
        return composite_on_white(rgb, buffer[..., 3:4], premultiplied=extras[0] == 1)
    return np.ascontiguousarray(rgb)
