"""One image's nuclei at one threshold and setting: labels, table, figures and exports.

:class:`NucleiView` is what the Predict page's nuclei section shows and offers for download; it
is made by :meth:`segcore.analysis.analyse.ImageAnalysis.nuclei` from the cached probabilities
(the model never runs again) with :func:`nuclei_view`.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.analysis.exports import geojson_bytes, label_png_bytes
from segcore.analysis.nuclei import NucleusTable, nuclei_table
from segcore.analysis.overlays import instance_outlines
from segcore.inference.instances import InstanceConfig
from segcore.metrics.instances import InstanceScores, instance_scores

__all__ = ["NucleiView", "nuclei_view"]


@dataclass(frozen=True, eq=False)
class NucleiView:
    """The predicted nuclei of one image at one threshold and :class:`InstanceConfig`.

    Attributes:
        threshold: the probability threshold of the mask that was split.
        config: the split and size setting.
        labels: ``int32 (H, W)`` nuclei ``1..N`` (read-only).
        table: one row of measurements per nucleus (:class:`NucleusTable`).
        summary: :meth:`NucleusTable.summary` (count, density per mm², medians).
        scores: the instance figures against the ground truth (detection F1 at IoU > 0.5,
            PQ, AJI, counts), or ``None`` without ground truth.
        truth_note: how the ground truth was read into nuclei (e.g. a binary mask's touching
            nuclei count as one), or ``None``.
    """

    threshold: float
    config: InstanceConfig
    labels: np.ndarray
    table: NucleusTable
    summary: dict[str, Any]
    scores: InstanceScores | None
    truth_note: str | None = None

    @property
    def count(self) -> int:
        """Number of predicted nuclei."""
        return len(self.table)

    def distributions(self) -> dict[str, np.ndarray]:
        """The measurements worth a histogram, by display name with unit: area, circularity
        and mean hematoxylin optical density."""
        table = self.table
        unit = table.units[table.area_column]
        return {
            f"Area ({unit})": table[table.area_column],
            "Circularity": table["circularity"],
            "Mean hematoxylin OD": table["mean_hematoxylin_od"],
        }

    def outlines(self, image: np.ndarray) -> np.ndarray:
        """``image`` with each predicted nucleus outlined."""
        return instance_outlines(image, self.labels)

    def geojson(self) -> bytes:
        """The nuclei as a GeoJSON FeatureCollection QuPath imports as detections."""
        return geojson_bytes(self.labels, self.table)

    def label_png(self) -> bytes:
        """The labels as a 16-bit PNG (0 = background).

        Raises:
            InvalidImageError: more than 65,535 nuclei.
        """
        return label_png_bytes(self.labels)

    def csv(self) -> bytes:
        """The measurement table as CSV (header row first)."""
        return self.table.to_csv()


def nuclei_view(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    threshold: float,
    config: InstanceConfig,
    pixel_size: float | None,
    truth_labels: np.ndarray | None = None,
    truth_note: str | None = None,
) -> NucleiView:
    """Measures the nuclei of ``labels`` on ``image`` and scores them against ``truth_labels``.

    Args:
        labels: the predicted nuclei (``label_instances`` output).
        image: the image, ``uint8`` RGB of the same H×W.
        threshold: the threshold the labels were made at.
        config: the setting they were made with.
        pixel_size: µm per pixel of the image (``None``: measurements in pixels).
        truth_labels: the ground truth's nuclei, or ``None``.
        truth_note: how the ground truth was read, shown beside the figures.
    """
    table = nuclei_table(labels, image, pixel_size)
    return NucleiView(
        threshold=float(threshold),
        config=config,
        labels=labels,
        table=table,
        summary=table.summary(labels.shape),
        scores=None if truth_labels is None else instance_scores(truth_labels, labels),
        truth_note=truth_note,
    )
