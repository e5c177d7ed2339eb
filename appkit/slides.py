"""The Slides page's state and caches: the slides on offer, opened slides' overviews, the
region a click opens, uploads, and the whole-slide jobs of a slide with their results.

* **Overviews** (metadata, thumbnail, tissue at Otsu's threshold:
  :class:`segcore.analysis.slide_views.SlideOverview`) are kept per process, keyed by the
  file's path, size and modification time, so a changed file is read again.
* **Regions** are analysed through :func:`appkit.state.analysis_for` under a key made of the
  slide's identity and the level-0 box, so a region already opened (by any session) is never
  predicted again, and the explorer's sliders only re-threshold it.
* **The region's widgets** (its x/y number inputs, whether it is open, the clickable
  thumbnail) are keyed per slide here (:func:`region_keys`); a click on the thumbnail moves
  the inputs (:func:`take_click`).
* **Jobs** live on disk (:mod:`segcore.wholeslide.jobs`); the page shows the newest job of
  the slide (:func:`latest_job`) and, once completed, its results (:func:`run_results`).

Paths shown in the browser go through :func:`appkit.access.browser_message`: files in a data
root by their root's name, jobs under ``runs/slides``, uploads by ``uploads``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from appkit import access, state
from segcore.analysis import slide_views
from segcore.analysis.uploads import digest
from segcore.data import roots
from segcore.errors import SlideError

MODE_KEY = "slide_mode"
"""``st.session_state`` key of the page's slide source radio."""
CHOICE_KEY = "slide_choice"
"""``st.session_state`` key of the found-slides selectbox."""
TYPED_KEY = "slide_typed"
"""``st.session_state`` key of the typed slide path."""
UPLOAD_KEY = "slide_upload"
"""``st.session_state`` key of the slide uploader."""
THRESHOLD_KEY = "slide_tissue_{}"
"""``st.session_state`` key of a slide's tissue threshold slider (formatted with its id)."""


@st.cache_data(ttl=30, show_spinner=False)
def _slide_files(data_roots: tuple) -> list[str]:
    from segcore.slides.reader import SLIDE_SUFFIXES

    return roots.find_files(SLIDE_SUFFIXES, data_roots)


def slide_files() -> list[str]:
    """The slide files under the data roots, by their root-qualified names (looked for again
    every 30 s at most)."""
    return _slide_files(access.data_roots())


def slide_id(overview) -> str:
    """A short id of an opened slide (its path, size and time), for widget keys."""
    return digest(repr(overview.identity))[:12]


def overview(path) -> slide_views.SlideOverview:
    """The slide's overview, read once per process and file version.

    Raises:
        SlideError: the file is not a slide, or cannot be read (one line naming it).
    """
    return _overview(slide_views.slide_identity(path))


@st.cache_resource(max_entries=8, show_spinner="Reading the slide's thumbnail…")
def _overview(identity: tuple) -> slide_views.SlideOverview:
    return slide_views.open_overview(identity[0])


def tissue(view: slide_views.SlideOverview, threshold: float | None):
    """The slide's tissue at ``threshold`` (None: Otsu's), kept for the last few thresholds."""
    return _tissue(view.identity, None if threshold is None else round(float(threshold), 4), view)


@st.cache_resource(max_entries=16, show_spinner=False)
def _tissue(identity: tuple, threshold: float | None, _view):
    return _view.tissue_at(threshold)


def save_upload(name: str, data: bytes) -> Path:
    """Writes an uploaded slide to :func:`appkit.access.slide_upload_dir` (named by its content,
    so the same bytes are written once) and returns its path.

    Raises:
        SlideError: the file cannot be written (e.g. the disk is full).
    """
    folder = access.slide_upload_dir()
    path = folder / f"{digest(data)}{Path(name).suffix.lower()}"
    if path.is_file() and path.stat().st_size == len(data):
        return path
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        message = f"{name}: the upload cannot be kept on the server ({exc.strerror})"
        raise SlideError(message) from exc
    return path


@dataclasses.dataclass(frozen=True)
class RegionKeys:
    """The ``st.session_state`` keys of one slide's region widgets.

    Attributes:
        x: the region's left edge (level-0 px) number input.
        y: the region's top edge.
        opened: whether a region is open (set by a click or the Open button).
        click: the clickable thumbnail.
    """

    x: str
    y: str
    opened: str
    click: str


def region_keys(view: slide_views.SlideOverview) -> RegionKeys:
    """The region widgets' keys of this slide."""
    sid = slide_id(view)
    return RegionKeys(f"region_x_{sid}", f"region_y_{sid}", f"region_open_{sid}", f"click_{sid}")


