"""Reading slides with OpenSlide: the vendor formats and generic tiled TIFF.

``openslide-python`` with the ``openslide-bin`` wheel, which carries the native library (no
system install). OpenSlide handles are safe to use from several threads at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcore.errors import SlideError
from segcore.slides.tiff_backend import composite_on_white


class OpenSlideBackend:
    """One slide opened with OpenSlide; reads regions as RGB on white glass.

    Args:
        path: the slide file.
        vendor: what ``openslide.OpenSlide.detect_format`` said of it.

    Raises:
        SlideError: OpenSlide cannot open it (corrupt, truncated) or its metadata is malformed.
    """

    def __init__(self, path: Path, vendor: str):
        import openslide

        self.format = vendor
        try:
            self._handle = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(
                f"{path.name}: OpenSlide cannot open this {vendor} slide, corrupt or truncated? "
                f"({exc})"
            ) from exc
        props = self._handle.properties
        mpp = props.get(openslide.PROPERTY_NAME_MPP_X)
        power = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        # OpenSlide fills mpp-x of a generic TIFF from its resolution tags.
        self.pixel_size_source = (
            "TIFF resolution" if vendor == "generic-tiff" else "openslide.mpp-x"
        )
        try:
            self.dimensions = [(int(w), int(h)) for w, h in self._handle.level_dimensions]
            self.downsamples = [float(d) for d in self._handle.level_downsamples]
            self.pixel_size = float(mpp) if mpp else None
            self.objective_power = float(power) if power else None
        except ValueError as exc:
            self._handle.close()
            raise SlideError(f"{path.name}: malformed slide metadata ({exc})") from exc
        if self.pixel_size is None:
            self.pixel_size_source = "none"

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` of ``level`` from level-0 corner ``(x, y)``; white outside.

        Raises:
            openslide.OpenSlideError: the pixels cannot be read (the caller names the file).
        """
        rgba = np.asarray(self._handle.read_region((x, y), level, (width, height)))
        alpha = rgba[..., 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[..., :3])
        # openslide-python returns un-premultiplied RGBA: composite on white glass.
        return composite_on_white(rgba[..., :3], alpha, premultiplied=False)

    def close(self) -> None:
        """Closes the handle."""
        self._handle.close()
