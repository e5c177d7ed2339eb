"""Label images: instance ground truth from label images, binary masks or colour renderings.

A *label image* is a non-negative integer array: 0 is background, every other value one nucleus.
:func:`ground_truth_instances` reads whatever a user gives as ground truth (an instance label
image, a binary mask, a colour-coded rendering) as one; :func:`consecutive_labels` renumbers
labels ``1..N``. Pure NumPy/SciPy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure

from segcore.errors import InvalidImageError

__all__ = [
    "BINARY_NOTE",
    "COLOUR_NOTE",
    "consecutive_labels",
    "ground_truth_instances",
    "integer_labels",
]

BINARY_NOTE = (
    "The ground truth is a binary mask, so its nuclei were separated as connected regions: "
    "touching nuclei count as one."
)
COLOUR_NOTE = (
    "The ground truth is a colour image: each connected region of one non-black colour is one "
    "nucleus."
)


def integer_labels(array: np.ndarray, name: str) -> np.ndarray:
    """Returns ``array`` as a non-negative integer array, or raises naming ``name``."""
    if array.size == 0:
        raise InvalidImageError(f"{name} has no pixels (shape {array.shape})")
    if array.dtype == bool:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise InvalidImageError(
                f"{name} must hold whole-number labels (0 = background), but has non-integer "
                f"or non-finite float values; threshold probabilities first"
            )
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InvalidImageError(f"{name} must be an integer label image, got dtype {array.dtype}")
    if array.min() < 0:
        raise InvalidImageError(f"{name} has negative labels (min {int(array.min())})")
    return array


def consecutive_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabels a non-negative integer array to 0 (background), 1..N.

    Returns:
        The int32 label image of ``labels``' shape, and the original label of each new label
        (``ids[k - 1]`` was relabelled ``k``), in increasing order.
    """
    flat = labels.ravel()
    top = int(flat.max())
    if top <= max(4 * flat.size, 1 << 16):
        present = np.bincount(flat.astype(np.intp, copy=False), minlength=1) > 0
        present[0] = False
        lookup = np.cumsum(present).astype(np.int32)
        return lookup[flat].reshape(labels.shape), np.flatnonzero(present)
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] != 0:
        inverse += 1
    ids = values[values != 0]
    return inverse.astype(np.int32).reshape(labels.shape), ids


def _colour_labels(rgb: np.ndarray) -> np.ndarray:
    """One label per 8-connected region of one non-black colour of an ``(H, W, 3)`` array
    (renderings often reuse a small palette, so one colour may mark several nuclei)."""
    pixels = rgb.reshape(-1, 3)
    if rgb.dtype == np.uint8:
        wide = pixels.astype(np.uint32)
        packed = (wide[:, 0] << 16) | (wide[:, 1] << 8) | wide[:, 2]
        labels, _ = consecutive_labels(packed)
    else:
        _, inverse = np.unique(pixels, axis=0, return_inverse=True)
        inverse = inverse.ravel() + 1
        inverse[~pixels.any(axis=1)] = 0
        labels, _ = consecutive_labels(inverse)
    regions = measure.label(labels.reshape(rgb.shape[:2]), background=0, connectivity=2)
    return regions.astype(np.int32, copy=False)


def ground_truth_instances(mask, *, name: str = "mask") -> tuple[np.ndarray, str | None]:
    """Turns a ground-truth array into an instance label image.

    Accepted forms:

    * a label image (2-D, at least two distinct nonzero values, e.g. the ``uint16`` instance
      masks of ``../shared/data``): relabelled 1..N in the order of the original labels, each
      label one nucleus even when its pixels are not connected;
    * a binary mask (one nonzero value, or boolean): split into 8-connected regions, with
      :data:`BINARY_NOTE`, because touching nuclei cannot be told apart;
    * an RGB(A) rendering ``(H, W, 3 or 4)``: each 8-connected region of one non-black colour
      is one nucleus, with :data:`COLOUR_NOTE` (transparent pixels are background). Three
      equal channels are read as a 2-D image; ``(H, W, 1)`` is read as 2-D.

    Args:
        mask: the ground truth; float arrays must hold whole numbers.
        name: how messages call the array (e.g. the file name).

    Returns:
        An ``int32`` label image of the mask's height and width (0 = background, 1..N
        consecutive), and a sentence for users about how it was read, or ``None`` for a label
        image or an empty mask.

    Raises:
        InvalidImageError: (a ``ValueError``) another shape, no pixels, non-integer or negative
            values, or a dtype that is not numeric.
    """
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.shape[-1] == 4:
            array = np.where(array[..., 3:] == 0, 0, array[..., :3])
        same = np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(
            array[..., 0], array[..., 2]
        )
        if not same:
            if not np.issubdtype(array.dtype, np.number) or (
                np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all()
            ):
                raise InvalidImageError(f"{name} is a colour image of unusable values")
            return _colour_labels(array), COLOUR_NOTE
        array = array[..., 0]
    if array.ndim != 2:
        raise InvalidImageError(
            f"{name} must be a 2-D label image or mask, or an (H, W, 3/4) colour rendering, "
            f"got shape {array.shape}"
        )
    labels, ids = consecutive_labels(integer_labels(array, name))
    if len(ids) != 1:
        return labels, None
    components, _ = ndimage.label(labels > 0, structure=np.ones((3, 3), dtype=bool))
    return components.astype(np.int32, copy=False), BINARY_NOTE
