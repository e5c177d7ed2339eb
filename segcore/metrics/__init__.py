"""Metrics: pure NumPy Dice, Jaccard, precision and recall, the one-pass threshold sweep,
nuclei as objects (detection F1, panoptic quality, AJI) and calibration.

Owns: :mod:`~segcore.metrics.counts` (confusion counts, the metric formulas and their
zero-division rules, the thresholding rule ``prob >= t``), :mod:`~segcore.metrics.sweep`
(every threshold of a grid in one pass; pooled and mean-over-images curves),
:mod:`~segcore.metrics.labels` (instance ground truth from label images, binary masks or colour
renderings), :mod:`~segcore.metrics.instances` (instance matching, F1, PQ, AJI; per image and
per set) and :mod:`~segcore.metrics.calibration` (reliability diagram and expected calibration
error, pooled image by image; logit histograms for temperature and Platt scaling).

May import: the base modules only. Never TensorFlow: the soft, differentiable versions used in
training live in :mod:`segcore.network.keras_metrics`.
"""
