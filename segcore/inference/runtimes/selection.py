"""Choosing and opening a runtime: ``keras``, an OpenVINO one by name, or ``auto``.

:func:`open_runtime` returns a :class:`~segcore.inference.runtimes.base.RuntimeModel` for a
loaded Keras model:

* ``"keras"``: the model itself, through TensorFlow (the reference).
* ``"openvino"``, ``"openvino-bf16"``, ``"openvino-int8"``: the converted model from the cache
  (:class:`~segcore.inference.runtimes.openvino_runtime.IrCache`), built on first use. If the
  packages are missing or the conversion fails, Keras runs instead and the returned model's
  ``notice`` says why.
* ``"auto"``: the fastest runtime that passed the accuracy gate
  (:mod:`~segcore.inference.runtimes.gate`) on this CPU, and is faster than Keras there; Keras
  when none did. The gate runs once per model, CPU and library versions; its figures are kept
  in ``gate-<cpu key>.json`` beside the converted models, with the SHA-256 of the IR each
  runtime was gated with, so a rebuilt IR that differs is gated again. A record written by
  :meth:`RuntimeCache.gate_without_keras` (a runtime shipped with its bundle, gated against
  the Keras masks shipped with it) says so in ``keras_reference``; its time ratio is the one
  measured where the bundle was made.

The cache folder for a model is ``<cache_dir>/<model sha256>/``: one sub-folder per IR and one
gate record per CPU. Callers choose ``cache_dir`` (:mod:`segcore.bundles.runtime_cache` puts it
beside the bundle).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import segcore.inference.runtimes.gate as gating
import segcore.inference.runtimes.openvino_runtime as ovr
from segcore.atomic import write_json_atomic
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.runtimes.base import (
    AUTO,
    CHOICES,
    KERAS,
    OPENVINO,
    OPENVINO_BF16,
    RUNTIMES,
    RuntimeModel,
)
from segcore.inference.runtimes.cpu import cpu_info, supports_bf16
from segcore.inference.runtimes.keras_runtime import keras_runtime

log = logging.getLogger(__name__)

GATE_FORMAT = 1

Report = Callable[[str], None]
"""Called with a line of progress (building, gating) for the user."""


def check_runtime_name(name: object) -> str:
    """``name`` if it is one of :data:`~segcore.inference.runtimes.base.CHOICES`.

    Raises:
        ConfigError: anything else, naming the choices.
    """
    if name not in CHOICES:
        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(CHOICES)}")
    return str(name)


def why_unavailable(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here (packages missing; bfloat16 not native on this CPU),
    or ``None`` when it can."""
    if runtime == KERAS:
        return None
    missing = ovr.missing_packages(runtime)
    if missing:
        return f"not installed (pip install {' '.join(missing)})"
    if runtime == OPENVINO_BF16 and not supports_bf16():
        return "no native bfloat16 on this CPU (avx512_bf16 or AMX)"
    return None


def auto_candidates() -> list[str]:
    """The fast runtimes ``auto`` considers here: OpenVINO float32 if installed, bfloat16 where
    the CPU has it natively, int8 if NNCF is installed too (:func:`why_unavailable`)."""
    return [name for name in RUNTIMES if name != KERAS and why_unavailable(name) is None]


