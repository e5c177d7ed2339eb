"""The Slides page's batch section: many slides and images of the data roots segmented in the
background on this machine (``python -m segcore batch`` as a job, :mod:`segcore.batch.jobs`).

* **Picking**: the slides and images under the data roots, by their root-qualified names
  (listed again every 30 s at most); each pick is resolved inside the roots again
  (:func:`segcore.data.roots.resolve_file`) when the batch starts, so nothing outside them
  is ever read.
* **Starting and stopping** are refused in viewer mode (:func:`appkit.access.require_editor`);
  the batch runs with the active model and the app's runtime, one worker with all the cores,
  once no slide job runs (they share one lock).
* **Following**: the newest batch's state and progress (inputs and slide regions done),
  redrawn every 2 s while it is active; once it ends, its ``batch.csv`` as a table (status and
  reason per input) and each input's files to download.

Paths shown in the browser go through :func:`appkit.access.browser_message`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from appkit import access, state, widgets
from segcore.data import roots
from segcore.errors import SegcoreError
from segcore.training.runs import ACTIVE_STATES

TITLE = "Segment many slides (batch)"
"""The expander's label."""
PICK_KEY = "batch_inputs"
"""``st.session_state`` key of the inputs multiselect."""
STARTED_KEY = "batch_started"
"""``st.session_state`` key: a batch was started or run again from this session (poll it)."""
FILES_KEY = "batch_files_of"
"""``st.session_state`` key of the input whose files are offered for download."""
TABLE_COLUMNS = {
    "input": "Input",
    "kind": "Kind",
    "status": "Status",
    "nuclei": "Nuclei",
    "tissue_mm2": "Tissue (mm²)",
    "density_per_mm2": "Density (/mm²)",
    "seconds": "Seconds",
    "error": "Reason",
}
"""The summary table's columns (``batch.csv``'s) and their headings."""


def _suffixes() -> tuple[str, ...]:
    from segcore.data.images import IMAGE_SUFFIXES
    from segcore.slides.reader import SLIDE_SUFFIXES

    return tuple(dict.fromkeys(s.lower() for s in (*SLIDE_SUFFIXES, *IMAGE_SUFFIXES)))


@st.cache_data(ttl=30, show_spinner=False)
def _batch_files(data_roots: tuple) -> list[str]:
    return roots.find_files(_suffixes(), data_roots)


def batch_files() -> list[str]:
    """The slides and images under the data roots, by their root-qualified names."""
    return _batch_files(access.data_roots())


def start(names: list[str]):
    """Starts a batch of the picked files (root-qualified names) with the active model.

    Returns:
        The job's :class:`~segcore.batch.jobs.BatchJobDir`.

    Raises:
        ViewerModeError: viewer mode is on.
        DatasetError: a name is not a file inside the data roots (the one refusal for files).
        SegcoreError: the batch cannot start (Ray missing, another batch active, ...).
    """
    from appkit import runtime
    from segcore.batch import jobs

    access.require_editor("Segmenting many slides")
    files = [roots.resolve_file(name, access.data_roots(), _suffixes()) for name in names]
    return jobs.start_batch_job(
        files, model_ref=state.active_ref(), runtime=runtime.requested_runtime()[0]
    )


def stop(job_path) -> None:
    """Asks a batch to stop (refused in viewer mode)."""
    from segcore.batch import jobs

    access.require_editor("Stopping a batch")
    jobs.stop_batch_job(job_path)


def run_again(job_path) -> None:
    """Runs a stopped or failed batch again (refused in viewer mode)."""
    from segcore.batch import jobs

    access.require_editor("Running a batch again")
    jobs.resume_batch_job(job_path)


def latest_batch() -> dict | None:
    """The newest batch job (:func:`segcore.batch.jobs.list_batch_jobs`), or None."""
    from segcore.batch import jobs

    return next(iter(jobs.list_batch_jobs()), None)


def summary_table(rows: list[dict]) -> list[dict]:
    """``batch.csv``'s rows as the table shows them: inputs and reasons without server
    paths."""
    return [
        {
            heading: access.browser_message(row.get(column) or "")
            if column in ("input", "error")
            else row.get(column) or ""
            for column, heading in TABLE_COLUMNS.items()
        }
        for row in rows
    ]


