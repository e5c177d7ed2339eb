"""Slides: a whole-slide image from a data root (or a small upload) — its metadata, thumbnail
and tissue; a click opens a 1000² region at full resolution in the same explorer as Predict;
"Segment the whole slide" runs a background job whose density heat map, counts and downloads
appear here when it is done.

UI only: the overview and regions come from ``appkit.slides`` (on ``segcore.analysis.
slide_views``), the region is analysed once through ``appkit.state.analysis_for`` and explored
by ``appkit.explorer``; jobs are ``segcore.wholeslide.jobs`` processes started and stopped
through ``appkit.access`` (refused in viewer mode). The click on the thumbnail comes from the
``streamlit-image-coordinates`` component; the number inputs beside it do the same.
"""

import functools

import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from appkit import access, batch, explorer, navigation, slides, state, widgets
from segcore.analysis import slide_views
from segcore.data.roots import describe_roots
from segcore.errors import SegcoreError
from segcore.slides.reader import SLIDE_SUFFIXES
from segcore.training.runs import ACTIVE_STATES

SOURCES = ("In a data root", "Upload")
THUMBNAIL_SHOWN = 600  # the thumbnail's longer side on the page, in CSS pixels

navigation.page_header()
st.title("Slides")
widgets.active_model_caption()
batch.batch_section()  # many slides and images in one background batch

source = st.radio("Slide", SOURCES, horizontal=True, key=slides.MODE_KEY)
if source == SOURCES[0]:
    found = slides.slide_files()
    pick, typed = st.columns(2)
    choice = pick.selectbox(
        f"Slides found under {describe_roots(access.data_roots())}",
        found,
        index=None,
        placeholder="Choose a slide" if found else "No slide files found in the data roots",
        key=slides.CHOICE_KEY,
    )
    text = typed.text_input(
        "…or a slide path relative to a data root",
        key=slides.TYPED_KEY,
        help="A slide file inside one of the data roots, e.g. data/slides/case.svs. "
        + access.folder_help().split(" Layouts:")[0],
    )
    wanted = text.strip() or choice
    if not wanted:
        st.info(
            "Choose a slide (SVS, NDPI, MIRAX, SCN, BIF, DICOM, tiled or OME-TIFF). Slides are "
            "too large to upload: they are opened where they lie, inside a data root.",
            icon=":material/gallery_thumbnail:",
        )
        st.stop()
    try:
        path = access.browser_slide(wanted)
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot open this slide")
        st.stop()
    name = access.slide_name(path)
else:
    limit = state.upload_limit_mb()
    upload = st.file_uploader(
        f"A small slide (up to {limit} MB)",
        type=[suffix.lstrip(".") for suffix in SLIDE_SUFFIXES],
        key=slides.UPLOAD_KEY,
    )
    if upload is None:
        st.info(f"Upload a slide of up to {limit} MB; larger ones are opened from a data root.")
        st.stop()
    try:
        path = slides.save_upload(upload.name, upload.getvalue())
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot keep this upload")
        st.stop()
    name = upload.name

try:
    view = slides.overview(path)
except SegcoreError as exc:
    widgets.show_error(exc, f"Cannot open {name}")
    st.stop()
info, sid = view.info, slides.slide_id(view)
stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]  # for the names of regions and downloads

given = None
if info.pixel_size is None:
    st.warning(
        f"{name} records no pixel size: give its magnification (the model is trained at "
        "0.25 µm/px, 40×); it is not guessed.",
        icon=":material/straighten:",
    )
    given = widgets.magnification(f"slide_{sid}", None)
pixel_size = info.pixel_size or given
for cell, (label, value) in zip(
    st.columns(5), slide_views.describe(info, given).items(), strict=True
):
    cell.markdown(f"**{label}**  \n{value}")

picture_column, side = st.columns([3, 2])
keys = slides.region_keys(view)
with side:
    otsu = round(view.tissue.threshold, 3)
    chosen = st.slider(
        "Tissue threshold",
        0.0,
        0.6,
        otsu,
        0.005,
        format="%.3f",
        key=slides.THRESHOLD_KEY.format(sid),
        help=f"On the saturation of the thumbnail's pixels: glass ≈ 0, stained tissue 0.15–0.7. "
        f"Default: Otsu's threshold, {otsu:.3f}.",
    )
    st.caption(f"Otsu's threshold on this slide: {otsu:.3f} (the default).")
    tissue_threshold = None if chosen == otsu else chosen
    tissue = slides.tissue(view, tissue_threshold)
    for cell, (label, value) in zip(
        st.columns(2), slide_views.tissue_readouts(tissue, pixel_size).items(), strict=True
    ):
        cell.metric(label, value)
    start = slide_views.tissue_box(view, view.tissue)
    st.session_state.setdefault(keys.x, start[0])
    st.session_state.setdefault(keys.y, start[1])
    inputs = st.columns(2)
    side_px = slide_views.REGION_SIDE
    x = inputs[0].number_input(
        "Region left (px)", 0, max(0, info.width - side_px), step=100, key=keys.x
    )
    y = inputs[1].number_input(
        "Region top (px)", 0, max(0, info.height - side_px), step=100, key=keys.y
    )
    st.button(
        "Open region",
        on_click=slides.open_region,
        args=(keys,),
        key=f"open_{sid}",
        help=f"Opens the {side_px}×{side_px} px region (level 0) whose top-left corner is "
        "given above; a click on the thumbnail does the same around the point clicked.",
    )
    box = slide_views.clip_box(int(x), int(y), info.width, info.height)
    opened = bool(st.session_state.get(keys.opened))

