"""The files one image's prediction writes: what ``predict`` (``--instances``) and ``batch``
share, so both write the same bytes.

* ``<stem>_prob.png`` (probability × 255) and ``<stem>_mask.png`` (0/255) at the image's size;
* with instances, ``<stem>_labels.png`` (uint16 labels), ``<stem>.geojson`` (QuPath
  detections with their measurements) and ``<stem>_nuclei.csv`` (one row per nucleus).

Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_instance_files", "write_probability_files"]


def write_probability_files(out: Path, stem: str, probs: np.ndarray, threshold: float) -> None:
    """Writes ``<stem>_prob.png`` and ``<stem>_mask.png`` in ``out``."""
    from segcore.atomic import write_bytes_atomic
    from segcore.data.images import encode_png
    from segcore.inference.predict import predict_mask

    write_bytes_atomic(out / f"{stem}_prob.png", encode_png(np.round(probs * 255).astype(np.uint8)))
    write_bytes_atomic(out / f"{stem}_mask.png", encode_png(predict_mask(probs, threshold) * 255))


def write_instance_files(
    out: Path, stem: str, probs: np.ndarray, image: np.ndarray, bundle, threshold, pixel_size
) -> int:
    """Writes ``<stem>_labels.png``, ``<stem>.geojson`` and ``<stem>_nuclei.csv`` in ``out``;
    returns the number of nuclei. ``pixel_size`` is the image's (None: the model's).

    Raises:
        SegcoreError: more than 65,535 nuclei (before anything is written).
    """
    from segcore.analysis.objects import nuclei_view
    from segcore.atomic import write_bytes_atomic
    from segcore.inference.instances import label_instances
    from segcore.inference.resolution import grid_pixel_size

    size = grid_pixel_size(pixel_size, bundle.pixel_size)
    config = bundle.instances
    labels = label_instances(probs, threshold, config, pixel_size=size)
    view = nuclei_view(labels, image, threshold=threshold, config=config, pixel_size=size)
    png = view.label_png()  # refuses > 65,535 nuclei before anything is written
    write_bytes_atomic(out / f"{stem}_labels.png", png)
    write_bytes_atomic(out / f"{stem}.geojson", view.geojson())
    write_bytes_atomic(out / f"{stem}_nuclei.csv", view.csv())
    return view.count
