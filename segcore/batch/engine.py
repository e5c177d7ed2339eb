"""A batch: every input's outputs computed on a pool of Ray workers, with a summary CSV.

**The split.** An image is one task. A slide is planned first (one task: tissue, grid, the
slide's lightness mapping, ``run.json``), then cut into **regions** of ``region_tiles``
tissue tiles — runs of whole chunks of the slide's grid, in its row-major order — each one
task, and merged last (one task). Every region writes its chunks' part files into the slide's
own run folder, so the merge is ``slide run``'s merge over ``slide run``'s chunks: no
nucleus is duplicated or lost at a region border (a nucleus belongs to the tile whose core
holds its centroid, and every tile to exactly one region), and all regions use the one
mapping the plan fitted. The outputs are those of ``slide run`` on the slide, byte for byte.

**The schedule.** Tasks go to idle workers as they free up, regions of a slide as soon as its
plan is back, so several workers share a large slide while small inputs fill the gaps.

**Faults.** A task that raises reports its input as failed (the reason in the CSV: a full disk
reads ``disk full ...``) and the batch goes on; the other regions of that slide finish (their
chunks are kept for a re-run) but no merge is made. A worker process that dies is restarted by
Ray and its task sent again (:mod:`segcore.batch.cluster`), which computes only the chunks not
written yet.

**Stop.** With ``should_stop`` (the app's background batch, :mod:`segcore.batch.jobs`), the
driver looks at it between tasks: once it says stop, no task is sent any more, the workers are
killed and every unfinished input is reported ``stopped`` (a slide's finished chunks are kept,
so the same batch again resumes it).

**Idempotent.** An input whose folder holds its finished summary for this model and this
batch's threshold, pixel size and flips is skipped (:func:`~segcore.batch.inputs
.finished_summary`); a slide folder with finished chunks resumes from them, and one that holds
a run with other settings is refused (the input fails, naming what differs). Only
``summary.json``, written last, makes an input finished.

**The summary CSV** (``batch.csv`` in the output folder, written atomically at the end):
one row per input — ``input``, ``kind``, ``nuclei``, ``tissue_mm2`` (an image: its whole
area), ``density_per_mm2``, ``seconds`` (from its first task to its last), ``status``
(``completed``, ``skipped``: already finished, ``failed``, ``stopped``), ``error``, ``output``
(its folder's name inside the output folder).
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segcore.atomic import is_disk_full, write_bytes_atomic
from segcore.batch.inputs import (
    IMAGE,
    SLIDE,
    BatchInput,
    collect_inputs,
    finished_summary,
    given_settings,
)
from segcore.wholeslide.config import SlideRunConfig
from segcore.wholeslide.runfolder import slide_identity

log = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "CSV_FILE", "BatchConfig", "run_batch"]

CSV_FILE = "batch.csv"
CSV_COLUMNS = (
    "input",
    "kind",
    "nuclei",
    "tissue_mm2",
    "density_per_mm2",
    "seconds",
    "status",
    "error",
    "output",
)

WAIT_S = 1.0
"""Longest wait for a task before the progress is redrawn."""


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs.

    Args:
        workers: worker actors (each holds the model once), defaults to 1.
        cpus_per_worker: CPUs each worker asks Ray for (its model's threads), defaults to 1.
        region_tiles: tissue tiles per region task of a slide (rounded up to whole chunks),
            defaults to 32: about 100 megapixels at the default 1792² cores, a few minutes of
            a 2-core worker; a slide with more tiles is shared by several workers.
        slide: the slides' :class:`SlideRunConfig` (its ``pixel_size`` and ``threshold``
            also apply to images).
        address: the Ray cluster (None: a local Ray; ``auto``; ``ray://host:10001``).
        connect_timeout: seconds an address may take to answer.
    """

    workers: int = 1
    cpus_per_worker: float = 1.0
    region_tiles: int = 32
    slide: SlideRunConfig = field(default_factory=SlideRunConfig)
    address: str | None = None
    connect_timeout: float = 10.0


@dataclass
class _Input:
    """The driver's state of one input."""

    item: BatchInput
    status: str = "pending"
    summary: dict[str, Any] | None = None
    error: str = ""
    started: float | None = None
    seconds: float | None = None
    equalisation: dict | None = None
    regions_left: int = 0


def _row(state: _Input) -> dict[str, Any]:
    summary = state.summary or {}
    return {
        "input": state.item.given,
        "kind": state.item.kind,
        "nuclei": summary.get("nuclei", ""),
        "tissue_mm2": summary.get("tissue_mm2", ""),
        "density_per_mm2": summary.get("density_per_mm2", ""),
        "seconds": "" if state.seconds is None else round(state.seconds, 3),
        "status": state.status,
        "error": state.error,
        "output": state.item.out_dir.name,
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Writes the summary CSV atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, text.getvalue().encode("utf-8"))


