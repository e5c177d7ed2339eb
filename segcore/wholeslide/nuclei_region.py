"""The part of a tile's box whose nuclei must be split: :func:`nuclei_region`.

A tile keeps the nuclei whose centroid lies in its core (:mod:`segcore.wholeslide.tiles`), yet
its box holds a halo around the core (128 pixels a side by default, a quarter of a 2048² box)
so that the nuclei crossing the core's border are whole. Splitting the whole box into nuclei
(:func:`~segcore.inference.instances.label_instances`) spends most of a tile's nuclei time;
only the core and what its nuclei can see need it. :func:`nuclei_region` finds that part, so
that the labels of every nucleus a tile may keep are those the whole box gives, not an
approximation: the region follows the objects that cross the core's border, as far as they
reach, instead of a fixed margin that a long cluster of nuclei could outgrow.

The reasoning, for :func:`~segcore.inference.instances.label_instances` as it stands (holes
filled, Euclidean distance to the background, a Gaussian of σ = 1 px, h-maxima markers and a
watershed per 8-connected object): an object's labels depend only on its own pixels, on the
background status within :data:`CONTEXT_PIXELS` of it (holes filled the same way) and on the
components' raster order, which OpenCV takes by pairs of rows. A change to that function's
reach (a wider blur, say) must widen :data:`CONTEXT_PIXELS`; ``tests/test_wholeslide.py``
compares both ways on real tissue.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CONTEXT_PIXELS", "nuclei_region"]


CONTEXT_PIXELS = 16
"""Work pixels kept around each object that meets a tile's core when its nuclei are split
(:func:`nuclei_region`). :func:`~segcore.inference.instances.label_instances` sees this far
around an object: its Gaussian (σ = 1 px, a 9 × 9 kernel) reaches 4 pixels out, where a
neighbouring object's distance to the background comes from within another 6 (that object's
nearest background lies between the two); 10 would do, 16 (4 µm at 0.25 µm/px) leaves room."""


def _meeting(boxes: np.ndarray, area: tuple[int, int, int, int]) -> np.ndarray:
    """The rows of ``boxes`` that overlap ``area`` (both ``(x0, y0, x1, y1)``, half-open)."""
    x0, y0, x1, y1 = area
    return boxes[(boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)]


def _grown(area: tuple[int, int, int, int], boxes: np.ndarray, by: int) -> tuple[int, ...]:
    """The bounding box of ``area`` and of ``boxes`` grown by ``by`` on every side."""
    if not len(boxes):
        return area
    return (
        min(area[0], int(boxes[:, 0].min()) - by),
        min(area[1], int(boxes[:, 1].min()) - by),
        max(area[2], int(boxes[:, 2].max()) + by),
        max(area[3], int(boxes[:, 3].max()) + by),
    )


def nuclei_region(
    probabilities: np.ndarray, threshold: float, fill_holes: bool, core: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """The part of a box whose nuclei labels equal the whole box's for every nucleus that may
    be kept: ``(x0, y0, x1, y1)`` in box pixels, half-open.

    :func:`~segcore.inference.instances.label_instances` works per *object* (8-connected
    foreground, ``probabilities >= threshold``, holes filled): its filling, distances,
    markers and watershed depend only on the object's pixels and :data:`CONTEXT_PIXELS`
    around it. A kept nucleus has its centroid in the core, so the bounding box of its object
    meets the core. The region therefore holds the core and every object whose bounding box
    meets it, each with :data:`CONTEXT_PIXELS` around; then every hole (background not
    connected to the box's edge: what filling fills) that meets that, with the pixels around
    it, so that a hole near those objects is filled here as over the whole box (the objects'
    boxes need no filling: a hole lies inside the box of the object around it). An object
    reaching the box's edge takes the region to it. The left and top edges are rounded down to
    even pixels: OpenCV numbers connected components in raster order by pairs of rows, so the
    kept nuclei come out in the same order.

    Args:
        probabilities: the box's ``(h, w)`` probabilities.
        threshold: a pixel is nucleus when its probability is ``>= threshold``.
        fill_holes: the :class:`~segcore.inference.instances.InstanceConfig`'s.
        core: the core in box pixels, ``(x0, y0, x1, y1)``.
    """
    height, width = probabilities.shape
    mask = (np.asarray(probabilities) >= threshold).astype(np.uint8)
    # Suzuki's borders: an outer one per 8-connected object, one per hole (4-connected
    # background not connected to the edge: what filling fills) traced along its object.
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return core
    rects = np.array([cv2.boundingRect(contour) for contour in contours], np.int64)
    boxes = np.column_stack([rects[:, :2], rects[:, :2] + rects[:, 2:]])
    outer = hierarchy[0][:, 3] < 0
    region = _grown(core, _meeting(boxes[outer], core), CONTEXT_PIXELS)
    if fill_holes:  # a hole's border box holds the hole and a pixel around it
        region = _grown(region, _meeting(boxes[~outer], region), 0)
    x0, y0 = max(region[0], 0) // 2 * 2, max(region[1], 0) // 2 * 2
    return x0, y0, min(region[2], width), min(region[3], height)
