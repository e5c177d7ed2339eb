"""Predict: an uploaded image (and its mask) or a sample, explored at two thresholds live, and
its nuclei as objects (count, measurements, PQ/AJI, QuPath GeoJSON).

UI only: the model runs once per image through ``segcore.analysis.analyse.analyse_image``; the
explorer (``appkit.explorer``, shared with the Slides page) keeps the threshold sliders in a
fragment that re-thresholds the cached probabilities.
"""

import streamlit as st

from appkit import explorer, navigation, state, widgets
from segcore.analysis.uploads import digest, read_upload
from segcore.data.images import IMAGE_SUFFIXES
from segcore.errors import SegcoreError

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]

navigation.page_header()
st.title("Predict")
widgets.active_model_caption()
bundle = widgets.require_bundle()
widgets.runtime_caption(bundle)

state.apply_predict_request()  # "open in Predict" from the Evaluate page

mode = st.radio("Image", ["Sample", "Upload"], horizontal=True, key=state.PREDICT_MODE_KEY)


if mode == "Sample":
    source = state.sample_source()
    splits = widgets.source_picker(source)
    split_col, pick, shuffle = st.columns([1, 2.5, 1.5], vertical_alignment="bottom")
    split_name = split_col.selectbox("Split", ["test", "val", "train"], key=state.SAMPLE_SPLIT_KEY)
    sample_set = splits.split(split_name)
    if len(sample_set) == 0:
        st.warning(f"The {split_name} split of {source} is empty; pick another split.")
        st.stop()
    ids = list(sample_set.ids)
    state.default_sample(ids)
    sample_id = pick.selectbox(f"Sample ({len(ids)} in {split_name})", ids, key=state.SAMPLE_ID_KEY)
    shuffle.button(
        f"{state.RANDOM_SAMPLES} random samples",
        icon=":material/casino:",
        on_click=state.pick_random_samples,
        args=(ids,),
        key="random_button",
    )
    random_ids = state.random_samples(ids)
    if random_ids:
        gallery = st.columns(len(random_ids))
        for column, rid in zip(gallery, random_ids, strict=True):
            with column:
                shown = state.sample_analysis(bundle, sample_set, rid)
                view = shown.view(bundle.threshold)
                st.image(view.overlay, caption=f"{rid}: Dice {view.metrics['dice']:.3f}")
                st.button(
                    f"Explore {rid}",
                    key=f"explore_{rid}",
                    on_click=state.choose_sample,
                    args=(rid,),
                )
    pixel_size = widgets.magnification(
        f"sample_{sample_id}", state.source_pixel_size(splits), auto=True, image=False
    )
    flips = widgets.flips_box(bundle)
    try:
        analysis = state.sample_analysis(bundle, sample_set, sample_id, pixel_size, flips)
    except SegcoreError as exc:
        widgets.show_error(exc, f"Cannot predict {sample_id}")
        st.stop()
else:
    limit = state.upload_limit_mb()
    too_large = f"Files up to {limit} MB: the browser refuses a larger one before sending it."
    left, right = st.columns(2)
    image_file = left.file_uploader(
        "H&E image", type=UPLOAD_TYPES, key="upload_image", help=too_large
    )
    mask_file = right.file_uploader(
        "Ground-truth mask (optional: binary, 0/255, palette or instance labels)",
        type=[*UPLOAD_TYPES, "geojson", "json"],
        key="upload_mask",
        help="A mask image of the same size, or a QuPath GeoJSON export (.geojson, .json) of "
        f"this image's objects: its polygons become the nuclei. {too_large}",
    )
    if image_file is None:
        st.info(
            f"Upload an H&E image (PNG, JPEG, TIFF or BMP, up to {limit} MB) to predict its "
            "nuclei. A larger file is refused by the browser before it reaches the app: the "
            f"uploader marks it in red (“File must be {limit}.0MB or smaller”) and nothing is "
            "predicted; crop it, or save it as JPEG or compressed TIFF.",
            icon=":material/upload_file:",
        )
        st.stop()
    image_bytes = image_file.getvalue()
    mask_bytes = mask_file.getvalue() if mask_file is not None else None
    key = ("upload", digest(image_bytes), digest(mask_bytes) if mask_bytes else "")
    recorded = state.upload_pixel_size(image_bytes)
    pixel_size = widgets.magnification(key[1], recorded.value, note=recorded.note, auto=True)
    flips = widgets.flips_box(bundle)
    try:
        analysis = state.analysis_for(
            bundle,
            key,
            image_file.name,
            lambda: read_upload(
                image_bytes, image_file.name, mask_bytes, mask_file.name if mask_file else None
            ),
            pixel_size,
            flips,
        )
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot use this upload")
        st.stop()

explorer.image_views(analysis, bundle, pixel_size)
explorer.explorer(analysis, bundle)
