"""Resume checkpoints of a run: ``checkpoints/epoch-NNN.keras`` and ``checkpoints/state.json``.

A checkpoint is the compiled model *with* its optimizer state (unlike a bundle). It is written
through a temporary file, then ``metrics.csv``, then ``state.json`` pointing at it — last, so a
process killed at any moment leaves either the previous complete checkpoint or the new one.
A write that fails (a full disk) removes what it had written: the temporary file, and the new
checkpoint if ``state.json`` could not point at it. What a killed process leaves behind
(temporary files, a checkpoint ``state.json`` never pointed at) :func:`discard_partial_files`
removes when the run resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from segcore.atomic import write_json_atomic
from segcore.timestamps import utc_now
from segcore.training.runs import RunDir

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
BEST_FILE = "best.keras"
"""The weights of the best epoch so far (by :data:`segcore.training.callback.BEST_METRIC`)."""


def checkpoint_state(run: RunDir) -> dict[str, Any] | None:
    """The run's ``state.json`` (epoch, checkpoint file, best epoch), or None before the first."""
    try:
        return json.loads((run.checkpoints_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None


def save_model_atomic(model, path: Path) -> None:
    """Saves a compiled model (with optimizer state) to ``path`` via a temporary file, which
    is removed if saving fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_checkpoint(
    run: RunDir, model, *, epoch: int, best: dict | None, history: list[dict], stopped_at=None
) -> None:
    """Checkpoint after ``epoch`` completed epochs (``stopped_at``: the batch of a stop).

    Writes the model, ``metrics.csv`` and finally ``state.json``; then deletes the checkpoint
    the previous ``state.json`` pointed at. If a write fails, the new checkpoint is deleted
    again and the previous one stays the one to resume from.
    """
    name = f"epoch-{epoch:03d}" + (f"-stop{stopped_at}" if stopped_at is not None else "")
    path = run.checkpoints_dir / f"{name}.keras"
    previous = checkpoint_state(run)
    save_model_atomic(model, path)
    try:
        run.write_metrics(history)
        write_json_atomic(
            run.checkpoints_dir / STATE_FILE,
            {
                "epoch": epoch,
                "checkpoint": path.name,
                "best": best,
                "stopped_at_batch": stopped_at,
                "saved_at": utc_now(),
            },
        )
    except BaseException:
        if not previous or previous.get("checkpoint") != path.name:
            path.unlink(missing_ok=True)
        raise
    if previous and previous.get("checkpoint") not in (None, path.name):
        (run.checkpoints_dir / previous["checkpoint"]).unlink(missing_ok=True)


STALE_STATUS_TMP_SECONDS = 60.0
"""Age after which a ``status.json`` temporary file is taken for a killed writer's leftover."""


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def discard_partial_files(run: RunDir) -> list[Path]:
    """Deletes what an interrupted write left in ``run``; returns what was deleted.

    That is: temporary files of checkpoints, ``metrics.csv`` and previews, a bundle's staging
    folder, and checkpoints ``state.json`` does not point at. Call it only while holding the
    run's device lock (no other process writes these files then). ``status.json`` and
    ``stop.request`` are written by other processes too (the app, a stop), so of their
    temporary files only those older than :data:`STALE_STATUS_TMP_SECONDS` go: a write in
    progress takes milliseconds, so such a file is a killed writer's leftover.
    """
    import time

    state = checkpoint_state(run) or {}
    keep = {STATE_FILE, BEST_FILE, state.get("checkpoint")}
    now = time.time()
    stale_status = [
        p
        for p in run.path.glob(f".{run.status_path.name}.*.tmp")
        if now - _mtime(p, now) > STALE_STATUS_TMP_SECONDS
    ]
    found = [
        *(p for p in run.checkpoints_dir.glob("*") if p.name not in keep),
        *run.path.glob(f".{run.metrics_path.name}.*.tmp"),
        *run.previews_dir.glob(".*.tmp"),
        *run.path.glob(f".{run.bundle_dir.name}.*.tmp"),
        *stale_status,
    ]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        log.info("%s: removed %d partial files", run.path, len(found))
    return found
