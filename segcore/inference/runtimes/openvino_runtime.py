"""OpenVINO runtimes: the Keras model converted once, cached on disk, checked before use.

* :func:`convert` turns the loaded ``keras.Model`` into an OpenVINO model with a dynamic input
  ``[-1, -1, -1, 3]`` (any batch, any height and width), so one call may take a whole image.
* :func:`quantize` makes an int8 copy with NNCF's post-training quantisation, calibrated on
  tiles the caller provides (:func:`segcore.inference.runtimes.gate.calibration_tiles`).
* :class:`IrCache` keeps each converted model as OpenVINO IR (``model.xml`` + ``model.bin``)
  in a folder with a ``meta.json`` recording the Keras model's SHA-256, the OpenVINO (and NNCF)
  versions and the files' SHA-256. :meth:`IrCache.load` uses a folder only when all of these
  match; anything else (a stale, corrupt, half-written or foreign folder) is rebuilt. Builds
  happen under a file lock (one builder per folder, across threads and processes) into a
  temporary folder renamed into place, so a reader never sees half a model.
* :func:`compile_runtime` compiles an IR for the CPU in float32, bfloat16 or as quantised and
  wraps it as a :class:`~segcore.inference.runtimes.base.RuntimeModel` (one infer request per
  thread, so concurrent sessions may share it).

Importing this module does not import OpenVINO; :func:`openvino_version` says whether it is
installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import ConfigError
from segcore.inference.runtimes.base import OPENVINO, OPENVINO_BF16, OPENVINO_INT8, RuntimeModel

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the cache folder's layout and ``meta.json``."""

META_FILE = "meta.json"
IR_FILES = ("model.xml", "model.bin")

IR_KIND = {OPENVINO: "float32", OPENVINO_BF16: "float32", OPENVINO_INT8: "int8"}
"""Which IR each runtime compiles: bfloat16 is a compile-time hint on the float32 IR."""