def open_region(keys: RegionKeys) -> None:
    """Opens the region the number inputs give (a button callback)."""
    st.session_state[keys.opened] = True


def take_click(keys: RegionKeys, view: slide_views.SlideOverview) -> None:
    """A click on the thumbnail (the component's value: ``x``, ``y`` and the size it was shown
    at) opens the :data:`~segcore.analysis.slide_views.REGION_SIDE` box around it: moves the
    number inputs there (a callback, so it runs before they are drawn)."""
    click = st.session_state.get(keys.click)
    if not click or "x" not in click:
        return
    x, y = view.to_level0(click["x"], click["y"], click["width"], click["height"])
    box = slide_views.box_around(x, y, view.info.width, view.info.height)
    st.session_state[keys.x], st.session_state[keys.y] = box[0], box[1]
    st.session_state[keys.opened] = True


def region_analysis(
    bundle,
    view: slide_views.SlideOverview,
    box,
    pixel_size: float,
    name: str,
    flips: bool = False,
):
    """The analysis of the level-0 ``box`` of the slide (predicted once per model, slide
    version, box, pixel size and flips: :func:`appkit.state.analysis_for`); ``flips``
    averages the model over the region's mirror images.

    Raises:
        SegcoreError: the region cannot be read or predicted.
    """
    path = view.identity[0]
    key = ("slide", *view.identity, tuple(box))
    return state.analysis_for(
        bundle, key, name, lambda: slide_views.read_region(path, box), pixel_size, flips
    )


def run_config(pixel_size: float | None, tissue_threshold: float | None, flips: bool = False):
    """The :class:`~segcore.wholeslide.config.SlideRunConfig` of a job started from the page:
    the app's runtime, the pixel size the user gave (None: the slide's), the tissue
    threshold (None: Otsu's at the job's resolution) and whether to average test-time
    flips."""
    from appkit import runtime
    from segcore.slides.tissue import TissueConfig
    from segcore.wholeslide.config import SlideRunConfig

    return SlideRunConfig(
        pixel_size=pixel_size,
        runtime=runtime.requested_runtime()[0],
        tissue=TissueConfig(threshold=tissue_threshold),
        flips=flips,
    )


def latest_job(path) -> dict | None:
    """The newest job of the slide at ``path`` (:func:`segcore.wholeslide.jobs.list_slide_jobs`:
    ``job_id``, ``path``, ``state``, ``status``), or None."""
    from segcore.wholeslide import jobs

    target = str(Path(path).resolve())
    return next((job for job in jobs.list_slide_jobs() if job["slide"] == target), None)


def running_job() -> dict | None:
    """The slide job that runs now (any slide), as :func:`latest_job` gives it, or None."""
    from segcore.wholeslide import jobs

    return next((job for job in jobs.list_slide_jobs() if job["state"] == "running"), None)


def progress(status: dict) -> tuple[float, str]:
    """How far a running job is: ``(fraction, text)`` with tiles, nuclei and the ETA."""
    done, total = int(status.get("tiles_done") or 0), int(status.get("tiles_total") or 0)
    eta = status.get("eta_s")
    text = f"{done} of {total or '?'} tiles, {int(status.get('nuclei') or 0):,d} nuclei"
    if eta is not None and done:
        text += f", about {eta:.0f} s left" if eta < 120 else f", about {eta / 60:.1f} min left"
    phase = status.get("phase")
    if phase and not done:
        text = f"{phase}… {text}"
    return (done / total if total else 0.0), text


def run_results(job_path) -> tuple[dict, np.ndarray | None]:
    """A completed job's ``summary.json`` and its density picture (RGBA, or None if absent).

    Raises:
        SlideError: the summary cannot be read.
    """
    folder = Path(job_path)
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise SlideError(f"{folder / 'summary.json'}: cannot be read ({exc})") from exc
    picture = cv2.imread(str(folder / "density.png"), cv2.IMREAD_UNCHANGED)
    if picture is None or picture.ndim != 3 or picture.shape[2] != 4:
        return summary, None
    return summary, cv2.cvtColor(picture, cv2.COLOR_BGRA2RGBA)


RUN_DOWNLOADS = (
    ("Whole-slide GeoJSON (QuPath)", "nuclei.geojson.gz", "application/gzip"),
    ("Whole-slide nuclei CSV", "nuclei.csv", "text/csv"),
    ("Density heat map PNG", "density.png", "image/png"),
    ("Summary JSON", "summary.json", "application/json"),
)
"""``(label, file, mime type)`` of a completed job's downloads."""


def job_file(job_path, name: str):
    """A reader of one of a job's files, for a download button (read only when clicked)."""
    return lambda: (Path(job_path) / name).read_bytes()
