"""Data and images: reading and checking images and masks, preprocessing, tiles, datasets.

Owns: :mod:`~segcore.data.images` (decoding, size limits, array conventions),
:mod:`~segcore.data.preprocessing` (``PreprocessConfig``: equalisation, smoothing, mask
binarisation), :mod:`~segcore.data.tiling` (tile positions, padding), :mod:`~segcore.data.datasets`
(folder layouts, sample sets, splits), :mod:`~segcore.data.synthetic` (the generated H&E set) and
:mod:`~segcore.data.samples` (the sample sources offered to the app).

May import: the base modules only. NumPy, OpenCV and SciPy; never TensorFlow.
"""
