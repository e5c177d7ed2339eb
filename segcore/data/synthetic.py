"""Synthetic H&E nuclei tiles with exact masks, for smoke tests and pipeline development.

Each tile is painted as stain *concentration* maps — hematoxylin (H), eosin (E) and a small
residual in the third (DAB) channel — and turned into RGB with :func:`skimage.color.hed2rgb`
(colour deconvolution with the Ruifrok–Johnston stain vectors). There is no DAB stain as such:
the residual is a fraction of the eosin map, which warms scikit-image's rather magenta eosin
vector towards the pink of real eosin.

* **Background**: eosin-pink stroma with smooth low-frequency variation and a fibrous texture,
  denser pink cytoplasm around groups of nuclei, white-ish lumen/empty areas, a faint
  hematoxylin haze and, on some tiles, a few red blood cells (eosin only, not in the mask).
* **Nuclei** (:mod:`~segcore.data.synthetic_nuclei`): ellipses of random size (semi-axes about
  3–14 px), orientation and eccentricity, their boundaries perturbed by low-frequency radial
  noise; per-nucleus hematoxylin density, chromatin granularity, sometimes a darker rim, a paler
  (vesicular) centre or nucleoli. They come as large pale epithelial nuclei grouped around
  cluster centres (touching and overlapping), small dark round lymphocytes and elongated spindle
  nuclei scattered in the stroma. The number of nuclei varies a lot from tile to tile (sparse to
  crowded).
* **Acquisition**: per-tile stain variation (scaled concentrations and a little H/E cross-talk),
  a mild optical blur and sensor noise.

The mask is exact: a pixel is 1 where a nucleus shape was rasterised (the union of all nuclei),
0 elsewhere, before any blur. Nucleus sizes are in pixels at a fixed magnification, so a larger
tile shows a larger field of view with more nuclei, not bigger ones.

Tiles are deterministic: tile ``index`` of seed ``seed`` is drawn from
``numpy.random.default_rng([seed, index])``, so it is the same bytes whatever ``count`` is and
whichever process writes it. :mod:`~segcore.data.synthetic_set` writes the whole set to disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.color import hed2rgb

from segcore.data.synthetic_nuclei import paint_nuclei, plan_nuclei, smoothstep
from segcore.errors import ConfigError

GENERATOR_VERSION = 1
"""Bumped whenever a change to the generator changes the pixels it produces."""

MIN_SIZE = 32
"""Smallest tile side accepted by :func:`generate_tile` and
:func:`~segcore.data.synthetic_set.generate_dataset`."""


def _smooth_fields(
    rng: np.random.Generator, size: int, sigmas: Sequence[float | tuple[float, float, float]]
) -> np.ndarray:
    """Returns Gaussian-filtered white-noise fields, each zero-mean and unit-std.

    The noise is drawn and filtered in the Fourier domain, so large sigmas cost no more than
    small ones; the fields wrap around at the tile edges.

    Args:
        rng: source of the noise.
        size: side of the square fields.
        sigmas: one entry per field: an isotropic sigma in pixels, or ``(along, across,
            angle)`` for an oriented Gaussian with those sigmas along and across the direction
            ``angle`` (radians, from the x axis towards +y).

    Returns:
        ``float64`` array of shape ``(len(sigmas), size, size)``.
    """
    # The Fourier transform of white noise is white complex noise: draw it there directly.
    shape = (len(sigmas), size, size // 2 + 1)
    spectrum = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    for i, sigma in enumerate(sigmas):
        along, across, angle = sigma if isinstance(sigma, tuple) else (sigma, sigma, 0.0)
        f_along = fx * math.cos(angle) + fy * math.sin(angle)
        f_across = -fx * math.sin(angle) + fy * math.cos(angle)
        spectrum[i] *= np.exp(-2.0 * np.pi**2 * ((along * f_along) ** 2 + (across * f_across) ** 2))
    fields = np.fft.irfft2(spectrum, s=(size, size))
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
    return fields


def _lumen(rng: np.random.Generator, field: np.ndarray) -> np.ndarray:
    """Returns a soft 0..1 map of white-ish lumen/empty areas (all zero on about a third of tiles).

    Args:
        rng: source of the lumen fraction.
        field: a smooth zero-mean unit-std field; its highest values become lumen.
    """
    if rng.random() < 0.35:
        return np.zeros_like(field)
    fraction = rng.uniform(0.03, 0.25)
    threshold = np.quantile(field, 1.0 - fraction)
    return smoothstep((field - threshold) / 0.35 + 0.5)


def _red_blood_cells(rng: np.random.Generator, size: int, mask: np.ndarray) -> np.ndarray:
    """Returns an eosin map of a few red blood cells (on about a quarter of tiles), off nuclei."""
    eosin = np.zeros((size, size))
    if rng.random() >= 0.25:
        return eosin
    count = rng.integers(2, 12)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in rng.uniform(0, size, (count, 2)):
        radius = rng.uniform(3.0, 4.5)
        disc = smoothstep((radius - np.hypot(yy - cy, xx - cx)) / 1.2)
        eosin = np.maximum(eosin, rng.uniform(0.12, 0.2) * disc)
    return np.where(mask, 0.0, eosin)


def _eosin(
    rng: np.random.Generator,
    mask: np.ndarray,
    lumen: np.ndarray,
    low: np.ndarray,
    mid: np.ndarray,
    fibres: np.ndarray,
) -> np.ndarray:
    """Returns the eosin concentration map of a tile.

    Stroma eosin varies with the smooth fields and the fibre texture, is denser in the cytoplasm
    around nuclei, halved inside nuclei, nearly absent in the lumen, and red blood cells add to it.

    Args:
        rng: source of the stain level and the red blood cells.
        mask: nuclei mask.
        lumen: soft lumen map.
        low: low-frequency field.
        mid: mid-frequency field.
        fibres: oriented fibre texture.
    """
    cytoplasm = np.clip(ndimage.gaussian_filter(mask.astype(float), sigma=5.0), 0.0, 0.5)
    texture = 1.0 + 0.2 * low + 0.12 * mid + 0.18 * fibres
    eosin = rng.uniform(0.022, 0.04) * np.clip(texture, 0.2, None)
    eosin *= (1.0 + 1.6 * cytoplasm) * (1.0 - 0.92 * lumen)
    eosin = np.where(mask, 0.5 * eosin, eosin)
    return eosin + _red_blood_cells(rng, mask.shape[0], mask)


def _to_rgb(rng: np.random.Generator, hed: np.ndarray) -> np.ndarray:
    """Applies per-tile stain variation, converts with ``hed2rgb``, blurs and adds sensor noise.

    Args:
        rng: source of the variation and noise.
        hed: ``(H, W, 3)`` hematoxylin, eosin and DAB concentrations.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.
    """
    scale = np.array([rng.uniform(0.8, 1.25), rng.uniform(0.75, 1.3), 1.0])
    crosstalk = np.eye(3)
    crosstalk[0, 1] = rng.uniform(0.0, 0.08)  # a little eosin read as hematoxylin ...
    crosstalk[1, 0] = rng.uniform(0.0, 0.25)  # ... and hematoxylin counterstained pink
    rgb = hed2rgb((hed * scale) @ crosstalk.T)
    sigma = rng.uniform(0.5, 1.0)
    rgb = ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0.0), mode="reflect")
    rgb += rng.normal(0.0, rng.uniform(0.004, 0.012), rgb.shape)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def generate_tile(
    rng: np.random.Generator | int | Sequence[int], size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Generates one synthetic H&E tile and its exact nuclei mask.

    Args:
        rng: a NumPy ``Generator``, or a seed for ``numpy.random.default_rng`` (an int or a
            sequence of ints, e.g. ``[seed, index]`` as
            :func:`~segcore.data.synthetic_set.generate_dataset` uses). A ``Generator`` is
            advanced.
        size: side of the square tile in pixels, at least :data:`MIN_SIZE`.

    Returns:
        ``(image, mask)``: ``uint8`` RGB ``(size, size, 3)`` and ``uint8`` 0/1 ``(size, size)``,
        where 1 marks every pixel painted as nucleus.

    Raises:
        ConfigError: ``size`` is not an integer of at least :data:`MIN_SIZE`.
    """
    check_int("size", size, MIN_SIZE)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    fibre_angle = rng.uniform(0.0, np.pi)
    low, mid, fibres, lumen_field, grain = _smooth_fields(
        rng, size, [size / 6.0, size / 20.0, (8.0, 1.0, fibre_angle), size / 10.0, 0.8]
    )
    lumen = _lumen(rng, lumen_field)
    nuclei = plan_nuclei(rng, size, lumen, fibre_angle)
    mask, hema = paint_nuclei(nuclei, size, grain)
    eosin = _eosin(rng, mask, lumen, low, mid, fibres)
    haze = rng.uniform(0.002, 0.008) * np.clip(1.0 + 0.4 * mid, 0.0, None) * (1.0 - 0.8 * lumen)
    residual = rng.uniform(0.3, 0.5) * eosin  # stands in for eosin's blue absorption
    hed = np.stack([hema + haze, eosin, residual], axis=-1)
    return _to_rgb(rng, hed), mask.astype(np.uint8)


def check_int(name: str, value: object, minimum: int) -> None:
    """Raises :class:`ConfigError` unless ``value`` is an ``int`` (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
