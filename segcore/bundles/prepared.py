"""A fast runtime prepared where a bundle was made and shipped inside it, so that a fresh clone
predicts with it from the first start, without TensorFlow.

Preparing a runtime on a machine needs Keras: the model is converted to OpenVINO, quantised to
int8 and checked against Keras's predictions (the accuracy gate), about 30 s on two cores after
importing TensorFlow and loading the model. A bundle may carry the result:

* ``prepared/openvino-int8/`` — the int8 IR exactly as the runtime cache holds it
  (``model.xml``, ``model.bin``, ``meta.json`` with the model's SHA-256 and the OpenVINO and
  NNCF versions it was made with);
* ``prepared/keras-reference.npz`` — Keras's masks of the gate images at the card's threshold
  (:func:`segcore.inference.runtimes.gate.keras_masks`), the images' digests, Keras's pooled
  Dice against their annotation, its time per tile and the runtime's time ratio, as measured
  where it was made (:class:`KerasReference`);

and the card's ``prepared`` entry records every file's SHA-256, the versions and the machine.

:func:`prepare_runtime` makes them (``python -m segcore runtimes --model REF --ship``).
:func:`seed_cache` uses them on this machine when the bundle's runtime cache has no gate record
(:func:`segcore.bundles.runtime_cache.open_cached_runtime` asks): if the installed OpenVINO and
NNCF are the versions it was made with, every file matches the card, the reference was made at
the card's threshold and tile size on the same gate images, the IR is copied into the cache and
gated **on this CPU** against the shipped masks
(:func:`~segcore.inference.runtimes.gate.gate_against_masks`: the masks overlap Keras's with
Dice ≥ 0.99, the pooled Dice within 0.005 of Keras's). Only Keras's time per tile is not
measured here: ``auto`` takes the ratio measured where the bundle was made (int8 0.235× Keras's
time on the 2-core development VM). Anything that does not match, or a runtime that fails its
gate here, leaves no gate record, with the reason logged, and the full way (Keras, conversion,
the full gate) runs as before.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcore.bundles.loading import Bundle
from segcore.bundles.store import PREPARED_DIR, file_sha256, update_card
from segcore.errors import ConfigError
from segcore.inference.runtimes import gate as gating
from segcore.inference.runtimes import openvino_runtime as ovr
from segcore.inference.runtimes.base import OPENVINO_INT8, REDUCED_PRECISION
from segcore.inference.runtimes.selection import Report, RuntimeCache, gate_result
from segcore.timestamps import utc_now

log = logging.getLogger(__name__)

PREPARED_RUNTIME = OPENVINO_INT8
"""The runtime a bundle ships: int8 is the fastest on CPUs, and its gate needs Keras's masks
only (a float32 runtime's needs Keras's probabilities)."""

REFERENCE_FILE = "keras-reference.npz"


@dataclass(frozen=True)
class KerasReference:
    """Keras's side of the accuracy gate, measured where the bundle was made.

    Args:
        threshold: the card's threshold the masks were made at.
        tile_size: the tile side they were predicted at.
        digests: :func:`~segcore.inference.runtimes.gate.sample_digest` of each gate image.
        masks: Keras's boolean mask of each gate image.
        dice_keras: Keras's pooled Dice against the images' annotation.
        keras_ms_per_tile: Keras's milliseconds per tile there.
        time_ratio: the prepared runtime's time per tile over Keras's, there.
        made_on: the CPU there (:meth:`~segcore.inference.runtimes.cpu.CpuInfo.describe`).
        measured: when (UTC).
    """

    threshold: float
    tile_size: int
    digests: tuple[str, ...]
    masks: tuple[np.ndarray, ...]
    dice_keras: float
    keras_ms_per_tile: float
    time_ratio: float
    made_on: str
    measured: str

    def save(self, path: str | os.PathLike) -> None:
        """Writes the reference as one compressed ``.npz`` (no pickled objects)."""
        facts = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "masks"
        }
        arrays = {f"mask_{i}": np.asarray(mask, bool) for i, mask in enumerate(self.masks)}
        meta = np.frombuffer(json.dumps(facts).encode(), np.uint8)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, meta=meta, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KerasReference:
        """Reads a reference written by :meth:`save`.

        Raises:
            ConfigError: the file is not such a reference.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                facts = json.loads(bytes(data["meta"]).decode())
                masks = tuple(data[f"mask_{i}"].astype(bool) for i in range(len(facts["digests"])))
            return cls(**{**facts, "digests": tuple(facts["digests"]), "masks": masks})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a Keras reference of the gate ({exc})") from exc


