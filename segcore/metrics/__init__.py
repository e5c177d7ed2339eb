"""Metrics: pure NumPy Dice, Jaccard, precision and recall, and the one-pass threshold sweep.

Owns: :mod:`~segcore.metrics.counts` (confusion counts, the metric formulas and their
zero-division rules, the thresholding rule ``prob >= t``) and :mod:`~segcore.metrics.sweep`
(every threshold of a grid in one pass; pooled and mean-over-images curves).

May import: the base modules only. Never TensorFlow: the soft, differentiable versions used in
training live in :mod:`segcore.network.keras_metrics`.
"""