class RuntimeCache:
    """The converted models and gate records of one Keras model under ``cache_dir``.

    Args:
        model: the loaded ``keras.Model``.
        model_sha256: the SHA-256 of its file (the bundle card's), which keys the cache.
        cache_dir: the cache root; the model's folder is ``cache_dir / model_sha256``.
        preprocess: the model's preprocessing (calibration and gate tiles are made with it).
        threshold: the model's threshold (the gate compares masks at it).
        tile_size: the model's tile side (the gate predicts at it).
    """

    def __init__(
        self,
        model: Any,
        *,
        model_sha256: str,
        cache_dir: str | os.PathLike,
        preprocess: PreprocessConfig,
        threshold: float,
        tile_size: int = 256,
    ) -> None:
        if not model_sha256:
            raise ConfigError("a runtime cache needs the model's SHA-256")
        self.model = model
        self.model_sha256 = model_sha256
        self.folder = Path(cache_dir) / model_sha256
        self.preprocess = preprocess
        self.threshold = threshold
        self.tile_size = tile_size

    # -- IR ------------------------------------------------------------------------------

    def ir(self, runtime: str) -> ovr.IrCache:
        kind = ovr.IR_KIND[runtime]
        return ovr.IrCache(self.folder / f"openvino-{kind}", self.model_sha256, kind)

    def _build_ir(self, runtime: str, report: Report) -> Any:
        cache = self.ir(runtime)
        if cache.kind == "float32":
            return cache.load_or_build(lambda: self._converted(report))

        def build_int8():
            converted = self.ir(OPENVINO).load_or_build(lambda: self._converted(report))
            report(
                f"quantising to int8 (NNCF, {gating.CALIBRATION_TILES} synthetic calibration "
                "tiles; once per model)…"
            )
            tiles = gating.calibration_tiles(self.preprocess, size=self.tile_size)
            return ovr.quantize(converted, tiles)

        extra = {
            "calibration": f"{gating.CALIBRATION_TILES} synthetic tiles, seed "
            f"{gating.CALIBRATION_SEED}, {self.tile_size}²"
        }
        return cache.load_or_build(build_int8, extra)

    def _converted(self, report: Report) -> Any:
        report("converting the model to OpenVINO (once per model)…")
        return ovr.convert(self.model)

    def compiled(self, runtime: str, report: Report = log.info) -> RuntimeModel:
        """``runtime`` (an OpenVINO one) compiled from the cached IR, built first if needed.

        Raises:
            ImportError: OpenVINO (or NNCF for int8) is not installed.
            Exception: whatever conversion or compilation raised.
        """
        missing = ovr.missing_packages(runtime)
        if missing:
            raise ImportError(
                f"{runtime} needs {' and '.join(missing)} (pip install {' '.join(missing)})"
            )
        return ovr.compile_runtime(self._build_ir(runtime, report), runtime)

    # -- gate ----------------------------------------------------------------------------

    def gate_path(self) -> Path:
        return self.folder / f"gate-{cpu_info().key}.json"

    def _expected_record(self) -> dict[str, Any]:
        return {
            "format": GATE_FORMAT,
            "model_sha256": self.model_sha256,
            "cpu": cpu_info().describe(),
            "versions": {"openvino": ovr.openvino_version(), "nncf": ovr.nncf_version()},
            "threshold": self.threshold,
            "tile_size": self.tile_size,
        }

    def _ir_hashes(self, runtimes: list[str]) -> dict[str, str | None]:
        hashes = {}
        for runtime in runtimes:
            meta = self.ir(runtime).meta()
            hashes[runtime] = None if meta is None else meta["files"]["model.bin"]
        return hashes

    def gate_record(self) -> dict[str, Any] | None:
        """The gate record of this model on this CPU if it still holds (same versions,
        threshold, tile size, and the IRs it gated unchanged), else ``None``."""
        try:
            record = json.loads(self.gate_path().read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        expected = self._expected_record()
        if any(record.get(key) != value for key, value in expected.items()):
            return None
        gated = record.get("ir", {})
        if not isinstance(gated, dict) or gated != self._ir_hashes(list(gated)):
            return None
        return record

    def run_gate(self, report: Report = log.info) -> dict[str, Any]:
        """Builds every :func:`auto_candidates` runtime, gates them against Keras, writes and
        returns the record (``results``: one :class:`GateResult` dict per runtime that built;
        ``failed``: runtime → why it did not build)."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.gate_path()) + ".lock"):
            record = self.gate_record()  # another thread or process may have just gated
            if record is not None:
                return record
            built, failed = [], {}
            for runtime in auto_candidates():
                try:
                    built.append(self.compiled(runtime, report))
                except Exception as exc:  # a runtime that does not build is not a candidate
                    log.warning("%s did not build: %s", runtime, exc)
                    failed[runtime] = f"{exc.__class__.__name__}: {str(exc)[:300]}"
            results = []
            if built:
                samples = gating.gate_samples()
                report(
                    f"checking {', '.join(m.name for m in built)} against Keras on "
                    f"{len(samples)} images (the accuracy gate; once per model and CPU)…"
                )
                results = gating.run_gate(
                    keras_runtime(self.model),
                    built,
                    samples,
                    self.preprocess,
                    self.threshold,
                    tile_size=self.tile_size,
                )
            return self._write_record(built, results, failed)

    def _write_record(
        self,
        gated: list[RuntimeModel],
        results: list[gating.GateResult],
        failed: dict[str, str],
        **facts: Any,
    ) -> dict[str, Any]:
        record = {
            **self._expected_record(),
            "ir": self._ir_hashes([m.name for m in gated]),
            "results": [r.to_dict() for r in results],
            "failed": failed,
            **facts,
        }
        write_json_atomic(self.gate_path(), record)
        return record

    def gate_without_keras(
        self,
        runtime: str,
        gate: Callable[[RuntimeModel], gating.GateResult],
        keras_reference: str,
    ) -> tuple[dict[str, Any], RuntimeModel | None]:
        """Gates ``runtime``, whose IR is already in this cache, with ``gate`` (e.g.
        :func:`~segcore.inference.runtimes.gate.gate_against_masks` on the Keras masks a bundle
        ships) and, if it passes, writes the record, unless a record holds already.
        ``keras_reference`` says where Keras's side of the comparison comes from (the record's
        ``keras_reference``). No Keras model is needed. A runtime that fails is not recorded:
        the full gate (:meth:`run_gate`, with Keras) then runs as if nothing had been tried,
        and may find another runtime that passes.

        Returns:
            ``(record, compiled)``: the record, and the runtime compiled for the gate (ready to
            predict with, so the caller need not compile it again), or ``None`` when a record
            held already; ``(None, None)`` when the runtime failed (the reason logged).

        Raises:
            ImportError, Exception: the runtime cannot be compiled from its IR.
        """
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.gate_path()) + ".lock"):
            record = self.gate_record()
            if record is not None:
                return record, None
            if self.ir(runtime).meta() is None:
                raise ConfigError(f"{runtime}: no usable IR in {self.folder} to gate")
            compiled = self.compiled(runtime)
            result = gate(compiled)
            if not result.passed:
                log.warning(
                    "%s failed its gate against %s: %s", runtime, keras_reference, result.reason
                )
                return None, None
            record = self._write_record([compiled], [result], {}, keras_reference=keras_reference)
            return record, compiled


def choose(record: dict[str, Any]) -> str:
    """The runtime ``auto`` picks from a gate record: the fastest that passed and is faster
    than Keras, else ``"keras"``."""
    passed = [
        r for r in record.get("results", []) if r.get("passed") and r.get("time_ratio", 9) < 1.0
    ]
    if not passed:
        return KERAS
    return min(passed, key=lambda r: r["time_ratio"])["runtime"]


def gate_result(record: dict[str, Any] | None, runtime: str) -> dict[str, Any] | None:
    """``runtime``'s :class:`~segcore.inference.runtimes.gate.GateResult` dict in a gate
    ``record``, or ``None`` (no record, or the runtime was not gated)."""
    for result in (record or {}).get("results", []):
        if isinstance(result, dict) and result.get("runtime") == runtime:
            return result
    return None


def open_runtime(
    model: Any,
    requested: str = AUTO,
    *,
    model_sha256: str = "",
    cache_dir: str | os.PathLike | None = None,
    preprocess: PreprocessConfig | None = None,
    threshold: float = 0.5,
    tile_size: int = 256,
    report: Report = log.info,
) -> RuntimeModel:
    """The :class:`RuntimeModel` to predict with (see the module docstring).

    Args:
        model: the loaded ``keras.Model``.
        requested: ``"auto"``, ``"keras"`` or an OpenVINO runtime's name.
        model_sha256, cache_dir: key and root of the conversion cache; without them only
            ``"keras"`` is possible (``auto`` and named fast runtimes fall back, with a notice).
        preprocess, threshold, tile_size: the model's (for calibration and the gate).
        report: called with a line before each slow first-use step (conversion, quantisation,
            gate), for the CLI's stderr or the app's status.

    Raises:
        ConfigError: ``requested`` is not a runtime name.
    """
    requested = check_runtime_name(requested)
    reference = keras_runtime(model)
    if requested == KERAS:
        return reference
    if not model_sha256 or cache_dir is None:
        return reference.with_notice(
            f"{requested}: no cache folder for converted models (the model has no SHA-256 "
            "or bundle folder); running Keras"
        )
    cache = RuntimeCache(
        model,
        model_sha256=model_sha256,
        cache_dir=cache_dir,
        preprocess=preprocess or PreprocessConfig(),
        threshold=threshold,
        tile_size=tile_size,
    )
    if requested == AUTO:
        if not auto_candidates():
            return reference.with_notice(
                "no fast runtime is installed (pip install openvino nncf); running Keras"
            )
        # a record holds only while every IR it gated is on disk unchanged, so the runtime
        # compiled below is the one that was gated (a missing or changed IR is rebuilt and
        # gated again by run_gate)
        record = cache.gate_record() or cache.run_gate(report)
        runtime_name = choose(record)
        if runtime_name == KERAS:
            return reference.with_notice(
                "no fast runtime passed the accuracy gate and beat Keras on this CPU; running Keras"
            )
    else:
        runtime_name = requested
        record = cache.gate_record()
    try:
        runtime = cache.compiled(runtime_name, report)
    except Exception as exc:
        log.warning("%s failed: %s", runtime_name, exc)
        return reference.with_notice(
            f"{runtime_name} is not available ({exc.__class__.__name__}: {str(exc)[:200]}); "
            "running Keras"
        )
    result = gate_result(record, runtime_name)
    notice = None
    if result is not None and not result.get("passed"):
        notice = f"{runtime_name} failed the accuracy gate on this CPU ({result['reason']})"
    return replace(runtime, gate=result, notice=notice)