with picture_column:
    streamlit_image_coordinates(
        slide_views.outline_picture(view, tissue, box if opened else None),
        key=keys.click,
        **slide_views.shown_size(view.thumbnail, THUMBNAIL_SHOWN),
        image_format="JPEG",
        jpeg_quality=90,
        cursor="crosshair",
        on_click=functools.partial(slides.take_click, keys, view),
    )
    st.caption(
        f"{name}: tissue outlined in blue. Click a point to open the "
        f"{side_px}×{side_px} px region around it at full resolution (framed in vermillion)."
    )


def job_panel(polling: bool) -> None:
    """The slide's newest job: queued, running (progress, Stop), failed, stopped or done
    (density heat map, counts, downloads); polls every 2 s while the job is active."""
    job = slides.latest_job(path)
    if job is None:
        other = slides.running_job()
        if other is not None:
            st.caption(f"Another slide is being segmented ({other['job_id']}); a new job queues.")
        return
    status, state_name = job["status"], job["state"]
    if polling and state_name not in ACTIVE_STATES:
        st.rerun()  # the job ended: draw the page again, without polling
    st.markdown(f"**{job['job_id']}** — {state_name}")
    if state_name == "queued":
        st.info(f"Queued: position {status.get('position') or '…'} (one slide at a time).")
    elif state_name == "running":
        fraction, text = slides.progress(status)
        st.progress(fraction, text=text)
    elif state_name == "failed":
        st.error(f"Failed: {access.browser_message(status.get('reason') or 'no reason given')}")
    elif state_name == "stopped":
        st.warning(f"Stopped: {status.get('reason') or ''}; its finished tiles are kept.")
    if state_name == "completed":
        run_results(job)
    elif not access.viewer_mode():
        job_buttons(job)


def job_buttons(job: dict) -> None:
    """Stop for an active job, Resume for a stopped or failed one (not in viewer mode)."""
    active = job["state"] in ACTIVE_STATES
    label, action = (
        ("Stop", access.stop_slide_job) if active else ("Resume", access.resume_slide_job)
    )
    if not st.button(label, key=f"{label.lower()}_{job['job_id']}"):
        return
    try:
        action(job["path"])
    except SegcoreError as exc:
        widgets.show_error(exc, f"Cannot {label.lower()}")
        return
    if active:
        st.toast("Stop requested: the job stops after its current tile.")
    else:
        st.rerun()  # queued again: poll it


def run_results(job: dict) -> None:
    """A completed job's density heat map over the thumbnail, counts and downloads."""
    try:
        summary, density = slides.run_results(job["path"])
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot read the results")
        return
    if density is not None:
        top = (summary.get("density") or {}).get("png_top_per_mm2")
        st.image(
            slide_views.density_overlay(view.thumbnail, density),
            caption="Nuclei density (inferno: black 0 → yellow "
            f"{'the top' if top is None else f'{top:,.0f} /mm²'}), over the tissue",
        )
    cells = st.columns(2)
    for index, (label, value) in enumerate(slide_views.run_readouts(summary).items()):
        cells[index % 2].metric(label, value)
    cells = st.columns(2)
    for index, (label, file, mime) in enumerate(slides.RUN_DOWNLOADS):
        cells[index % 2].download_button(
            label,
            slides.job_file(job["path"], file),
            file_name=f"{stem}_{file}",
            mime=mime,
            on_click="ignore",
            key=f"download_{job['job_id']}_{file}",
        )


with side:
    st.subheader("Whole slide")
    newest = slides.latest_job(path)
    active = newest is not None and newest["state"] in ACTIVE_STATES
    if access.viewer_mode():
        st.info(access.VIEWER_NOTE, icon=":material/visibility:")
    else:
        flips = st.checkbox(
            "Test-time flips", key=f"flips_{sid}", disabled=active, help=widgets.FLIPS_HELP
        )
        if st.button(
            "Segment the whole slide", type="primary", disabled=active, key=f"segment_{sid}"
        ):
            try:
                job = access.start_slide_job(
                    path,
                    model_ref=state.active_ref(),
                    config=slides.run_config(given, tissue_threshold, flips),
                )
            except SegcoreError as exc:
                widgets.show_error(exc, "Not started")
            else:
                st.toast(f"Started {job.job_id}: it runs in the background.")
                active = True
    st.fragment(job_panel, run_every=2 if active else None)(active)

if not opened:
    st.info("Click the thumbnail (or press Open region) to explore a region at full resolution.")
    st.stop()
bundle = widgets.require_bundle()
widgets.runtime_caption(bundle)
st.subheader(f"Region x {box[0]:,d}–{box[0] + box[2]:,d}, y {box[1]:,d}–{box[1] + box[3]:,d}")
if not tissue.covers(*box):
    st.caption("No tissue was found in this region: it may be glass.")
region_flips = widgets.flips_box(bundle, key=widgets.REGION_FLIPS_KEY)
try:
    analysis = slides.region_analysis(
        bundle, view, box, pixel_size, f"{stem}_x{box[0]}_y{box[1]}.png", region_flips
    )
except SegcoreError as exc:
    widgets.show_error(exc, "Cannot read this region")
    st.stop()
explorer.image_views(
    analysis, bundle, pixel_size, no_truth="A slide region has no ground truth: nuclei only."
)
explorer.explorer(analysis, bundle, page="slides")