def _error_line(exc: BaseException) -> str:
    """One line for a task's failure: the segcore error's message, else the exception's; a
    full disk (or quota) says ``disk full`` first."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("ray::", "Traceback", "  ")):
            text = line.strip()
    if text.lower().startswith("disk full"):  # a segcore error that says so
        return text
    if is_disk_full(cause):
        return f"disk full: {text}"
    name = type(cause).__name__
    return text if name in text or "Error" not in name else f"{name}: {text}"


class _Scheduler:
    """Runs the tasks on the workers: idle workers take the oldest ready task."""

    def __init__(self, ray: Any, workers: list[Any]):
        self.ray = ray
        self.idle = collections.deque(workers)
        self.ready: collections.deque = collections.deque()
        self.running: dict[Any, tuple[Any, tuple]] = {}

    def add(self, state: _Input, method: str, *args) -> None:
        self.ready.append((state, method, args))

    def dispatch(self) -> None:
        while self.idle and self.ready:
            worker = self.idle.popleft()
            state, method, args = self.ready.popleft()
            if state.started is None:
                state.started = time.perf_counter()
            ref = getattr(worker, method).remote(*args)
            self.running[ref] = (worker, (state, method, args))

    def next_done(self):
        """``(state, method, args, result, error)`` of a finished task, or None after
        :data:`WAIT_S`."""
        done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=WAIT_S)
        if not done:
            return None
        worker, (state, method, args) = self.running.pop(done[0])
        self.idle.append(worker)
        try:
            return state, method, args, self.ray.get(done[0]), None
        except Exception as exc:  # a task's error, or its worker lost past the retries
            return state, method, args, None, exc


def _regions(chunks: int, chunk_tiles: int, region_tiles: int) -> list[tuple[int, int]]:
    per = max(1, math.ceil(region_tiles / chunk_tiles))
    return [(start, min(start + per, chunks)) for start in range(0, chunks, per)]


class _Batch:
    """One batch's driver: what happens when each task comes back."""

    def __init__(self, scheduler: _Scheduler, config: BatchConfig, progress: Callable):
        self.scheduler, self.config, self.progress = scheduler, config, progress
        self.regions_total = self.regions_done = 0

    def start(self, state: _Input) -> None:
        item = state.item
        if item.kind == IMAGE:
            self.scheduler.add(state, "image", str(item.path), str(item.out_dir), _identity(item))
        else:
            self.scheduler.add(state, "slide_plan", str(item.path), str(item.out_dir))

    def fail(self, state: _Input, why: str) -> None:
        if state.status == "failed":
            return
        state.status, state.error = "failed", why
        state.seconds = time.perf_counter() - (state.started or time.perf_counter())
        log.warning("%s: failed: %s", state.item.given, why)

    def complete(self, state: _Input, summary: dict[str, Any]) -> None:
        state.status, state.summary = "completed", summary
        state.seconds = time.perf_counter() - (state.started or time.perf_counter())

    def handle(self, state: _Input, method: str, args: tuple, result, error) -> None:
        if method == "slide_region":
            self.regions_done += 1
            state.regions_left -= 1
        if error is not None:
            self.fail(state, _error_line(error))
            return
        if state.status == "failed":
            return
        if method in ("image", "slide_finish") or result.get("state") == "completed":
            self.complete(state, result)
        elif result.get("state") != "partial":
            self.fail(state, f"stopped: {result.get('state')}")
        elif method == "slide_plan":
            self._split(state, result)
        elif state.regions_left == 0:
            item = state.item
            self.scheduler.add(
                state, "slide_finish", str(item.path), str(item.out_dir), state.equalisation
            )

    def _split(self, state: _Input, plan: dict[str, Any]) -> None:
        item, slide = state.item, self.config.slide
        state.equalisation = plan.get("equalisation")
        regions = _regions(plan["chunks_total"], slide.chunk_tiles, self.config.region_tiles)
        if len(regions) <= 1:  # nothing to share: the merge call computes and merges
            self.scheduler.add(
                state, "slide_finish", str(item.path), str(item.out_dir), state.equalisation
            )
            return
        state.regions_left = len(regions)
        self.regions_total += len(regions)
        for span in regions:
            self.scheduler.add(
                state, "slide_region", str(item.path), str(item.out_dir), span, state.equalisation
            )


def _identity(item: BatchInput) -> dict[str, Any]:
    return slide_identity(item.path)


