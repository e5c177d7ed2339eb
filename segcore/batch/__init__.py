"""Many slides and images past one process: a batch on a Ray cluster (local by default).

Owns: :mod:`~segcore.batch.inputs` (the inputs of a batch: slides, images, folders of either;
each one's output folder, identity and whether it is already finished),
:mod:`~segcore.batch.worker` (what a worker does: the model held once, a slide's plan, its
regions — runs of chunks of the slide's grid — and its merge, one image's files),
:mod:`~segcore.batch.cluster` (Ray: imported only here and only when a batch runs; starting a
local Ray or joining a cluster; the pool of worker actors) and :mod:`~segcore.batch.engine`
(``run_batch``: the work split by slide and region, scheduled on the pool, the per-input
summary CSV) and :mod:`~segcore.batch.jobs` (a batch as the app's background job on this
machine: start, the slide jobs' lock, progress, stop, run again, summary).

May import: every package below the CLI (base, data, network, metrics, inference, slides,
evaluation, bundles, training, analysis, wholeslide). Never Streamlit. Ray only inside
functions of :mod:`~segcore.batch.cluster` and :mod:`~segcore.batch.engine`, so that nothing
else needs it installed.
"""
