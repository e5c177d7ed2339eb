"""What the app shows: per-image analysis, pictures, downloads and the model catalog.

Owns: :mod:`~segcore.analysis.analyse` (one image's probabilities, cached, and its read-outs),
:mod:`~segcore.analysis.visualize` (palette, overlays, the threshold explorer, downloads) and
:mod:`~segcore.analysis.catalog` (the bundles on offer and the active model).

May import: every other segcore package. Never Streamlit: the pages and ``appkit`` call this
package; it does not call them.
"""
