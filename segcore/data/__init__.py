"""Data and images: reading and checking images and masks, preprocessing, tiles, datasets.

Owns: :mod:`~segcore.data.images` (decoding, size limits, array conventions),
:mod:`~segcore.data.preprocessing` (``PreprocessConfig``: equalisation, smoothing, mask
binarisation), :mod:`~segcore.data.tiling` (tile positions, padding),
:mod:`~segcore.data.layouts` (folder layouts, finding and pairing image and mask files),
:mod:`~segcore.data.datasets` (sample sets, ``open_dataset``, splits, loading samples),
:mod:`~segcore.data.annotations` (QuPath GeoJSON outlines rasterised into instance labels),
:mod:`~segcore.data.zip_import` (a dataset folder unpacked safely from an uploaded zip),
:mod:`~segcore.data.synthetic` (one synthetic H&E tile: tissue, stains, acquisition) with
:mod:`~segcore.data.synthetic_nuclei` (its nuclei), :mod:`~segcore.data.synthetic_set` (the
synthetic set on disk, its name ``SYNTHETIC`` and default size ``SYNTHETIC_COUNT``) and
:mod:`~segcore.data.samples` (the sample sources offered to the app) with
:mod:`~segcore.data.roots` (the data roots: the only folders the app's browser users may open).

May import: the base modules only. NumPy, OpenCV, SciPy and scikit-image; never TensorFlow.
"""