PRECISION_HINT = {OPENVINO: "f32", OPENVINO_BF16: "bf16", OPENVINO_INT8: "f32"}
"""OpenVINO's ``INFERENCE_PRECISION_HINT`` per runtime (int8 layers stay int8 under any)."""


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or ``None`` when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def nncf_version() -> str | None:
    """The installed NNCF's version (needed for int8 only), or ``None``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("nncf")
    except PackageNotFoundError:
        return None


def missing_packages(runtime: str) -> list[str]:
    """The pip packages ``runtime`` needs that are not installed (empty when it can run)."""
    missing = [] if openvino_version() else ["openvino"]
    if runtime == OPENVINO_INT8 and not nncf_version():
        missing.append("nncf")
    return missing


def convert(model: Any) -> Any:
    """Converts a loaded ``keras.Model`` (TensorFlow back-end) to an ``openvino.Model`` taking
    float32 ``[-1, -1, -1, 3]`` and returning the model's probabilities."""
    import openvino as ov
    import tensorflow as tf

    # A tf.function calling the model on one tensor: converting the Keras model itself makes
    # OpenVINO call it with a tuple, which Keras warns about (an error under strict warnings).
    function = tf.function(
        lambda image: model(image, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    ov_model = ov.convert_model(function.get_concrete_function())
    ov_model.reshape([-1, -1, -1, 3])
    return ov_model


def quantize(ov_model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """An int8 copy of ``ov_model`` by NNCF's post-training quantisation (default preset:
    symmetric int8 weights and activations, fast bias correction).

    Args:
        ov_model: a float32 ``openvino.Model`` from :func:`convert`.
        calibration: float32 ``(1, H, W, 3)`` model inputs (preprocessed tiles) from which the
            activation ranges are measured.
    """
    import nncf

    if not calibration:
        raise ConfigError("int8 quantisation needs at least one calibration tile")
    dataset = nncf.Dataset([np.asarray(tile, dtype=np.float32) for tile in calibration])
    return nncf.quantize(ov_model, dataset, subset_size=len(calibration))


_HASHES: dict[tuple[str, int, int, int], str] = {}
_HASHES_LOCK = threading.Lock()


def _sha256(path: Path, *, fresh: bool = False) -> str:
    """The file's SHA-256.

    The rule (issue 21): every time an IR is *read from disk to run* (:meth:`IrCache.load`),
    its files are hashed in full (``fresh``; ~0.1 s for the 47 MB IR, less than reading it
    into OpenVINO), so a file corrupted in place — same size, modification time restored — is
    never run. Elsewhere (what the Models page and ``runtimes`` list, the gate record's
    check) a hash is remembered for this process while the file's inode, size and
    modification time stay the same; those lookups only describe the cache, and the next load
    checks again."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = None if fresh else _HASHES.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    with _HASHES_LOCK:
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


class IrCache:
    """The cached IR of one Keras model in one form (``"float32"`` or ``"int8"``).

    Args:
        folder: where the IR lives (``<cache>/<model sha256>/openvino-<kind>``); its parent
            holds the lock file.
        model_sha256: the Keras model file's SHA-256, which the IR must have been made from.
        kind: ``"float32"`` or ``"int8"``.
    """

    def __init__(self, folder: str | os.PathLike, model_sha256: str, kind: str) -> None:
        if kind not in ("float32", "int8"):
            raise ConfigError(f"IR kind must be 'float32' or 'int8', got {kind!r}")
        self.folder = Path(folder)
        self.model_sha256 = model_sha256
        self.kind = kind

    def expected_versions(self) -> dict[str, str | None]:
        """The library versions a usable IR must have been made with."""
        versions = {"openvino": openvino_version()}
        if self.kind == "int8":
            versions["nncf"] = nncf_version()
        return versions

    def meta(self, *, fresh: bool = False) -> dict[str, Any] | None:
        """The folder's ``meta.json`` if the IR is usable as it stands, else ``None``, with
        the reason logged (missing, other model, other versions, files changed); ``fresh``
        hashes the files in full rather than trusting this process's memory (:func:`_sha256`).
        """
        try:
            meta = json.loads((self.folder / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s: unreadable (%s); rebuilding", self.folder / META_FILE, exc)
            return None
        problem = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            problem = "an unknown layout"
        elif meta.get("model_sha256") != self.model_sha256 or meta.get("kind") != self.kind:
            problem = "made from another model"
        elif meta.get("versions") != self.expected_versions():
            problem = f"made with {meta.get('versions')}, not {self.expected_versions()}"
        else:
            files = meta.get("files", {})
            for name in IR_FILES:
                path = self.folder / name
                if not path.is_file() or _sha256(path, fresh=fresh) != files.get(name):
                    problem = f"{name} is missing or differs from the hash in {META_FILE}"
                    break
        if problem:
            log.warning("%s: %s; rebuilding", self.folder, problem)
            return None
        return meta

    def load(self) -> Any | None:
        """The cached ``openvino.Model``, or ``None`` when there is no usable IR."""
        import openvino as ov

        if self.meta(fresh=True) is None:  # what is run is always checked in full
            return None
        try:
            return ov.Core().read_model(str(self.folder / "model.xml"))
        except Exception as exc:  # an IR OpenVINO cannot parse is as good as none
            log.warning("%s: OpenVINO cannot read it (%s); rebuilding", self.folder, exc)
            return None

    def load_or_build(self, build: Callable[[], Any], extra: dict[str, Any] | None = None) -> Any:
        """The cached model, or ``build()``'s, saved first. One builder at a time per folder
        (a file lock); a waiting caller then finds the IR built and loads it.

        Args:
            build: makes the ``openvino.Model`` (conversion, quantisation).
            extra: more facts for ``meta.json`` (e.g. the calibration data).
        """
        from filelock import FileLock

        model = self.load()
        if model is not None:
            return model
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder) + ".lock"):
            model = self.load()  # another thread or process may have built it meanwhile
            if model is not None:
                return model
            model = build()
            self._save(model, extra or {})
        return self.load() or model

    def install(self, source: str | os.PathLike) -> bool:
        """Copies an IR folder made elsewhere (e.g. shipped with a bundle:
        :mod:`segcore.bundles.prepared`) into this cache unless a usable IR is there already;
        returns whether a usable IR is there afterwards. The copy is made under the build lock
        into a temporary folder renamed into place, and is usable only if its ``meta.json``
        holds here (same model, versions and file hashes): a foreign or altered folder is
        removed again."""
        from filelock import FileLock

        if self.meta() is not None:
            return True
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder) + ".lock"):
            if self.meta() is not None:
                return True
            staging = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.mkdir(parents=True)
                for name in (*IR_FILES, META_FILE):
                    shutil.copyfile(Path(source) / name, staging / name)
                shutil.rmtree(self.folder, ignore_errors=True)
                os.replace(staging, self.folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if self.meta(fresh=True) is None:
                shutil.rmtree(self.folder, ignore_errors=True)
                return False
        return True

    def _save(self, model: Any, extra: dict[str, Any]) -> None:
        import openvino as ov

        staging = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
            ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            meta = {
                "format": FORMAT,
                "kind": self.kind,
                "model_sha256": self.model_sha256,
                "versions": self.expected_versions(),
                "files": {name: _sha256(staging / name) for name in IR_FILES},
                **extra,
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            shutil.rmtree(self.folder, ignore_errors=True)
            os.replace(staging, self.folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def compile_runtime(ov_model: Any, runtime: str, *, detail: str = "") -> RuntimeModel:
    """Compiles ``ov_model`` for the CPU as ``runtime`` (:data:`PRECISION_HINT`) and wraps it.

    Each thread gets its own infer request, so sessions may call the model concurrently.
    """
    import openvino as ov

    if runtime not in PRECISION_HINT:
        raise ConfigError(f"not an OpenVINO runtime: {runtime!r}")
    compiled = ov.Core().compile_model(
        ov_model, "CPU", {"INFERENCE_PRECISION_HINT": PRECISION_HINT[runtime]}
    )
    local = threading.local()

    def predict(batch: np.ndarray) -> np.ndarray:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    text = (
        f"OpenVINO {openvino_version()}, "
        + {
            OPENVINO: "float32",
            OPENVINO_BF16: "bfloat16",
            OPENVINO_INT8: "int8",
        }[runtime]
    )
    return RuntimeModel(name=runtime, predict=predict, any_size=True, detail=detail or text)
