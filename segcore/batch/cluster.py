"""Ray, imported here only and only when a batch runs: a local Ray or a cluster, and the pool
of worker actors.

* :func:`connect` — no address: a local Ray on this machine (``ray.init(num_cpus=...,
  include_dashboard=False)``, the embedded default); ``auto``: the cluster this machine belongs
  to (``ray start`` ran here); ``ray://host:10001`` (Ray Client) or ``host:6379`` (the head's
  GCS): that cluster. An address that does not answer within ``timeout`` seconds is a
  :class:`~segcore.errors.ConfigError` of one line — the port is tried first, so a dead host
  never leaves ``ray.init`` retrying for minutes.
* :func:`start_workers` — ``workers`` actors of :class:`~segcore.batch.worker.SegmentWorker`,
  each loading the model once, with ``max_restarts`` (a killed worker process is started
  again) and ``max_task_retries`` (the task it was running is sent again; the tasks are
  idempotent, :mod:`segcore.batch.worker`).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from segcore.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["RAY_VERSION", "connect", "require_ray", "start_workers"]

RAY_VERSION = "2.60.0"
"""The Ray release the project pins (``requirements-cluster.txt``)."""

MAX_RESTARTS = -1
"""A worker process that dies is always started again (it holds no state but the model)."""

MAX_TASK_RETRIES = 3
"""Times a task lost with its worker is sent again before its input is reported failed."""

_REPO = Path(__file__).resolve().parents[2]


def require_ray():
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"batch needs Ray, which is not installed: pip install ray=={RAY_VERSION} "
            "(or pip install -r requirements-cluster.txt)"
        ) from None
    return ray


def _probe(address: str, timeout: float) -> None:
    """Refuses an address whose port does not accept a connection within ``timeout`` s."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(
            f"--ray {address}: no Ray cluster answers at {host}:{port} ({why} within "
            f"{timeout:g} s); start one (ray start --head) or check the address"
        ) from None


def connect(address: str | None, *, cpus: int | None = None, timeout: float = 10.0) -> Any:
    """Starts or joins Ray (see the module docstring); returns the ``ray`` module.

    Args:
        address: None for a local Ray, ``auto``, ``ray://host:port`` or ``host:port``.
        cpus: CPUs of a local Ray (None: this machine's).
        timeout: seconds an address may take to answer.

    Raises:
        ConfigError: Ray is not installed, or the address does not answer.
    """
    ray = require_ray()
    if address not in (None, "auto"):
        _probe(address, timeout)
    if ray.is_initialized():
        return ray
    # Local workers import segcore from this checkout, wherever the driver was started.
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(_REPO), path) if p)}
    if address is None:
        ray.init(
            num_cpus=cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": env},
        )
        return ray
    # Ray retries a GCS that does not answer once a second, 20 times by default.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(max(1, round(timeout))))
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--ray {address}: cannot join the cluster ({first})") from None
    return ray


def start_workers(
    ray: Any, spec: Any, config: dict[str, Any], *, workers: int, cpus: float, pixel_size=None
) -> list[Any]:
    """``workers`` worker actors, each given ``cpus`` CPUs (its model's threads follow them).

    Returns:
        The actor handles (each loads the model in its own process as it starts).
    """
    from segcore.batch.worker import SegmentWorker

    threads = str(max(1, int(cpus)))
    remote = ray.remote(
        num_cpus=cpus,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads}},
    )(SegmentWorker)
    return [remote.remote(spec, config, pixel_size) for _ in range(workers)]
