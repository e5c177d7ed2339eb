"""Which devices a training uses, and how: GPUs, distribution strategy, precision, lock key.

Importing this module does not load TensorFlow; the functions that need it import it when
called. :func:`count_visible_gpus` and :func:`default_lock_key` never load it, so a web server can
pick the device lock of a job it launches without initialising TensorFlow or a GPU.

Order in a training process::

    configure_gpus()                      # before anything touches a GPU
    n_gpus = len(tf.config.list_physical_devices("GPU"))
    strategy = make_strategy(choose_strategy_name(n_gpus, os.environ.get("TF_CONFIG")))
    apply_precision(choose_precision(n_gpus))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from segcore.errors import ConfigError

log = logging.getLogger(__name__)

STRATEGIES = ("multi_worker", "mirrored", "one_device_gpu", "one_device_cpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class DeviceInfo:
    """One device TensorFlow can use.

    Args:
        name: TensorFlow's short name, e.g. ``"GPU:0"`` or ``"CPU:0"``.
        kind: ``"GPU"`` or ``"CPU"``.
        description: the model, e.g. ``"NVIDIA H100 80GB HBM3"``; empty if unknown.
        memory_bytes: total memory (GPU memory, or the machine's RAM for the CPU), or None.
        compute_capability: ``(major, minor)`` of a GPU, or None.
    """

    name: str
    kind: Literal["GPU", "CPU"]
    description: str = ""
    memory_bytes: int | None = None
    compute_capability: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """``"GPU:0 NVIDIA H100 80GB HBM3"``, or just the name if the model is unknown."""
        return f"{self.name} {self.description}".strip()


# --- without TensorFlow -----------------------------------------------------------------------
def _nvidia_smi(*query: str) -> list[list[str]]:
    """Rows of ``nvidia-smi --query-gpu=...`` (empty when there is no nvidia-smi or it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def _physical_nvidia_gpus() -> int:
    if _NVIDIA_PROC.is_dir():
        return sum(1 for p in _NVIDIA_PROC.iterdir() if p.is_dir())
    return len(_nvidia_smi("index"))


def _cuda_visible_entries() -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` CUDA honours (up to the first invalid one)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    entries = []
    for item in visible.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        entries.append(item)
    return entries


def count_visible_gpus() -> int:
    """Number of NVIDIA GPUs a process started now would see, without importing TensorFlow.

    Counts the driver's GPUs (``/proc/driver/nvidia/gpus``, else ``nvidia-smi``) and applies
    ``CUDA_VISIBLE_DEVICES``. It can differ from TensorFlow's count (e.g. a CPU-only TensorFlow
    on a GPU machine); use it to choose a lock, not a strategy.

    Returns:
        The number of GPUs, 0 without an NVIDIA driver.
    """
    physical = _physical_nvidia_gpus()
    entries = _cuda_visible_entries()
    return physical if entries is None else min(len(entries), physical)


def training_device_label() -> str:
    """What a training started now would run on, without importing TensorFlow.

    GPUs (after ``CUDA_VISIBLE_DEVICES``) are named from ``nvidia-smi`` with their memory,
    e.g. ``"GPU:0 NVIDIA H100 80GB HBM3 (80 GB)"``; without one,
    ``"CPU (2 cores, 24 GB RAM)"``. The precision follows :func:`choose_precision`.
    """
    import psutil

    n_gpus = count_visible_gpus()
    if n_gpus == 0:
        ram = psutil.virtual_memory().total / 2**30
        return f"CPU ({os.cpu_count()} cores, {ram:.0f} GB RAM), precision float32"
    rows = _nvidia_smi("index", "uuid", "name", "memory.total")
    entries = _cuda_visible_entries()
    if entries is not None:
        rows = [r for e in entries for r in rows if len(r) == 4 and e in (r[0], r[1])]
    labels = []
    for i, row in enumerate(rows[:n_gpus]):
        memory = f" ({int(row[3]) / 1024:.0f} GB)" if len(row) == 4 and row[3].isdigit() else ""
        labels.append(f"GPU:{i} {row[2] if len(row) == 4 else ''}{memory}".strip())
    labels = labels or [f"{n_gpus} NVIDIA GPU(s)"]
    return f"{', '.join(labels)}, precision {choose_precision(n_gpus)}"


def lock_key(n_gpus: int) -> str:
    """The device lock key of a training that sees ``n_gpus`` GPUs.

    One lock per device kind: with several GPUs one job uses all of them (MirroredStrategy), so
    every GPU training shares the single key ``"gpu0"``; CPU trainings use ``"cpu"``.

    Args:
        n_gpus: the GPUs the training sees.

    Returns:
        ``"gpu0"`` or ``"cpu"``.
    """
    return "gpu0" if n_gpus > 0 else "cpu"


def default_lock_key() -> str:
    """:func:`lock_key` of :func:`count_visible_gpus` (no TensorFlow import)."""
    return lock_key(count_visible_gpus())


def choose_strategy_name(n_gpus: int, tf_config: str | None) -> str:
    """Chooses the distribution strategy (pure function).

    Args:
        n_gpus: GPUs visible to this process.
        tf_config: the ``TF_CONFIG`` environment variable (JSON), or None / empty.

    Returns:
        ``"multi_worker"`` if ``TF_CONFIG`` names a cluster of more than one worker (``chief`` and
        ``worker`` tasks counted), else ``"mirrored"`` for several GPUs, ``"one_device_gpu"`` for
        one, ``"one_device_cpu"`` for none.

    Raises:
        ConfigError: ``TF_CONFIG`` is not JSON of the form
            ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}``.
        ValueError: ``n_gpus`` is negative.
    """
    if n_gpus < 0:
        raise ValueError(f"n_gpus must be >= 0, got {n_gpus}")
    if tf_config and tf_config.strip() and _count_workers(tf_config) > 1:
        return "multi_worker"
    if n_gpus > 1:
        return "mirrored"
    return "one_device_gpu" if n_gpus == 1 else "one_device_cpu"


def _count_workers(tf_config: str) -> int:
    example = (
        'expected e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    try:
        data: Any = json.loads(tf_config)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); {example}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object, got {type(data).__name__}; {example}")
    cluster = data.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError(f"TF_CONFIG 'cluster' must be an object; {example}")
    workers = 0
    for role in ("chief", "worker"):
        tasks = cluster.get(role, [])
        if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
            raise ConfigError(
                f"TF_CONFIG 'cluster.{role}' must be a list of 'host:port'; {example}"
            )
        workers += len(tasks)
    task = data.get("task")
    if workers > 1 and (
        not isinstance(task, dict) or "type" not in task or not isinstance(task.get("index"), int)
    ):
        raise ConfigError(f"TF_CONFIG needs 'task' with 'type' and an integer 'index'; {example}")
    return workers


def choose_precision(n_gpus: int) -> str:
    """The Keras dtype policy for a training on ``n_gpus`` GPUs.

    Args:
        n_gpus: GPUs used.

    Returns:
        ``"mixed_float16"`` with a GPU, ``"float32"`` on the CPU.
    """
    return "mixed_float16" if n_gpus > 0 else "float32"


# --- with TensorFlow --------------------------------------------------------------------------
def configure_gpus() -> int:
    """Turns on memory growth for every GPU, so TensorFlow does not take all GPU memory at once.

    Call it before anything initialises the GPUs. Calling it again, or after initialisation, is
    harmless (the "already initialized" error is logged and ignored).

    Returns:
        The number of GPUs TensorFlow sees.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:
            log.debug("memory growth of %s unchanged: %s", gpu.name, exc)
    return len(gpus)


def _gpu_memory_by_index() -> dict[int, int]:
    """Total memory (bytes) of each GPU visible to TensorFlow, from nvidia-smi."""
    rows = _nvidia_smi("index", "uuid", "memory.total")
    by_index: dict[str, int] = {}
    by_uuid: dict[str, int] = {}
    for row in rows:
        if len(row) == 3 and row[2].isdigit():
            by_index[row[0]] = int(row[2]) * 1024 * 1024
            by_uuid[row[1]] = by_index[row[0]]
    entries = _cuda_visible_entries()
    if entries is None:
        return {int(k): v for k, v in by_index.items()}
    memory = {}
    for i, entry in enumerate(entries):
        value = by_index.get(entry) or by_uuid.get(entry)
        if value is None:
            matches = [v for u, v in by_uuid.items() if u.startswith(entry)]
            value = matches[0] if len(matches) == 1 else None
        if value is not None:
            memory[i] = value
    return memory


def describe_devices() -> list[DeviceInfo]:
    """The devices TensorFlow sees, GPUs first (does not initialise them).

    GPU models come from ``tf.config.experimental.get_device_details``; their total memory from
    ``nvidia-smi`` (TensorFlow only reports memory in use), None when unavailable. The CPU entry
    reports the machine's RAM.

    Returns:
        One :class:`DeviceInfo` per GPU, then one for the CPU.
    """
    import psutil
    import tensorflow as tf

    devices = []
    gpus = tf.config.list_physical_devices("GPU")
    memory = _gpu_memory_by_index() if gpus else {}
    for index, gpu in enumerate(gpus):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (RuntimeError, ValueError):
            details = {}
        capability = details.get("compute_capability")
        devices.append(
            DeviceInfo(
                name=f"GPU:{index}",
                kind="GPU",
                description=str(details.get("device_name", "")),
                memory_bytes=memory.get(index),
                compute_capability=tuple(capability) if capability else None,
            )
        )
    devices.append(
        DeviceInfo(
            name="CPU:0",
            kind="CPU",
            description=f"{os.cpu_count()} cores",
            memory_bytes=int(psutil.virtual_memory().total),
        )
    )
    return devices


def device_summary(devices: list[DeviceInfo] | None = None) -> str:
    """A one-line description of what a training runs on.

    Args:
        devices: as returned by :func:`describe_devices`, defaults to calling it.

    Returns:
        ``"CPU"`` without GPU, else the GPUs, e.g. ``"GPU:0 NVIDIA H100 80GB HBM3"`` (several are
        joined with ``", "``).
    """
    if devices is None:
        devices = describe_devices()
    gpus = [d.label for d in devices if d.kind == "GPU"]
    return ", ".join(gpus) if gpus else "CPU"


def make_strategy(name: str):
    """Builds the ``tf.distribute`` strategy chosen by :func:`choose_strategy_name`.

    ``multi_worker`` must be built at the start of the program, before other TensorFlow work,
    and reads ``TF_CONFIG`` itself.

    Args:
        name: one of :data:`STRATEGIES`.

    Returns:
        ``MultiWorkerMirroredStrategy``, ``MirroredStrategy`` or ``OneDeviceStrategy`` on
        ``/gpu:0`` or ``/cpu:0``.

    Raises:
        ConfigError: unknown name, or ``one_device_gpu`` / ``mirrored`` without a GPU.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    import tensorflow as tf

    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device_cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if not tf.config.list_physical_devices("GPU"):
        raise ConfigError(f"strategy {name!r} needs a GPU, but TensorFlow sees none")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/gpu:0")


def apply_precision(policy: str) -> None:
    """Sets the Keras global dtype policy (keep the model's last layer float32 when mixed).

    Args:
        policy: one of :data:`PRECISIONS`.

    Raises:
        ConfigError: unknown policy.
    """
    if policy not in PRECISIONS:
        raise ConfigError(f"unknown precision {policy!r}; choose one of {', '.join(PRECISIONS)}")
    import keras

    keras.mixed_precision.set_global_policy(policy)