def batch_section() -> None:
    """The expander: pick, start, follow (see the module docstring)."""
    newest = latest_batch()
    active = newest is not None and newest["state"] in ACTIVE_STATES
    with st.expander(TITLE, expanded=active):
        st.caption(
            "Segments several slides and images of the data roots in one background run on "
            "this machine (a local Ray, one worker with all the cores), with the active model; "
            "one at a time, after any whole-slide job. Each input's files and a summary table "
            "appear here."
        )
        if access.viewer_mode():
            st.info(access.VIEWER_NOTE, icon=":material/visibility:")
        else:
            _start_form(active)
            active = active or bool(st.session_state.get(STARTED_KEY))
        st.fragment(_panel, run_every=2 if active else None)(active)


def _start_form(active: bool) -> None:
    found = batch_files()
    picked = st.multiselect(
        f"Slides and images under {roots.describe_roots(access.data_roots())}",
        found,
        key=PICK_KEY,
        placeholder="Choose slides and images" if found else "No slides or images found",
    )
    if not st.button(
        "Start the batch", disabled=active or not picked, key="batch_start", type="primary"
    ):
        return
    try:
        job = start(list(picked))
    except SegcoreError as exc:
        widgets.show_error(exc, "Not started")
        return
    st.session_state[STARTED_KEY] = True
    st.toast(f"Started {job.job_id}: it runs in the background.")


def _panel(polling: bool) -> None:
    """The newest batch: queued, running (progress, Stop), ended (table, downloads)."""
    from segcore.batch import jobs

    job = latest_batch()
    if job is None:
        return
    status, name = job["status"], job["state"]
    if polling and name not in ACTIVE_STATES:
        st.session_state.pop(STARTED_KEY, None)
        st.rerun()  # the batch ended: draw the page again, without polling
    st.markdown(f"**{job['job_id']}** — {name} ({len(job['inputs'])} inputs)")
    fraction, text = jobs.progress_text(status)
    if name == "queued":
        ahead = status.get("waiting_for")
        st.info(f"Queued: waiting for {ahead}." if ahead else "Queued.")
    elif name == "running":
        st.progress(fraction, text=text)
    elif name == "failed":
        reason = access.browser_message(status.get("reason") or "no reason given")
        st.error(f"Failed: {reason}")
    elif name == "stopped":
        st.warning(f"Stopped: {text}; finished inputs are kept and skipped if run again.")
    elif status.get("failed"):
        st.warning(f"Completed: {status['failed']} of {status.get('inputs_total')} inputs failed.")
    if not access.viewer_mode() and name != "unreadable":
        _buttons(job)
    if name not in ACTIVE_STATES:
        _results(job)


def _buttons(job: dict) -> None:
    """Stop for an active batch, Run again for a stopped or failed one."""
    active = job["state"] in ACTIVE_STATES
    if active:
        label, action = "Stop the batch", stop
    elif job["state"] in ("stopped", "failed"):
        label, action = "Run the batch again", run_again
    else:
        return
    if not st.button(label, key=f"batch_{'stop' if active else 'again'}_{job['job_id']}"):
        return
    try:
        action(job["path"])
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot do it")
        return
    if active:
        st.toast("Stop requested: the batch stops after the tasks in flight.")
    else:
        st.session_state[STARTED_KEY] = True
        st.rerun()


def _results(job: dict) -> None:
    """The summary table, its CSV and each input's files."""
    from segcore.batch import jobs
    from segcore.batch.engine import CSV_FILE

    try:
        rows = jobs.read_summary(job["path"])
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot read the summary")
        return
    if rows is None:
        return
    st.dataframe(summary_table(rows), hide_index=True)
    csv_path = Path(job["path"]) / jobs.OUTPUTS_DIR / CSV_FILE
    st.download_button(
        "Summary CSV",
        lambda: csv_path.read_bytes(),
        file_name=f"{job['job_id']}.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"batch_csv_{job['job_id']}",
    )
    done = {
        access.browser_message(r["input"]): r for r in rows if jobs.output_files(job["path"], r)
    }
    if not done:
        return
    choice = st.selectbox("Files of", list(done), key=f"{FILES_KEY}_{job['job_id']}")
    folder = done[choice]["output"]
    cells = st.columns(3)
    for index, path in enumerate(jobs.output_files(job["path"], done[choice])):
        name = path.name if path.name.startswith(folder) else f"{folder}_{path.name}"
        cells[index % 3].download_button(
            path.name,
            lambda path=path: path.read_bytes(),
            file_name=name,
            on_click="ignore",
            key=f"batch_file_{job['job_id']}_{folder}_{path.name}",
        )
