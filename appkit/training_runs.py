"""The Train page's runs: which one the page shows, when the page must redraw, and how a run's
status reads.

* **Which run** (:func:`shown_run`): the running one, else the one this session watches, else
  the most recently updated run in the runs folder — so a second browser sees the last result.
* **Redrawing** (:func:`remember_run_state`, :func:`run_state_changed`): the page records the
  runs' states when it is drawn; its live part, refreshed every 2 s, compares, and the page
  reruns as a whole when a run started, changed state or ended, so the Start button, the Runs
  list and "Use this model" follow the run without a reload.
* **Reading a status** (:func:`progress`, :func:`outcome`, :func:`run_figure`,
  :func:`chart_rows`): one validation Dice per run under one name — *validation Dice*, on the
  full-size validation images at the bundle's threshold, once completed — and the per-epoch
  figures under names of their own (*tile Dice*, *sources Dice*). A stopped run reads as one
  sentence (:func:`stopped_text`).
* **Before and after** (:func:`comparison_rows`): a fine-tuning's starting model and new model
  on the run's validation images, as a table.
"""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from appkit import access
from segcore.training import jobs
from segcore.training.runs import ACTIVE_STATES, RunDir, RunError, list_runs, progress_of

WATCHED_KEY = "watched_run"
"""``st.session_state`` key of the run this session watches (its folder)."""
SIGNATURE_KEY = "train_run_signature"
"""``st.session_state`` key of the runs' states when the page was last drawn."""


def watch(path) -> None:
    """Makes this session watch the run in ``path``."""
    st.session_state[WATCHED_KEY] = str(path)


def _state_of(run: RunDir) -> str | None:
    try:
        return run.read_status().get("state")
    except RunError:
        return "unreadable"


def _updated(run: RunDir) -> float:
    try:
        return run.status_path.stat().st_mtime
    except OSError:
        return 0.0


def latest_run(runs_dir=None) -> RunDir | None:
    """The run in ``runs_dir`` whose status was written last (None when there is none)."""
    runs = list_runs(runs_dir)
    return max(runs, key=_updated) if runs else None


def shown_run(runs_dir=None) -> tuple[RunDir | None, str]:
    """The run the page shows and why: ``"running"`` (the job holding the device),
    ``"watched"`` (this session's) or ``"latest"`` (the last updated; e.g. a new browser)."""
    job = jobs.running_job(runs_dir)
    if job is not None and job.exists():
        return job, "running"
    watched = st.session_state.get(WATCHED_KEY)
    if watched and RunDir(watched).exists():
        return RunDir(watched), "watched"
    return latest_run(runs_dir), "latest"


def busy_note(job: RunDir | None) -> str | None:
    """Why Start is off while ``job`` (:func:`segcore.training.jobs.running_job`) holds the
    device, or None when it is free."""
    if job is None:
        return None
    where = "" if job.exists() else " (its run folder is not in this runs folder)"
    return f"Training {job.run_id}{where} is using the device: Start comes back when it ends."


def run_signature(runs_dir=None) -> tuple:
    """What the page's non-live parts depend on: the running job and every run's state."""
    job = jobs.running_job(runs_dir)
    states = tuple((run.run_id, _state_of(run)) for run in list_runs(runs_dir))
    return (job.run_id if job is not None else None, states)


def remember_run_state() -> None:
    """Records :func:`run_signature` as drawn (call once per full run of the page)."""
    st.session_state[SIGNATURE_KEY] = run_signature()


def run_state_changed() -> bool:
    """Whether a run started, changed state or ended since the page was drawn (then the page
    should rerun as a whole: ``st.rerun()``)."""
    return st.session_state.get(SIGNATURE_KEY) != run_signature()


# --- reading a status -------------------------------------------------------------------------
def read_status(run: RunDir) -> dict[str, Any]:
    """The run's status; an unreadable one as state ``unreadable`` with the reason."""
    try:
        return run.read_status()
    except RunError as exc:
        return {"state": "unreadable", "reason": access.browser_message(exc)}


def headline(run: RunDir, status: dict[str, Any]) -> str:
    """``**run-…** — running on CPU``."""
    device = status.get("device")
    where = f" on {device}" if device else ""
    return f"**{run.run_id}** — {status.get('state') or 'unknown'}{where}"


def progress(status: dict[str, Any]) -> tuple[float, str]:
    """An active run's progress bar: ``(fraction, text)``, saying when it scores validation
    images or sources (status ``phase``) rather than training."""
    fraction, text = progress_of(status)
    phase = status.get("phase")
    if status.get("state") == "queued":
        return 0.0, "queued: waiting for the training process to start"
    if not phase:
        return fraction, text
    epoch, epochs = int(status.get("epoch") or 0), int(status.get("epochs") or 0)
    if epochs and epoch >= epochs:
        return 1.0, f"all {epochs} epochs trained — now {phase}…"
    return fraction, f"epoch {epoch + 1} of {epochs or '?'} trained — now {phase}…"


_STOP_REASON = re.compile(r"stopped in epoch (\d+) after batch (\d+)")


def _epochs_done(done: int) -> str:
    if done == 0:
        return "no epoch completed yet"
    return f"{done} epoch{'s' if done != 1 else ''} completed"