def _prepare(inputs: list[BatchInput], spec: Any, settings: dict[str, Any]) -> list[_Input]:
    """The states: missing inputs failed, inputs finished with these ``settings``
    (:func:`~segcore.batch.inputs.given_settings`) skipped, the rest pending."""
    card = spec.card()
    runtime = getattr(spec, "runtime", "auto")
    states = []
    for item in inputs:
        state = _Input(item)
        if item.kind not in (SLIDE, IMAGE):
            state.status, state.error = "failed", "no such file or folder"
        else:
            done = finished_summary(item, card.model_sha256 or "", runtime, settings)
            if done is not None:
                state.status, state.summary = "skipped", done
        states.append(state)
    return states


def run_batch(
    given: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    spec: Any,
    config: BatchConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ray_module: Any = None,
) -> list[dict[str, Any]]:
    """Runs a batch (see the module docstring) and writes ``batch.csv``.

    Args:
        given: slides, images and folders of either.
        out: the output folder (each input in ``out/<stem>/``).
        spec: the model (:class:`~segcore.batch.worker.ModelSpec`, or anything with ``card()``
            and ``load()``).
        config: how the batch runs.
        progress: called with ``{"inputs_done", "inputs_total", "regions_done",
            "regions_total", "failed"}`` as tasks come back.
        should_stop: asked between tasks; once True the batch stops (see the module
            docstring). Given, the caller's SIGINT and SIGTERM handlers stay in force while
            Ray runs (a local Ray's own handler would end the process at once).
        ray_module: an initialised ``ray`` (a test's); None connects as ``config`` says and
            shuts a local Ray down at the end.

    Returns:
        The summary rows (as in the CSV).

    Raises:
        ConfigError: Ray is missing or the cluster does not answer.
    """
    from segcore.batch.cluster import connect

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    states = _prepare(collect_inputs(list(given), out), spec, given_settings(config.slide))
    todo = [s for s in states if s.status == "pending"]
    report = progress or (lambda info: None)
    own = ray_module is None
    ray = ray_module
    if todo:
        handlers = _signal_handlers()
        if own:
            cpus = max(1, math.ceil(config.workers * config.cpus_per_worker))
            ray = connect(config.address, cpus=cpus, timeout=config.connect_timeout)
            if should_stop is not None:
                _restore(handlers)  # the caller's stop handler, not Ray's exit
        try:
            _run(ray, todo, states, spec, config, report, should_stop or (lambda: False))
        finally:
            if own and config.address is None:
                ray.shutdown()
            _restore(handlers)  # ray.init leaves its SIGTERM handler behind
    rows = [_row(s) for s in states]
    write_csv(out / CSV_FILE, rows)
    return rows


def _wait_until_loaded(ray, workers: list[Any]) -> None:
    """Waits until every worker holds its model, so an input's ``seconds`` count its own work,
    not the workers' start. A worker that cannot start is left to fail the tasks sent to it
    (each input then reports the reason); the server log says so now."""
    try:
        ray.get([worker.pid.remote() for worker in workers])
    except Exception as exc:  # a Ray error wrapping the worker's own
        log.warning("a batch worker did not start (%s); its inputs will report why", exc)


def _run(ray, todo: list[_Input], states, spec, config: BatchConfig, report, should_stop):
    from segcore.batch.cluster import start_workers

    workers = start_workers(
        ray,
        spec,
        config.slide.to_dict(),
        workers=config.workers,
        cpus=config.cpus_per_worker,
        pixel_size=config.slide.pixel_size,
    )
    _wait_until_loaded(ray, workers)
    scheduler = _Scheduler(ray, workers)
    batch = _Batch(scheduler, config, report)
    for state in todo:
        batch.start(state)
    try:
        while scheduler.ready or scheduler.running:
            if should_stop():
                for state in todo:
                    if state.status == "pending":
                        state.status, state.error = "stopped", "stopped on request"
                log.warning("stopped on request")
                break
            scheduler.dispatch()
            finished = scheduler.next_done()
            if finished is not None:
                batch.handle(*finished)
            report(_progress(states, batch))
    finally:
        for worker in workers:
            ray.kill(worker)


def _progress(states: list[_Input], batch: _Batch) -> dict[str, Any]:
    over = ("completed", "skipped", "failed", "stopped")
    return {
        "inputs_done": sum(s.status in over for s in states),
        "inputs_total": len(states),
        "regions_done": batch.regions_done,
        "regions_total": batch.regions_total,
        "failed": sum(s.status == "failed" for s in states),
    }


def _signal_handlers() -> dict[int, Any]:
    """This process's SIGINT and SIGTERM handlers."""
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, Any]) -> None:
    """Puts back the handlers :func:`_signal_handlers` saw (only the main thread may)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in handlers.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
