"""What every runtime gives :func:`segcore.inference.predict.predict_probabilities`: a
:class:`RuntimeModel`, a callable on float32 ``(B, H, W, 3)`` batches returning ``(B, H, W)``
probabilities, with its name and what is known about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

KERAS = "keras"
"""The reference runtime: the Keras model run by TensorFlow in float32."""

OPENVINO = "openvino"
"""OpenVINO in float32 (a converted copy of the Keras model)."""

OPENVINO_BF16 = "openvino-bf16"
"""OpenVINO with bfloat16 inference precision (native on CPUs with avx512_bf16 or AMX)."""

OPENVINO_INT8 = "openvino-int8"
"""OpenVINO with int8 weights and activations (NNCF post-training quantisation)."""

AUTO = "auto"
"""The fastest installed runtime that passed the accuracy gate on this CPU (else keras)."""

RUNTIMES = (KERAS, OPENVINO, OPENVINO_BF16, OPENVINO_INT8)
"""Every runtime by name, the reference first."""

CHOICES = (AUTO, *RUNTIMES)
"""What ``--runtime`` accepts."""

RUNTIME_ENV = "SEGCORE_RUNTIME"
"""Environment variable naming the default runtime of the CLI and the app (``auto`` if unset)."""

REDUCED_PRECISION = frozenset({OPENVINO_BF16, OPENVINO_INT8})
"""Runtimes gated on masks and Dice (float32 ones are gated on probabilities)."""


def default_runtime() -> str:
    """``$SEGCORE_RUNTIME`` if set, else ``"auto"`` (checked where it is used)."""
    import os

    return os.environ.get(RUNTIME_ENV) or AUTO


@dataclass(frozen=True)
class RuntimeModel:
    """A model ready to predict, whichever runtime runs it.

    Args:
        name: one of :data:`RUNTIMES`.
        predict: float32 ``(B, H, W, 3)`` in ``[0, 1]`` → ``(B, H, W)`` or ``(B, H, W, 1)``
            probabilities. Thread-safe.
        any_size: whether one call may take any H and W (multiples of 16) — whole images in one
            call; otherwise only the sizes it was built for.
        detail: what runs, in words (library version, precision), for captions and logs.
        notice: why this is not the runtime that was asked for, if it is not (not installed,
            failed to build, failed the gate); ``None`` otherwise.
        gate: the accuracy-gate figures of this runtime on this CPU
            (:class:`~segcore.inference.runtimes.gate.GateResult` as a dict), if measured.
    """

    name: str
    predict: Callable[[np.ndarray], Any]
    any_size: bool = False
    detail: str = ""
    notice: str | None = None
    gate: dict[str, Any] | None = field(default=None, compare=False)

    def __call__(self, batch: np.ndarray) -> Any:
        return self.predict(batch)

    def with_notice(self, notice: str | None) -> RuntimeModel:
        """This model with ``notice`` (the reason another runtime was asked for)."""
        return replace(self, notice=notice)

    def describe(self) -> str:
        """One line for the app and the CLI: the runtime's name and detail, and its gate
        figures when known."""
        text = self.name + (f" ({self.detail})" if self.detail else "")
        if self.gate:
            ratio = self.gate.get("time_ratio")
            if ratio is not None and self.name != KERAS:
                text += f", {ratio:.2f}× keras's time per tile"
            if self.gate.get("mask_dice") is not None and self.name != KERAS:
                text += f", masks {self.gate['mask_dice']:.3f} Dice of keras's"
        return text
