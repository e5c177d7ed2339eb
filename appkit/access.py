"""What a browser user may do: open datasets inside the data roots only, and — on a shared
deployment in viewer mode — look but not change.

* **Data roots.** Every folder typed into the app goes through :mod:`segcore.data.roots`:
  it must lie inside ``samples/``, ``data/`` or a root listed in ``data_roots.toml`` or
  ``SEGCORE_DATA_ROOTS``, and
  the browser is told one generic message otherwise (:func:`browser_source`,
  :func:`start_training`, :func:`appkit.state.open_source_cached`). Messages shown in the
  browser name files relative to their root (:func:`browser_message`).
* **Viewer mode.** With :data:`VIEWER_ENV` (``SEGCORE_VIEWER``) set to ``1`` (or ``true``,
  ``yes``, ``on``) when the server starts, browser users cannot start or stop a training, pull
  a bundle from the Hub or switch the active model: :func:`viewer_mode` is the one switch the
  pages read, and :func:`require_editor` refuses those actions in the functions that do them.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os

from segcore.data import roots, samples
from segcore.errors import SegcoreError

VIEWER_ENV = "SEGCORE_VIEWER"
"""Environment variable that turns on viewer mode (``1``, ``true``, ``yes`` or ``on``)."""

VIEWER_NOTE = (
    "This is a shared deployment in viewer mode: training, pulling from the Hub and switching "
    "the active model are turned off here. Whoever runs the server can do them."
)
"""What the Train and Models pages say in viewer mode."""


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


def browser_message(exc: BaseException) -> str:
    """``exc``'s message with the data roots' absolute paths replaced by their names."""
    return roots.relativise(str(exc), data_roots())


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
