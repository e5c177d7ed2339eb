"""Evaluation: a model over a set of samples at full size, scored at one threshold and a sweep.

Owns: :mod:`~segcore.evaluation.evaluate` (``evaluate``, ``EvaluationResult``, combining sweeps,
nucleus counts), :mod:`~segcore.evaluation.instance_tuning` (the nucleus-splitting setting on
validation tiles, one or several sources) and :mod:`~segcore.evaluation.sources` (one
threshold for many labs' validation parts). Quality benchmarks and comparisons with classical
baselines belong here.

May import: the base modules, :mod:`segcore.data`, :mod:`segcore.metrics`,
:mod:`segcore.inference`.
"""
