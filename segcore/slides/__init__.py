"""Whole-slide images: opening vendor pyramids, finding the tissue, planning tiles over it.

Owns: :mod:`~segcore.slides.reader` (``open_slide``, ``Slide``, ``SlideInfo``: OpenSlide for
vendor formats and tiled TIFF, tifffile-based reading for OME-TIFF; only regions are read),
:mod:`~segcore.slides.tissue` (tissue detection on a low-resolution level) and
:mod:`~segcore.slides.grid` (the tiles, with their halos, that cover the tissue at the model's
pixel size).

May import: the base modules, :mod:`segcore.data`, :mod:`segcore.network`,
:mod:`segcore.metrics`, :mod:`segcore.inference`. No TensorFlow, no Streamlit.
"""
