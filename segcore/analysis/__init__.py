"""What the app shows: per-image analysis, pictures, downloads and the model catalog.

Owns: :mod:`~segcore.analysis.analyse` (one image's probabilities, cached, and its read-outs),
:mod:`~segcore.analysis.uploads` (uploaded bytes to image and mask, and their cache digest),
:mod:`~segcore.analysis.overlays` (colour palette, heat map, mask picture and overlays),
:mod:`~segcore.analysis.explorer` (the threshold explorer: one image's metrics at any
threshold), :mod:`~segcore.analysis.downloads` (CSV and PNG downloads),
:mod:`~segcore.analysis.checks` (the input checks the overlays and the explorer share, and
whether an image looks like H&E),
:mod:`~segcore.analysis.nuclei` (per-nucleus measurements: ``NucleusTable``),
:mod:`~segcore.analysis.exports` (GeoJSON outlines for QuPath, 16-bit label PNG, nuclei CSV),
:mod:`~segcore.analysis.catalog` (the bundles on offer and the active model) and
:mod:`~segcore.analysis.cards` (a model card as readable tables: facts, figures per set, the
before/after comparison of a fine-tuned model).

May import: every other segcore package. Never Streamlit: the pages and ``appkit`` call this
package; it does not call them.
"""