def stopped_text(status: dict[str, Any]) -> str:
    """A stopped run in one sentence, e.g. ``"Stopped on request in epoch 1 of 8, after batch
    1 of 75; no epoch completed yet."`` (status ``epoch`` counts completed epochs; the
    trainer's reason says where it stopped)."""
    done, planned = int(status.get("epoch") or 0), status.get("epochs")
    of = f" of {planned}" if planned else ""
    reason = str(status.get("reason") or "").strip()
    match = _STOP_REASON.search(reason)
    if match:
        steps = status.get("steps_per_epoch")
        batch = f"{match[2]} of {steps}" if steps else match[2]
        where = f"Stopped on request in epoch {match[1]}{of}, after batch {batch}"
    elif reason.lower().startswith("stop"):
        where = "Stopped on request"
    elif reason:
        where = f"Stopped ({reason})"
    else:
        where = "Stopped"
    return f"{where}; {_epochs_done(done)}."


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def validation_dice_text(status: dict[str, Any]) -> str | None:
    """``"validation Dice 0.453 at threshold 0.65"`` of a completed run, or None."""
    dice, threshold = _number(status.get("val_dice")), _number(status.get("threshold"))
    if dice is None:
        return None
    at = f" at threshold {threshold:.2f}" if threshold is not None else ""
    return f"validation Dice {dice:.3f}{at}"


def outcome(status: dict[str, Any]) -> tuple[str, str] | None:
    """How an ended run reads: ``(kind, text)`` with kind ``success``, ``warning`` or
    ``error``; None for an active run."""
    state = status.get("state")
    if state == "completed":
        figure = validation_dice_text(status)
        if figure is None:
            return "success", "Completed."
        return "success", (
            f"Completed: {figure} — on the full-size validation images, the figure in the "
            "model's card."
        )
    if state == "stopped":
        hint = access.browser_message(str(status.get("hint") or "")).strip()
        tail = f"\n\n{hint[:1].upper()}{hint[1:]}" if hint else ""
        return "warning", stopped_text(status) + tail
    if state in ("failed", "unreadable"):
        reason = access.browser_message(f"{status.get('reason')}\n\n{status.get('hint') or ''}")
        return "error", f"Failed: {reason.strip()}"
    return None


def comparison_columns() -> dict[str, Any]:
    """``st.dataframe`` column settings of :func:`comparison_rows`: fixed decimals."""
    number = st.column_config.NumberColumn
    return {
        "threshold": number("Threshold", format="%.2f"),
        "pooled Dice": number("Pooled Dice", format="%.3f"),
        "PQ": number("PQ", format="%.3f"),
    }


def comparison_rows(comparison: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """A fine-tuning's before/after (:func:`segcore.training.comparison.compare_models`, in the
    status and the card) as table rows — the starting model, the new one and the change —
    or None when there is none."""
    if not isinstance(comparison, dict):
        return None
    before, after = comparison.get("before"), comparison.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None

    def row(label: str, figures: dict[str, Any]) -> dict[str, Any]:
        return {
            "": label,
            "model": figures.get("model", ""),
            "threshold": _number(figures.get("threshold")),
            "pooled Dice": _number(figures.get("dice")),
            "PQ": _number(figures.get("pq")),
        }

    rows = [row("before", before), row("after", after)]
    change = {"": "change", "model": "", "threshold": None}
    for column in ("pooled Dice", "PQ"):
        a, b = rows[1][column], rows[0][column]
        change[column] = None if a is None or b is None else round(a - b, 4)
    return [*rows, change]


def comparison_caption(comparison: dict[str, Any]) -> str:
    """What the before/after table was measured on."""
    images = comparison.get("images")
    split = comparison.get("split", "val")
    return (
        f"The starting model and the new one on this run's {images} {split} images (never "
        "trained on), each at its own threshold, nuclei made the same way."
    )


def run_figure(job: dict[str, Any]) -> str:
    """The one Dice the Runs list shows for a job (:func:`segcore.training.jobs.list_jobs`):
    the validation Dice once completed (as the banner), else the best per-epoch figure under
    its own name."""
    status = job.get("status") or {}
    if job.get("state") == "completed":
        text = validation_dice_text(status)
        if text is not None:
            return text
    best = status.get("best") or {}
    score = _number(best.get("val_dice"))
    if score is None:
        return "—"
    name = "sources Dice" if best.get("metric") == "val_sources_dice" else "tile Dice"
    return f"best {name} {score:.3f} (epoch {best.get('epoch')})"


def chart_rows(rows: list[dict], image_size: int | None = None) -> tuple[list[dict], list[str]]:
    """``metrics.csv`` rows with the Dice columns named for the chart, and those names.

    The per-epoch figures are not the run's validation Dice: ``val_pooled_dice`` is the pooled
    Dice on validation *tiles* at 0.5 (*val tile Dice*), ``val_sources_dice`` the source rule's
    Dice at the sources' threshold (*sources Dice*), ``dice_coef`` the soft Dice of the
    training batches."""
    size = f"{image_size}² " if image_size else ""
    names = {
        "dice_coef": "train soft Dice",
        "val_dice_coef": "val soft Dice",
        "val_pooled_dice": f"val tile Dice ({size}tiles at 0.5)",
        "val_sources_dice": "sources Dice (at their threshold)",
    }
    renamed = [{names.get(key, key): value for key, value in row.items()} for row in rows]
    return renamed, list(names.values())


def is_active(status: dict[str, Any]) -> bool:
    """Whether the status is of a queued or running run."""
    return status.get("state") in ACTIVE_STATES


def image_size_of(run: RunDir) -> int | None:
    """The run's crop side (its config), or None."""
    try:
        return int(run.read_config().get("image_size") or 0) or None
    except (RunError, ValueError, TypeError, AttributeError):
        return None
