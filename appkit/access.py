"""What a browser user may do: open datasets inside the data roots only, and — on a shared
deployment in viewer mode — look but not change.

* **Data roots.** Every folder typed into the app goes through :mod:`segcore.data.roots`:
  it must lie inside ``samples/``, ``data/`` or a root listed in ``data_roots.toml`` or
  ``SEGCORE_DATA_ROOTS``, and
  the browser is told one generic message otherwise (:func:`browser_source`,
  :func:`start_training`, :func:`appkit.state.open_source_cached`). Messages shown in the
  browser name files relative to their root (:func:`browser_message`).
* **Slides.** A slide is opened from inside the data roots only (:func:`browser_slide`, the
  rules of folders for a file), or uploaded: then it is written to :func:`slide_upload_dir`, a
  folder of the server's temporary directory, never into the repository.
* **Viewer mode.** With :data:`VIEWER_ENV` (``SEGCORE_VIEWER``) set to ``1`` (or ``true``,
  ``yes``, ``on``) when the server starts, browser users cannot start or stop a training or a
  whole-slide job, pull a bundle from the Hub or switch the active model: :func:`viewer_mode`
  is the one switch the pages read, and :func:`require_editor` refuses those actions in the
  functions that do them.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path

from segcore.data import roots, samples
from segcore.errors import SegcoreError

VIEWER_ENV = "SEGCORE_VIEWER"
"""Environment variable that turns on viewer mode (``1``, ``true``, ``yes`` or ``on``)."""

VIEWER_NOTE = (
    "This is a shared deployment in viewer mode: training, pulling from the Hub, switching "
    "the active model and segmenting whole slides are turned off here. Whoever runs the server "
    "can do them."
)
"""What the Train and Models pages say in viewer mode."""


_PATH_END = r"(?=$|[\s:;,'\")\]])"  # where a folder's name ends in a message


class ViewerModeError(SegcoreError):
    """An action that changes the server was asked for in viewer mode."""


def viewer_mode() -> bool:
    """Whether the app runs in viewer mode (:data:`VIEWER_ENV`; read on every call)."""
    return os.environ.get(VIEWER_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def require_editor(action: str) -> None:
    """Refuses ``action`` (e.g. ``"Training"``) in viewer mode.

    Raises:
        ViewerModeError: viewer mode is on.
    """
    if viewer_mode():
        raise ViewerModeError(f"{action} is turned off on this shared deployment (viewer mode).")


def data_roots() -> tuple[roots.DataRoot, ...]:
    """The data roots browser users may open (:func:`segcore.data.roots.data_roots`)."""
    return roots.data_roots()


def folder_help() -> str:
    """The help text of a dataset-folder box: where folders may be and how to name them."""
    return (
        f"A folder inside one of the data roots — {roots.describe_roots(data_roots())} — "
        "typed relative to the root, e.g. data/my-dataset. The roots are the repository's "
        "samples/ and data/ and those whoever runs the server lists in data_roots.toml or "
        "SEGCORE_DATA_ROOTS; no "
        "other folder of the server can be opened from the browser. Layouts: images/ + masks/, "
        "train/ (val/, test/) folders of that layout, or a PanNuke fold."
    )


def browser_source(text: str) -> str:
    """The sample source a browser user chose by typing ``text`` into the folder box
    (:func:`segcore.data.samples.browser_source`; ``data/my-set``, ``samples``, ``synthetic``).

    Raises:
        DatasetError: the generic refusal, for any folder outside the data roots (or missing).
    """
    return samples.browser_source(text, data_roots())


def browser_message(exc: BaseException | str) -> str:
    """``exc``'s message (or a text) with server paths replaced by names a browser may see: the
    data roots' by their names, uploaded slides' folder by ``uploads``, the runs folder by
    ``runs`` and the repository's by nothing (paths inside it read relative to it)."""
    from segcore.paths import REPO_ROOT
    from segcore.training.runs import default_runs_dir

    text = roots.relativise(str(exc), data_roots())
    for folder, name in (
        (slide_upload_dir(), "uploads"),
        (default_runs_dir().resolve(), "runs"),
        (REPO_ROOT, ""),
    ):
        text = text.replace(f"{folder}{os.sep}", f"{name}/" if name else "")
        text = re.sub(re.escape(str(folder)) + _PATH_END, name or ".", text)
    return text


