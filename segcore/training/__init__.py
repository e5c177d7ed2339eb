"""Training runs: the recipe, the input pipeline, the trainer, and runs as processes on disk.

Owns: :mod:`~segcore.training.trainer` (``TrainConfig`` and ``train``), :mod:`~segcore.training.
pipeline` (tf.data crops and augmentation), :mod:`~segcore.training.runs` (the run folder and its
status), :mod:`~segcore.training.jobs` (training as a background process), :mod:`~segcore.training.
locks` (one training per device) and :mod:`~segcore.training.devices` (CPU/GPU choice).

May import: every package below it (base, data, network, metrics, inference, evaluation,
bundles). Only ``pipeline`` and the trainer's functions load TensorFlow.
"""
