"""Runtimes: what runs the network's forward pass — TensorFlow/Keras in float32 (the reference)
or OpenVINO (float32, bfloat16, int8) — behind one interface,
:class:`~segcore.inference.runtimes.base.RuntimeModel`.

* :mod:`~segcore.inference.runtimes.base`: the interface and the runtime names.
* :mod:`~segcore.inference.runtimes.keras_runtime`: the Keras reference.
* :mod:`~segcore.inference.runtimes.openvino_runtime`: conversion, int8 quantisation, the
  checked on-disk cache, compilation.
* :mod:`~segcore.inference.runtimes.gate`: the accuracy gate and its speed measurement.
* :mod:`~segcore.inference.runtimes.selection`: ``open_runtime`` — a runtime by name, or
  ``auto``.
* :mod:`~segcore.inference.runtimes.cpu`: the CPU's flags (bfloat16, VNNI, AMX).

Importing this package imports neither TensorFlow nor OpenVINO.
"""

from segcore.inference.runtimes.base import AUTO, CHOICES, KERAS, RUNTIMES, RuntimeModel
from segcore.inference.runtimes.selection import check_runtime_name, open_runtime

__all__ = [
    "AUTO",
    "CHOICES",
    "KERAS",
    "RUNTIMES",
    "RuntimeModel",
    "check_runtime_name",
    "open_runtime",
]