def start_training(config):
    """Starts a training from the Train page, after checking what a browser may do.

    The config's ``data`` (what the user typed: ``synthetic``, ``samples`` or a folder inside a
    data root) is replaced by the real folder before the job starts, so the trainer never sees a
    path from the browser.

    Args:
        config: the :class:`~segcore.training.config.TrainConfig` built from the form.

    Returns:
        The new run's :class:`~segcore.training.runs.RunDir`
        (:func:`segcore.training.jobs.start_training`).

    Raises:
        ViewerModeError: viewer mode is on.
        DatasetError: the generic refusal, for a folder outside the data roots (or missing).
        TrainingBusyError: another training holds the device.
    """
    from segcore.training import jobs

    require_editor("Training")
    folder = samples.source_folder(config.data.strip() or samples.SYNTHETIC, data_roots())
    data = samples.SYNTHETIC if folder is None else str(folder)
    return jobs.start_training(dataclasses.replace(config, data=data).to_dict())


def stop_training(run_path) -> None:
    """Asks a run to stop from the Train page (:func:`segcore.training.jobs.stop_training`).

    Raises:
        ViewerModeError: viewer mode is on.
    """
    from segcore.training import jobs

    require_editor("Stopping a training")
    jobs.stop_training(run_path)


SLIDE_UPLOAD_DIR_NAME = "segcore-slide-uploads"
"""The folder of uploaded slides inside the server's temporary directory."""


def slide_upload_dir() -> Path:
    """Where uploaded slides are written (``$TMPDIR/segcore-slide-uploads``): outside the
    repository, and the only folder besides the data roots a slide job may read."""
    return Path(tempfile.gettempdir()).resolve() / SLIDE_UPLOAD_DIR_NAME


def browser_slide(text: str) -> Path:
    """The slide file a browser user means by ``text``: inside a data root, with a slide suffix
    (:func:`segcore.data.roots.resolve_file`).

    Raises:
        DatasetError: the one refusal for files, for anything else (outside the roots, missing,
            a folder, another suffix).
    """
    from segcore.slides.reader import SLIDE_SUFFIXES

    return roots.resolve_file(text, data_roots(), SLIDE_SUFFIXES)


def slide_name(path) -> str:
    """How the browser names a slide: root-qualified inside a data root (``data/a.svs``), its
    file name when uploaded."""
    try:
        return roots.browser_name(Path(path), data_roots())
    except SegcoreError:
        return Path(path).name


def _allowed_slide(path) -> Path:
    """``path`` resolved, if a browser may have a job read it (inside a root or uploaded)."""
    real = Path(path).resolve()
    if real.is_relative_to(slide_upload_dir()) and real.is_file():
        return real
    return browser_slide(str(real))


def start_slide_job(path, *, model_ref: str, config):
    """Starts segmenting a whole slide from the Slides page, after checking what a browser may
    do (:func:`segcore.wholeslide.jobs.start_slide_job`).

    Args:
        path: the slide, as the page opened it (inside a data root, or an upload).
        model_ref: the bundle to segment with (the active model's ref).
        config: the :class:`~segcore.wholeslide.config.SlideRunConfig`.

    Returns:
        The job's :class:`~segcore.wholeslide.jobs.JobDir` (queued when another job runs).

    Raises:
        ViewerModeError: viewer mode is on.
        DatasetError: the slide is outside the data roots (the one refusal for files).
        SegcoreError: the job cannot be created (a bad config, an unwritable runs folder).
    """
    from segcore.wholeslide import jobs

    require_editor("Segmenting a whole slide")
    slide = _allowed_slide(path)
    return jobs.start_slide_job(slide, model_ref=model_ref, config=config.to_dict())


def stop_slide_job(job_path) -> None:
    """Asks a whole-slide job to stop (:func:`segcore.wholeslide.jobs.stop_slide_job`).

    Raises:
        ViewerModeError: viewer mode is on.
    """
    from segcore.wholeslide import jobs

    require_editor("Stopping a whole-slide job")
    jobs.stop_slide_job(job_path)


def resume_slide_job(job_path):
    """Queues a stopped or failed whole-slide job again; it continues from its finished chunks
    (:func:`segcore.wholeslide.jobs.resume_slide_job`).

    Raises:
        ViewerModeError: viewer mode is on.
        RunError: the job is active or completed, or its folder holds no job.
    """
    from segcore.wholeslide import jobs

    require_editor("Resuming a whole-slide job")
    return jobs.resume_slide_job(job_path)
