"""Inference: one image of any size in, a probability map of the same size out.

Owns: :mod:`~segcore.inference.predict` (whole-image preprocessing, overlapping tiles, blending,
batching; any Keras model or callable on batches) and :mod:`~segcore.inference.classical` (the
classical hematoxylin + Otsu reference, run like a model). New runtimes and resampling to a
model's pixel size belong here, as does estimating an image's pixel size from its nuclei
(:mod:`~segcore.inference.scale`).

May import: the base modules, :mod:`segcore.data`, :mod:`segcore.metrics`. Imports TensorFlow
only when handed a Keras model.
"""