def prepare_runtime(bundle: Bundle, cache: RuntimeCache, report: Report = log.info) -> dict:
    """Puts the prepared :data:`PREPARED_RUNTIME` and Keras's reference into ``bundle``'s
    ``prepared/`` folder and records them in its card; returns the card's ``prepared`` entry.

    The runtime is the one in ``cache`` (built and gated first where needed, as ``auto`` would),
    so it has passed the gate on this CPU; Keras's masks of the gate images are predicted now.

    Args:
        bundle: a bundle loaded with Keras (:func:`~segcore.bundles.loading.load_bundle`).
        cache: its runtime cache (:func:`~segcore.bundles.runtime_cache.bundle_runtime_cache`).
        report: called with a line before each slow step.

    Raises:
        ConfigError: OpenVINO or NNCF is missing, or the runtime did not pass the gate here.
    """
    from segcore.inference.runtimes.keras_runtime import keras_runtime

    runtime = PREPARED_RUNTIME
    missing = ovr.missing_packages(runtime)
    if missing:
        raise ConfigError(f"preparing {runtime} needs {' and '.join(missing)}")
    record = cache.gate_record() or cache.run_gate(report)
    result = gate_result(record, runtime)
    if result is None or not result["passed"]:
        why = record.get("failed", {}).get(runtime) or (result or {}).get("reason", "not gated")
        raise ConfigError(f"{runtime} did not pass the accuracy gate on this CPU: {why}")
    cache.compiled(runtime, report)  # the IR gated above, rebuilt if it went missing since
    samples = gating.gate_samples()
    report(f"predicting the {len(samples)} gate images with Keras (the shipped reference)…")
    masks = gating.keras_masks(
        keras_runtime(bundle.model),
        samples,
        bundle.preprocess,
        bundle.threshold,
        tile_size=bundle.input_size,
    )
    reference = KerasReference(
        threshold=bundle.threshold,
        tile_size=bundle.input_size,
        digests=tuple(gating.sample_digest(image) for image, _ in samples),
        masks=tuple(masks),
        dice_keras=result["dice_keras"],
        keras_ms_per_tile=result["keras_ms_per_tile"],
        time_ratio=result["time_ratio"],
        made_on=record["cpu"],
        measured=result["measured"],
    )
    folder = Path(bundle.path)
    ir = cache.ir(runtime)
    staging = folder / f".{PREPARED_DIR}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(ir.folder, staging / ir.folder.name)
        reference.save(staging / REFERENCE_FILE)
        files = {
            path.relative_to(staging).as_posix(): file_sha256(path)
            for path in sorted(staging.rglob("*"))
            if path.is_file()
        }
        shutil.rmtree(folder / PREPARED_DIR, ignore_errors=True)
        os.replace(staging, folder / PREPARED_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entry = {
        "runtime": runtime,
        "files": files,
        "versions": ir.expected_versions(),
        "made_on": record["cpu"],
        "created": utc_now(),
    }
    update_card(folder, lambda card: dataclasses.replace(card, prepared=entry))
    return entry


def _problem(bundle: Bundle, cache: RuntimeCache, entry: dict[str, Any]) -> str | None:
    """Why the prepared runtime of ``bundle`` cannot be used here, or ``None``."""
    runtime = entry.get("runtime")
    if runtime not in REDUCED_PRECISION:
        return f"it ships {runtime!r}, which cannot be gated without Keras"
    missing = ovr.missing_packages(runtime)
    if missing:
        return f"{' and '.join(missing)} not installed"
    installed = cache.ir(runtime).expected_versions()
    if entry.get("versions") != installed:
        return f"made with {entry.get('versions')}, and this machine has {installed}"
    folder = Path(bundle.path) / PREPARED_DIR
    files = entry.get("files")
    if not isinstance(files, dict) or not files:
        return "the card lists no files"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            return f"{PREPARED_DIR}/{name} is missing or differs from the card"
    return None


def seed_cache(bundle: Bundle, cache: RuntimeCache) -> tuple[dict | None, Any]:
    """Gates the runtime ``bundle`` ships (see the module docstring) into ``cache`` without
    Keras.

    Returns:
        ``(record, compiled)``: the gate record and the runtime compiled for the gate (``None``
        when another thread or process had just gated it); ``(None, None)``, the reason logged,
        when the bundle ships none, it does not fit this machine, it could not be gated or it
        failed its gate here (nothing is recorded then, so the full gate runs as usual). Never
        raises: the caller then takes the full way.
    """
    entry = bundle.card.prepared
    if not entry or bundle.path is None:
        return None, None
    name = bundle.card.name
    try:
        problem = _problem(bundle, cache, entry)
        if problem is None:
            folder = Path(bundle.path) / PREPARED_DIR
            reference = KerasReference.load(folder / REFERENCE_FILE)
            samples = gating.gate_samples()
            if (reference.threshold, reference.tile_size) != (bundle.threshold, bundle.input_size):
                problem = (
                    f"Keras's masks were made at threshold {reference.threshold:g} and tile "
                    f"{reference.tile_size}, the card has {bundle.threshold:g} and "
                    f"{bundle.input_size}"
                )
            elif reference.digests != tuple(gating.sample_digest(image) for image, _ in samples):
                problem = "Keras's masks were made on other gate images"
        if problem is not None:
            log.info("%s: the prepared runtime is not used (%s)", name, problem)
            return None, None
        runtime = entry["runtime"]
        ir = cache.ir(runtime)
        if not ir.install(folder / ir.folder.name):
            log.warning("%s: the prepared %s does not fit the runtime cache", name, runtime)
            return None, None

        def gate(compiled):
            return gating.gate_against_masks(
                compiled,
                samples,
                list(reference.masks),
                bundle.preprocess,
                bundle.threshold,
                dice_keras=reference.dice_keras,
                keras_ms_per_tile=reference.keras_ms_per_tile,
                time_ratio=reference.time_ratio,
                tile_size=bundle.input_size,
            )

        record, compiled = cache.gate_without_keras(
            runtime,
            gate,
            keras_reference=f"the masks shipped in the bundle's {PREPARED_DIR}/ (Keras on "
            f"{reference.made_on}, {reference.measured})",
        )
    except Exception as exc:  # a prepared runtime is an optimisation: the full way remains
        log.warning("%s: the prepared runtime could not be used (%s)", name, exc)
        return None, None
    if record is not None:
        log.info("%s: the prepared %s gated on this CPU without Keras", name, entry["runtime"])
    return record, compiled
