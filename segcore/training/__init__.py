"""Training runs: the recipe, the input pipeline, the trainer, and runs as processes on disk.

Owns: :mod:`~segcore.training.config` (``TrainConfig``, ``AugmentConfig``; TF-free),
:mod:`~segcore.training.trainer` (``train``: one run, start to end), :mod:`~segcore.training.models`
(building, initialising, resuming and compiling the run's model), :mod:`~segcore.training.pipeline`
(tf.data crops and augmentation), :mod:`~segcore.training.callback` (per-batch and per-epoch
bookkeeping), :mod:`~segcore.training.checkpoints` (resume checkpoints),
:mod:`~segcore.training.finish` (the bundle and card at the end), :mod:`~segcore.training.runs`
(the run folder and its status), :mod:`~segcore.training.jobs` (training as a background
process), :mod:`~segcore.training.locks` (one training per device) and
:mod:`~segcore.training.devices` (CPU/GPU choice), :mod:`~segcore.training.recipes` (the
repository's recipes, ``scripts/recipes/``) and :mod:`~segcore.training.estimates` (how long
a run will take, from measured runs).

May import: every package below it (base, data, network, metrics, inference, evaluation,
bundles). Only ``pipeline`` and the trainer's functions load TensorFlow.
"""
