"""Nuclei of the synthetic H&E tiles: how many, where, their shapes and their hematoxylin.

:func:`plan_nuclei` draws every nucleus of a tile and :func:`paint_nuclei` rasterises them into
the exact mask and the hematoxylin concentration map that
:func:`segcore.data.synthetic.generate_tile` turns into RGB.

Nuclei are ellipses of random size (semi-axes about 3–14 px), orientation and eccentricity, their
boundaries perturbed by low-frequency radial noise; each has its own hematoxylin density,
chromatin granularity, sometimes a darker rim, a paler (vesicular) centre or nucleoli. They come as
large pale epithelial nuclei grouped around cluster centres (touching and overlapping), small dark
round lymphocytes and elongated spindle nuclei scattered in the stroma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Nucleus:
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


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Returns the cubic smoothstep of ``x`` clipped to ``[0, 1]``."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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
) -> Nucleus:
    """Draws the shape and staining of one nucleus of the given kind.

    Args:
        rng: source of the nucleus's parameters.
        cy: centre row.
        cx: centre column.
        kind: ``"epithelial"`` (large, pale, textured), ``"lymphocyte"`` (small, round, dark) or
            ``"spindle"`` (elongated, aligned roughly with the stroma fibres).
        fibre_angle: main direction of the stroma fibres, radians.

    Returns:
        The :class:`Nucleus`.
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
    return Nucleus(
        cy, cx, major, minor, angle, np.stack([orders, amplitudes, phases], axis=1),
        density, granularity, rim, pale, nucleoli,
    )  # fmt: skip


def _rasterise(nucleus: Nucleus, size: int) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
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
    nucleus: Nucleus, rho: np.ndarray, rows: slice, cols: slice, grain: np.ndarray
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
    density += nucleus.rim * smoothstep((rho - 0.7) / 0.3)
    density -= nucleus.pale_centre * smoothstep(1.0 - rho / 0.6)
    if len(nucleus.nucleoli):
        r = np.arange(rows.start, rows.stop)[:, None] - nucleus.cy
        c = np.arange(cols.start, cols.stop)[None, :] - nucleus.cx
        for oy, ox in nucleus.nucleoli:
            density += 1.2 * np.exp(-((r - oy) ** 2 + (c - ox) ** 2) / 2.0)
    return nucleus.density * np.clip(density, 0.3, None)


def plan_nuclei(
    rng: np.random.Generator, size: int, lumen: np.ndarray, fibre_angle: float
) -> list[Nucleus]:
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


def paint_nuclei(
    nuclei: Sequence[Nucleus], size: int, grain: np.ndarray
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
