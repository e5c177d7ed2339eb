"""Segmenting a whole slide: the streamed run over its tissue tiles, nuclei stitched across tile
borders, the run folder's outputs, and the run as a background job.

Owns: :mod:`~segcore.wholeslide.config` (``SlideRunConfig``), :mod:`~segcore.wholeslide.tiles`
(one tile's pixels on the work grid, and its nuclei, kept by the tile whose core holds their
centroid) with :mod:`~segcore.wholeslide.nuclei_region` (the part of a tile's box split into
nuclei: its core and what their objects reach), :mod:`~segcore.wholeslide.model` (the model
a run predicts with: the gated runtime from the cache without TensorFlow when there is one),
:mod:`~segcore.wholeslide.segment` (``segment_slide``: the run, resumable chunks,
the summary), :mod:`~segcore.wholeslide.pipeline` (the streamed part: read-ahead thread,
model, nuclei thread), :mod:`~segcore.wholeslide.runfolder` (``run.json``: whether a run may
continue in a folder), :mod:`~segcore.wholeslide.outputs` (atomic files, part files, the
merge into QuPath GeoJSON and the nucleus table), :mod:`~segcore.wholeslide.density` (the
density heat map) and :mod:`~segcore.wholeslide.jobs` (a slide run as its own process:
start, queue, stop, resume) with :mod:`~segcore.wholeslide.job_runner` (that process: the queue,
the lock, the status, the end).

May import: every package below the CLI (base, data, network, metrics, inference, slides,
evaluation, bundles, training, analysis). Never Streamlit.
"""
