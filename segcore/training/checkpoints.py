"""Resume checkpoints of a run: ``checkpoints/epoch-NNN.keras`` and ``checkpoints/state.json``.

A checkpoint is the compiled model *with* its optimizer state (unlike a bundle). It is written
through a temporary file, then ``metrics.csv``, then ``state.json`` pointing at it — last, so a
process killed at any moment leaves either the previous complete checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from segcore.atomic import write_json_atomic
from segcore.timestamps import utc_now
from segcore.training.runs import RunDir

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
    """Saves a compiled model (with optimizer state) to ``path`` via a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_checkpoint(
    run: RunDir, model, *, epoch: int, best: dict | None, history: list[dict], stopped_at=None
) -> None:
    """Checkpoint after ``epoch`` completed epochs (``stopped_at``: the batch of a stop).

    Writes the model, ``metrics.csv`` and finally ``state.json``; then deletes the checkpoint
    the previous ``state.json`` pointed at.
    """
    name = f"epoch-{epoch:03d}" + (f"-stop{stopped_at}" if stopped_at is not None else "")
    path = run.checkpoints_dir / f"{name}.keras"
    save_model_atomic(model, path)
    run.write_metrics(history)
    previous = checkpoint_state(run)
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
    if previous and previous.get("checkpoint") not in (None, path.name):
        (run.checkpoints_dir / previous["checkpoint"]).unlink(missing_ok=True)
