"""Synthetic H&E nuclei tiles with exact masks, for smoke tests and pipeline development.

Each tile is painted as stain *concentration* maps — hematoxylin (H), eosin (E) and a small
residual in the third (DAB) channel — and turned into RGB with :func:`skimage.color.hed2rgb`
(colour deconvolution with the Ruifrok–Johnston stain vectors). There is no DAB stain as such:
the residual is a fraction of the eosin map, which warms scikit-image's rather magenta eosin
vector towards the pink of real eosin.

* **Background**: eosin-pink stroma with smooth low-frequency variation and a fibrous texture,
  denser pink cytoplasm around groups of nuclei, white-ish lumen/empty areas, a faint
  hematoxylin haze and, on some tiles, a few red blood cells (eosin only, not in the mask).
* **Nuclei**: ellipses of random size (semi-axes about 3–14 px), orientation and eccentricity,
  their boundaries perturbed by low-frequency radial noise; per-nucleus hematoxylin density,
  chromatin granularity, sometimes a darker rim, a paler (vesicular) centre or nucleoli. They
  come as large pale epithelial nuclei grouped around cluster centres (touching and overlapping),
  small dark round lymphocytes and elongated spindle nuclei scattered in the stroma. The number
  of nuclei varies a lot from tile to tile (sparse to crowded).
* **Acquisition**: per-tile stain variation (scaled concentrations and a little H/E cross-talk),
  a mild optical blur and sensor noise.

The mask is exact: a pixel is 1 where a nucleus shape was rasterised (the union of all nuclei),
0 elsewhere, before any blur. Nucleus sizes are in pixels at a fixed magnification, so a larger
tile shows a larger field of view with more nuclei, not bigger ones.

Tiles are deterministic: tile ``index`` of seed ``seed`` is drawn from
``numpy.random.default_rng([seed, index])``, so it is the same bytes whatever ``count`` is and
whichever process writes it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import shlex
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.color import hed2rgb

from segcore.paths import REPO_ROOT
from segcore.atomic import write_bytes_atomic, write_text_atomic
from segcore.errors import ConfigError
from segcore.data.images import encode_png

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever a change to the generator changes the pixels it produces."""

README_MARKER = "<!-- segcore-synthetic-dataset -->"
"""Line in ``README.md`` that marks a folder as written by :func:`generate_dataset`."""

MIN_SIZE = 32
"""Smallest tile side accepted by :func:`generate_tile` and :func:`generate_dataset`."""

_FILE_RE = re.compile(r"synth_\d{5,}\.png")
_TEMP_RE = re.compile(r"\.synth_\d{5,}\.png\..*\.tmp")
_MAX_CHUNK = 16  # most tiles per task sent to a worker process
_MIN_PARALLEL = 32  # with ``workers=None``, fewer tiles than this are written in this process


