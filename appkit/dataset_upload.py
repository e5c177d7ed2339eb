"""The Train page's "Add a dataset folder from a zip": a browser user without shell access
uploads a zip of images and masks and gets a dataset folder to train on.

* **Where it lands.** In the ``uploads/`` folder of the data root named ``data`` — the
  repository's ``data/``, so ``data/uploads/<name>`` (:func:`upload_folder`; created on first
  use). ``uploads/`` keeps browser uploads apart from the datasets whoever runs the server puts
  in ``data/`` (and from ``data/synthetic``). :data:`UPLOAD_ROOT_ENV` (``SEGCORE_UPLOAD_ROOT``)
  may name another data root instead (one of ``data_roots.toml`` or ``SEGCORE_DATA_ROOTS``, e.g.
  on a larger disk); a name that is no root turns uploads off with a message. Because the folder
  lies inside a data root, the Train page opens it like any other.
* **What is checked** is :func:`segcore.data.zip_import.import_dataset_zip`'s: size limits
  before anything is written, safe names, a dataset that opens; a folder that exists is never
  overwritten. Viewer mode refuses the action (:func:`appkit.access.require_editor`) and the
  section shows a note instead of the uploader.
* **Afterwards** the folder's root-qualified name (``data/uploads/my-set``) is shown and put into
  the Train page's dataset boxes (their ``st.session_state`` keys, :func:`dataset_keys`), which
  :func:`render` can do because the page draws this section above its form.

:func:`render` holds the Streamlit calls; :func:`add_folder` is the action without them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import streamlit as st

from appkit import access, training
from segcore.data import roots
from segcore.data.zip_import import MAX_ZIP_BYTES, ImportedDataset, MiB, import_dataset_zip
from segcore.errors import DatasetError, SegcoreError

UPLOAD_ROOT_ENV = "SEGCORE_UPLOAD_ROOT"
"""Environment variable naming the data root uploads go into, instead of ``data``."""

DEFAULT_UPLOAD_ROOT = "data"
"""The data root uploads go into by default: the repository's ``data/``."""

UPLOADS_FOLDER = "uploads"
"""The folder of the upload root that holds the uploaded datasets."""

SECTION_KEY = "dataset_upload_open"
"""``st.session_state`` key of the page's expander (open or not), for its lazy content."""
FILE_KEY = "dataset_upload_zip"
"""``st.session_state`` key of the zip uploader."""
NAME_KEY = "dataset_upload_name"
"""``st.session_state`` key of the folder-name box."""
BUTTON_KEY = "dataset_upload_add"
"""``st.session_state`` key of the "Add folder" button."""
RESULT_KEY = "dataset_upload_result"
"""``st.session_state`` key of the last outcome: ``("success" | "error", text)``."""

VIEWER_NOTE = (
    "Adding dataset folders is turned off on this shared deployment (viewer mode). Whoever runs "
    "the server can add folders to the data roots."
)
"""What the section says in viewer mode."""


def dataset_keys() -> list[str]:
    """The ``st.session_state`` keys of the Train page's dataset boxes, one per preset (the
    page's ``train_data_<preset id>``)."""
    return [f"train_data_{preset_id}" for preset_id in training.PRESET_IDS.values()]


def upload_folder() -> Path:
    """Where uploaded datasets go: ``<root>/uploads`` of the data root named by
    :data:`UPLOAD_ROOT_ENV`, defaults to ``data`` (the repository's ``data/``).

    Raises:
        DatasetError: the variable names no data root (uploads are off).
    """
    wanted = os.environ.get(UPLOAD_ROOT_ENV, "").strip() or DEFAULT_UPLOAD_ROOT
    for root in access.data_roots():
        if root.name == wanted:
            return root.path / UPLOADS_FOLDER
    raise DatasetError(
        f"Adding dataset folders is off on this server: {UPLOAD_ROOT_ENV} names {wanted!r}, "
        f"which is not one of the data roots ({roots.describe_roots(access.data_roots())})."
    )


def add_folder(
    data: bytes | BinaryIO, name: str, *, zip_name: str | None = None
) -> tuple[ImportedDataset, str]:
    """Makes the dataset folder ``name`` in :func:`upload_folder` from an uploaded zip.

    Args:
        data: the zip (an upload or its bytes).
        name: the new folder's name, as typed.
        zip_name: how messages name the zip, defaults to the upload's name.

    Returns:
        The new dataset and its root-qualified name (``data/uploads/my-set``).

    Raises:
        ViewerModeError: viewer mode is on.
        DatasetError: uploads are off, or the zip is refused
            (:func:`~segcore.data.zip_import.import_dataset_zip`).
    """
    access.require_editor("Adding a dataset folder")
    if not str(name).strip():
        raise DatasetError("Type a name for the new folder, e.g. my-dataset.")
    imported = import_dataset_zip(data, name, upload_folder(), zip_name=zip_name)
    return imported, roots.browser_name(imported.folder, access.data_roots())


def summary(imported: ImportedDataset, name: str) -> str:
    """The success message: the folder's name to type, what it holds, and what was skipped."""
    sizes = " / ".join(str(imported.sizes.get(s, 0)) for s in ("train", "val", "test"))
    lines = [
        f"Added **{name}**: {imported.images} images and {imported.masks} masks "
        f"({imported.layout} layout; train / val / test {sizes}). It is now in the Dataset box "
        f"below; elsewhere, type `{name}`."
    ]
    if imported.stripped:
        lines.append(f"The zip's top folder `{imported.stripped}/` was unpacked as the dataset.")
    if imported.skipped:
        lines.append(f"Skipped {imported.skipped} entries (`__MACOSX/`, hidden files).")
    lines += [f"Warning: {access.browser_message(w)}" for w in imported.warnings]
    return "\n\n".join(lines)


def render() -> None:
    """The section: the zip uploader, the folder name, "Add folder" and the outcome; in viewer
    mode a note only. Draw it above the Train page's form (it fills the form's dataset box)."""
    if access.viewer_mode():
        st.info(VIEWER_NOTE, icon=":material/visibility:")
        return
    st.caption(
        "A zip of `images/` and `masks/` folders (or `train/`, `val/`, `test/` folders holding "
        "them; one top folder around them is fine). A mask is a PNG label image with the image's "
        "name, or QuPath GeoJSON `masks/<name>.geojson`. Up to "
        f"{MAX_ZIP_BYTES // MiB} MB; it becomes a new folder in the data root's `uploads/`, "
        "checked before it appears."
    )
    upload = st.file_uploader(
        "Zip of images and masks", type="zip", key=FILE_KEY, max_upload_size=MAX_ZIP_BYTES // MiB
    )
    name = st.text_input(
        "Folder name",
        key=NAME_KEY,
        max_chars=64,
        placeholder="my-dataset",
        help="Letters, digits, '.', '_' and '-'; a folder that exists is not overwritten.",
    )
    if st.button("Add folder", key=BUTTON_KEY, disabled=upload is None):
        try:
            with st.spinner("Unpacking and checking the zip…"):
                imported, browser = add_folder(upload, name, zip_name=upload.name)
        except SegcoreError as exc:
            st.session_state[RESULT_KEY] = ("error", access.browser_message(exc))
        else:
            for key in dataset_keys():
                st.session_state[key] = browser
            st.session_state[RESULT_KEY] = ("success", summary(imported, browser))
    outcome = st.session_state.get(RESULT_KEY)
    if outcome:
        kind, text = outcome
        if kind == "success":
            st.success(text, icon=":material/check_circle:")
        else:
            st.error(f"Not added: {text}", icon=":material/error:")