# --------------------------------------------------------------------------------------------
# Tile generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Nucleus:
    """One nucleus: its shape, where it sits, and how it is stained."""

    cy: float
    cx: float
    major: float  # semi-axis along ``angle``, px
    minor: float  # semi-axis across it, px
    angle: float  # radians
    harmonics: np.ndarray  # (k, 3) rows of (order, amplitude, phase) for the radial perturbation
    density: float  # mean hematoxylin concentration
    granularity: float  # relative strength of the chromatin texture
    rim: float  # extra density at the boundary, relative to ``density``
    pale_centre: float  # density removed at the centre, relative to ``density``
    nucleoli: np.ndarray  # (n, 2) offsets from the centre, px


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


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """Returns the cubic smoothstep of ``x`` clipped to ``[0, 1]``."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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
    return _smoothstep((field - threshold) / 0.35 + 0.5)


def _sample_centres(
    rng: np.random.Generator,
    count: int,
    size: int,
    lumen: np.ndarray,
    clusters: np.ndarray,
    spread: float,
) -> np.ndarray:
    """Returns ``(count, 2)`` nucleus centres ``(y, x)`` inside the tile and mostly off the lumen.

    Args:
        rng: source of the positions.
        count: how many centres to return.
        size: tile side.
        lumen: soft lumen map; a centre where it exceeds 0.3 is redrawn (a few tries).
        clusters: ``(k, 2)`` cluster centres; empty to scatter the centres uniformly.
        spread: standard deviation of the centres around their cluster, px.
    """
    centres = np.empty((0, 2))
    for _ in range(4):
        n = 2 * (count - len(centres)) + 4
        if len(clusters):
            picks = clusters[rng.integers(0, len(clusters), n)]
            candidates = picks + rng.normal(0.0, spread, (n, 2))
        else:
            candidates = rng.uniform(0.0, size, (n, 2))
        candidates = candidates[((candidates >= 0) & (candidates <= size - 1)).all(axis=1)]
        rows, cols = candidates.astype(int).T
        candidates = candidates[lumen[rows, cols] < 0.3]
        centres = np.concatenate([centres, candidates])[:count]
        if len(centres) == count:
            break
    return centres


def _make_nucleus(
    rng: np.random.Generator, cy: float, cx: float, kind: str, fibre_angle: float
) -> _Nucleus:
    """Draws the shape and staining of one nucleus of the given kind.

    Args:
        rng: source of the nucleus's parameters.
        cy: centre row.
        cx: centre column.
        kind: ``"epithelial"`` (large, pale, textured), ``"lymphocyte"`` (small, round, dark) or
            ``"spindle"`` (elongated, aligned roughly with the stroma fibres).
        fibre_angle: main direction of the stroma fibres, radians.

    Returns:
        The :class:`_Nucleus`.
    """
    if kind == "lymphocyte":
        major = rng.uniform(3.0, 5.0)
        minor = major * rng.uniform(0.8, 1.0)
        angle = rng.uniform(0.0, np.pi)
        density = rng.uniform(0.12, 0.19)
        granularity, rim, pale = rng.uniform(0.05, 0.2), 0.0, 0.0
    elif kind == "spindle":
        major = rng.uniform(6.0, 12.0)
        minor = major * rng.uniform(0.25, 0.5)
        angle = fibre_angle + rng.normal(0.0, 0.35)
        density = rng.uniform(0.09, 0.15)
        granularity, rim, pale = rng.uniform(0.1, 0.3), 0.0, 0.0
    else:
        major = rng.uniform(6.0, 14.0)
        minor = major * rng.uniform(0.6, 1.0)
        angle = rng.uniform(0.0, np.pi)
        density = rng.uniform(0.055, 0.11)
        granularity = rng.uniform(0.2, 0.55)
        rim = rng.uniform(0.3, 0.8) if rng.random() < 0.5 else 0.0
        pale = rng.uniform(0.15, 0.45) if rng.random() < 0.4 else 0.0
    orders = np.arange(2, 6, dtype=float)
    amplitudes = rng.uniform(0.0, 0.07, orders.size) / np.sqrt(orders - 1.0)
    phases = rng.uniform(0.0, 2.0 * np.pi, orders.size)
    n_nucleoli = rng.choice(3, p=[0.55, 0.35, 0.10]) if kind == "epithelial" else 0
    nucleoli = rng.uniform(-0.45, 0.45, (n_nucleoli, 2)) * minor
    return _Nucleus(
        cy, cx, major, minor, angle, np.stack([orders, amplitudes, phases], axis=1),
        density, granularity, rim, pale, nucleoli,
    )  # fmt: skip


def _rasterise(nucleus: _Nucleus, size: int) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Rasterises one nucleus inside its bounding box.

    Args:
        nucleus: the nucleus.
        size: tile side; the box is clipped to the tile.

    Returns:
        ``(rows, cols, inside, rho)``: the box as two slices, a boolean map of the pixels inside
        the perturbed ellipse, and each pixel's radius relative to the boundary (0 at the centre,
        1 on the boundary). ``None`` when the nucleus lies wholly outside the tile.
    """
    cos, sin = math.cos(nucleus.angle), math.sin(nucleus.angle)
    # Half-extents of the rotated ellipse, enlarged for the radial perturbation (at most +20%).
    reach_y = 1.25 * math.hypot(nucleus.major * sin, nucleus.minor * cos) + 1.0
    reach_x = 1.25 * math.hypot(nucleus.major * cos, nucleus.minor * sin) + 1.0
    top, left = nucleus.cy - reach_y, nucleus.cx - reach_x
    r0, r1 = max(0, math.floor(top)), min(size, math.ceil(top + 2 * reach_y) + 1)
    c0, c1 = max(0, math.floor(left)), min(size, math.ceil(left + 2 * reach_x) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = np.arange(r0, r1)[:, None] - nucleus.cy
    dx = np.arange(c0, c1)[None, :] - nucleus.cx
    u = (dx * cos + dy * sin) / nucleus.major
    v = (-dx * sin + dy * cos) / nucleus.minor
    theta = np.arctan2(v, u)
    orders, amplitudes, phases = nucleus.harmonics.T
    boundary = 1.0 + np.cos(theta[..., None] * orders + phases) @ amplitudes
    rho = np.sqrt(u * u + v * v) / boundary
    return slice(r0, r1), slice(c0, c1), rho <= 1.0, rho


def _nucleus_density(
    nucleus: _Nucleus, rho: np.ndarray, rows: slice, cols: slice, grain: np.ndarray
) -> np.ndarray:
    """Returns the hematoxylin concentration of one nucleus over its bounding box.

    Args:
        nucleus: the nucleus.
        rho: relative radius over the box (see :func:`_rasterise`).
        rows: the box's rows in the tile.
        cols: the box's columns in the tile.
        grain: tile-wide chromatin texture (zero-mean, unit-std).
    """
    density = 1.0 + nucleus.granularity * grain[rows, cols]
    density += nucleus.rim * _smoothstep((rho - 0.7) / 0.3)
    density -= nucleus.pale_centre * _smoothstep(1.0 - rho / 0.6)
    if len(nucleus.nucleoli):
        r = np.arange(rows.start, rows.stop)[:, None] - nucleus.cy
        c = np.arange(cols.start, cols.stop)[None, :] - nucleus.cx
        for oy, ox in nucleus.nucleoli:
            density += 1.2 * np.exp(-((r - oy) ** 2 + (c - ox) ** 2) / 2.0)
    return nucleus.density * np.clip(density, 0.3, None)


def _plan_nuclei(
    rng: np.random.Generator, size: int, lumen: np.ndarray, fibre_angle: float
) -> list[_Nucleus]:
    """Draws every nucleus of a tile: how many, where, and of which kind.

    The count scales with the tile area and varies log-uniformly from sparse (about 12 per
    256×256) to crowded (about 300), with at least three; a centre that keeps landing in the
    lumen is dropped. A random share of the nuclei are epithelial, around 1–6 cluster centres
    per 256×256; the others are lymphocytes or spindle nuclei scattered uniformly.

    Args:
        rng: source of the plan.
        size: tile side.
        lumen: soft lumen map, avoided by the centres.
        fibre_angle: stroma fibre direction, followed by spindle nuclei.

    Returns:
        The nuclei, in painting order.
    """
    area_scale = (size / 256.0) ** 2
    total = max(3, round(math.exp(rng.uniform(math.log(12), math.log(300))) * area_scale))
    clustered = round(total * rng.uniform(0.35, 0.95))
    n_clusters = max(1, round(rng.uniform(1.0, 6.0) * area_scale))
    clusters = rng.uniform(0.1 * size, 0.9 * size, (n_clusters, 2))
    spread = rng.uniform(10.0, 35.0)
    grouped = _sample_centres(rng, clustered, size, lumen, clusters, spread)
    scattered = _sample_centres(rng, total - clustered, size, lumen, np.empty((0, 2)), 0.0)
    lymph_share = rng.uniform(0.2, 0.8)
    kinds = ["epithelial"] * len(grouped) + [
        "lymphocyte" if rng.random() < lymph_share else "spindle" for _ in scattered
    ]
    centres = np.concatenate([grouped, scattered])
    return [
        _make_nucleus(rng, cy, cx, k, fibre_angle)
        for (cy, cx), k in zip(centres, kinds, strict=True)
    ]


def _paint_nuclei(
    nuclei: Sequence[_Nucleus], size: int, grain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises the nuclei into an exact mask and a hematoxylin map.

    Where nuclei overlap the denser one shows, plus a little of the other (stacked chromatin).

    Args:
        nuclei: the nuclei to paint.
        size: tile side.
        grain: tile-wide chromatin texture.

    Returns:
        ``(mask, hematoxylin)``: ``bool`` and ``float64`` arrays of shape ``(size, size)``.
    """
    mask = np.zeros((size, size), dtype=bool)
    hema = np.zeros((size, size))
    for nucleus in nuclei:
        raster = _rasterise(nucleus, size)
        if raster is None:
            continue
        rows, cols, inside, rho = raster
        value = np.where(inside, _nucleus_density(nucleus, rho, rows, cols, grain), 0.0)
        box = hema[rows, cols]
        hema[rows, cols] = np.maximum(box, value) + 0.25 * np.minimum(box, value)
        mask[rows, cols] |= inside
    return mask, hema


def _red_blood_cells(rng: np.random.Generator, size: int, mask: np.ndarray) -> np.ndarray:
    """Returns an eosin map of a few red blood cells (on about a quarter of tiles), off nuclei."""
    eosin = np.zeros((size, size))
    if rng.random() >= 0.25:
        return eosin
    count = rng.integers(2, 12)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in rng.uniform(0, size, (count, 2)):
        radius = rng.uniform(3.0, 4.5)
        disc = _smoothstep((radius - np.hypot(yy - cy, xx - cx)) / 1.2)
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
            sequence of ints, e.g. ``[seed, index]`` as :func:`generate_dataset` uses). A
            ``Generator`` is advanced.
        size: side of the square tile in pixels, at least :data:`MIN_SIZE`.

    Returns:
        ``(image, mask)``: ``uint8`` RGB ``(size, size, 3)`` and ``uint8`` 0/1 ``(size, size)``,
        where 1 marks every pixel painted as nucleus.

    Raises:
        ConfigError: ``size`` is not an integer of at least :data:`MIN_SIZE`.
    """
    _check_int("size", size, MIN_SIZE)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    fibre_angle = rng.uniform(0.0, np.pi)
    low, mid, fibres, lumen_field, grain = _smooth_fields(
        rng, size, [size / 6.0, size / 20.0, (8.0, 1.0, fibre_angle), size / 10.0, 0.8]
    )
    lumen = _lumen(rng, lumen_field)
    nuclei = _plan_nuclei(rng, size, lumen, fibre_angle)
    mask, hema = _paint_nuclei(nuclei, size, grain)
    eosin = _eosin(rng, mask, lumen, low, mid, fibres)
    haze = rng.uniform(0.002, 0.008) * np.clip(1.0 + 0.4 * mid, 0.0, None) * (1.0 - 0.8 * lumen)
    residual = rng.uniform(0.3, 0.5) * eosin  # stands in for eosin's blue absorption
    hed = np.stack([hema + haze, eosin, residual], axis=-1)
    return _to_rgb(rng, hed), mask.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raises :class:`ConfigError` unless ``value`` is an ``int`` (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")


def tile_name(index: int) -> str:
    """Returns the file name of tile ``index`` (the same in ``images/`` and ``masks/``)."""
    return f"synth_{index:05d}.png"


def _readme(out: Path, count: int, size: int, seed: int) -> str:
    """Returns the ``README.md`` text describing a synthetic dataset."""
    return f"""# Synthetic H&E nuclei dataset
{README_MARKER}

Generated by `segcore.data.synthetic` (generator version {GENERATOR_VERSION}). These are **not real
tissue**: each tile is painted as hematoxylin/eosin concentration maps (stroma texture, lumen,
clustered and scattered nuclei of varied size, shape, darkness and texture) and converted to RGB
with `skimage.color.hed2rgb`, then lightly blurred with added noise. Use it to smoke-test and
develop the training pipeline, not to judge accuracy on real slides.

- count: {count} tiles
- size: {size}×{size} px
- seed: {seed} (tile *i* uses `numpy.random.default_rng([{seed}, i])`, so a tile does not depend
  on `count`)
- `images/synth_NNNNN.png`: 8-bit RGB
- `masks/synth_NNNNN.png`: 8-bit, 255 = nucleus, 0 = background (exact, the union of the
  painted nuclei); same stem as its image

Made with:

```
python -m segcore synth --out {shlex.quote(str(out))} --count {count} --size {size} --seed {seed}
```
"""


def _is_synthetic_set(out: Path) -> bool:
    """Returns whether ``out`` holds only what :func:`generate_dataset` writes (a previous set)."""
    readme = out / "README.md"
    try:
        if README_MARKER not in readme.read_text(encoding="utf-8"):
            return False
    except (OSError, UnicodeDecodeError):
        return False
    for entry in out.iterdir():
        if entry.name == "README.md":
            continue
        if entry.name not in ("images", "masks") or not entry.is_dir():
            return False
        for path in entry.iterdir():
            if not (_FILE_RE.fullmatch(path.name) or _TEMP_RE.fullmatch(path.name)):
                return False
    return True


def _prepare_folder(out: Path, count: int) -> None:
    """Creates ``out`` or clears what a previous synthetic set left beyond ``count`` tiles.

    Raises:
        ConfigError: ``out`` is a file, or a non-empty folder that is not a synthetic set.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not _is_synthetic_set(out):
            raise ConfigError(
                f"{out}: folder is not empty and was not written by `segcore synth` (no "
                f"README.md with the synthetic-dataset marker, or other files inside); choose "
                f"a new or empty folder"
            )
        keep = {tile_name(i) for i in range(count)}
        for sub in ("images", "masks"):
            for path in (out / sub).glob("*synth_*.png*") if (out / sub).is_dir() else ():
                if path.name not in keep:
                    path.unlink()
        log.info("%s: replacing a previous synthetic dataset", out)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _write_tiles(out: Path, seed: int, size: int, indices: Sequence[int]) -> int:
    """Generates and writes the given tiles; returns how many were written."""
    for index in indices:
        image, mask = generate_tile(np.random.default_rng([seed, index]), size)
        name = tile_name(index)
        write_bytes_atomic(out / "images" / name, encode_png(image))
        write_bytes_atomic(out / "masks" / name, encode_png(mask * np.uint8(255)))
    return len(indices)


def _run_chunks(out: Path, seed: int, size: int, chunks: list[range], workers: int) -> None:
    """Writes every chunk, in this process or in ``workers`` spawned processes, logging progress."""
    total = sum(len(chunk) for chunk in chunks)
    done, next_report = 0, 0.1
    if workers == 1:
        for chunk in chunks:
            done += _write_tiles(out, seed, size, chunk)
            next_report = _report(done, total, next_report)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_write_tiles, out, seed, size, chunk) for chunk in chunks]
        for future in as_completed(futures):
            done += future.result()
            next_report = _report(done, total, next_report)


def _report(done: int, total: int, next_report: float) -> float:
    """Logs progress when ``done`` passes the next 10% step; returns the following step."""
    if done / total >= next_report or done == total:
        log.info("synthetic tiles: %d/%d", done, total)
        while next_report <= done / total:
            next_report += 0.1
    return next_report


def generate_dataset(
    out: str | os.PathLike,
    *,
    count: int = 760,
    size: int = 256,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Writes a synthetic H&E nuclei dataset in the ``images/`` + ``masks/`` layout.

    Creates ``out/images/synth_NNNNN.png`` (RGB), ``out/masks/synth_NNNNN.png`` (0/255) for
    ``NNNNN`` in ``0 .. count-1`` and ``out/README.md``. Tile ``i`` is
    ``generate_tile(numpy.random.default_rng([seed, i]), size)``, so the files do not depend on
    ``count`` or ``workers``. A folder written earlier by this function may be reused: its tiles
    are overwritten and those beyond ``count`` deleted. Every file is written atomically, and
    ``README.md`` first, so the folder of an interrupted run is recognised and can be reused.

    Args:
        out: folder to create; it may exist if it is empty or holds a previous synthetic set.
        count: number of tiles, at least 1.
        size: tile side in pixels, at least :data:`MIN_SIZE`.
        seed: non-negative random seed.
        workers: processes to use (1: this process only). ``None`` chooses: this process for
            fewer than 32 tiles, where starting processes costs more than it saves, else
            ``os.cpu_count()``.

    Returns:
        The output folder as a ``Path``.

    Raises:
        ConfigError: an argument is out of range, or ``out`` is a file or a non-empty folder
            that is not a synthetic dataset.
    """
    _check_int("count", count, 1)
    _check_int("size", size, MIN_SIZE)
    _check_int("seed", seed, 0)
    if workers is not None:
        _check_int("workers", workers, 1)
    out = Path(out)
    _prepare_folder(out, count)
    write_text_atomic(out / "README.md", _readme(out, count, size, seed))

    if workers is None:
        workers = 1 if count < _MIN_PARALLEL else os.cpu_count() or 1
    step = min(_MAX_CHUNK, -(-count // (4 * workers)))
    chunks = [range(i, min(i + step, count)) for i in range(0, count, step)]
    workers = min(workers, len(chunks))
    log.info(
        "writing %d synthetic %d×%d tiles (seed %d) to %s with %d process(es)",
        count, size, size, seed, out, workers,
    )  # fmt: skip
    _run_chunks(out, seed, size, chunks, workers)
    return out


DEFAULT_SYNTHETIC_DIR = REPO_ROOT / "data" / "synthetic"
"""Where the embedded default data set is generated on first use (ignored by git)."""


def is_complete_dataset(out: str | os.PathLike, *, count: int, size: int, seed: int) -> bool:
    """Whether ``out`` holds a finished synthetic set made with exactly these arguments.

    Checks the README's recorded arguments and that all ``count`` image and mask files exist
    (files are written atomically, so an existing file is complete).
    """
    out = Path(out)
    try:
        readme = (out / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    expected = (
        README_MARKER,
        f"- count: {count} tiles",
        f"- size: {size}×{size} px",
        f"- seed: {seed} ",
    )
    if not all(line in readme for line in expected):
        return False
    names = [tile_name(i) for i in range(count)]
    return all((out / sub / name).is_file() for sub in ("images", "masks") for name in names)


def ensure_synthetic_dataset(
    out: str | os.PathLike = DEFAULT_SYNTHETIC_DIR,
    *,
    count: int = 760,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Returns a finished synthetic set at ``out``, generating it first if needed.

    This is how the app and ``python -m segcore train --data synthetic`` get their embedded
    default data on a fresh machine (about 40 s on 2 cores for the default 760 tiles).

    Raises:
        ConfigError: as :func:`generate_dataset`.
    """
    if is_complete_dataset(out, count=count, size=size, seed=seed):
        return Path(out)
    return generate_dataset(out, count=count, size=size, seed=seed)
