"""Predict: an uploaded image (and its mask) or a sample, explored at two thresholds live, and
its nuclei as objects (count, measurements, PQ/AJI, QuPath GeoJSON).

UI only: the model runs once per image through ``segcore.analysis.analyse.analyse_image``; the
threshold sliders live in a fragment that re-thresholds the cached probabilities.
"""

import streamlit as st

from appkit import charts, navigation, state, widgets
from segcore.analysis.uploads import digest, read_upload
from segcore.data.images import IMAGE_SUFFIXES
from segcore.errors import SegcoreError

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]

navigation.page_header()
st.title("Predict")
widgets.active_model_caption()
bundle = widgets.require_bundle()
widgets.runtime_caption(bundle)
model_id = bundle.card.model_sha256[:12]  # sliders start again at a new model's threshold

state.apply_predict_request()  # "open in Predict" from the Evaluate page

mode = st.radio("Image", ["Sample", "Upload"], horizontal=True, key=state.PREDICT_MODE_KEY)


if mode == "Sample":
    source = state.sample_source()
    splits = widgets.source_picker(source)
    split_col, pick, shuffle = st.columns([1, 3, 1], vertical_alignment="bottom")
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
    pixel_size = widgets.magnification(f"sample_{sample_id}", state.source_pixel_size(splits))
    try:
        analysis = state.sample_analysis(bundle, sample_set, sample_id, pixel_size)
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
        type=UPLOAD_TYPES,
        key="upload_mask",
        help=too_large,
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
    pixel_size = widgets.magnification(key[1], state.upload_pixel_size(image_bytes))
    try:
        analysis = state.analysis_for(
            bundle,
            key,
            image_file.name,
            lambda: read_upload(
                image_bytes, image_file.name, mask_bytes, mask_file.name if mask_file else None
            ),
            pixel_size,
        )
    except SegcoreError as exc:
        widgets.show_error(exc, "Cannot use this upload")
        st.stop()

height, width = analysis.shape
st.caption(
    f"**{analysis.name}** — {width}×{height} px at {pixel_size:g} µm/px, predicted in "
    f"{analysis.seconds:.2f} s by {bundle.card.name} (trained at {bundle.pixel_size or 0.25:g} "
    f"µm/px{', runtime ' + analysis.runtime if analysis.runtime else ''}). Probabilities are "
    "cached: the sliders below never re-run the model."
)
if analysis.stain_note:
    st.warning(analysis.stain_note, icon=":material/palette:")
if analysis.display_note:
    st.caption(analysis.display_note)
views = st.columns(4)
views[0].image(analysis.picture, caption="Original")
views[1].image(analysis.model_input, caption="Preprocessed (what the model sees)")
views[2].image(analysis.heatmap(), caption="Probability (viridis: dark 0 → yellow 1)")
truth_picture = analysis.truth_picture()
if truth_picture is not None:
    views[3].image(truth_picture, caption="Ground truth")
else:
    views[3].info("No ground truth: upload its mask to see Dice, Jaccard, precision and recall.")


@st.fragment
def explore() -> None:
    """Two thresholds side by side; re-thresholds the cached probabilities only."""
    keys = state.explorer_keys(model_id, analysis.stem)
    state.show_explorer_values(keys)  # before the widgets: the browser shows what is used
    controls = st.columns(5)
    t_a = controls[0].slider(
        "Threshold A",
        0.0,
        1.0,
        float(round(bundle.threshold, 2)),
        0.01,
        key=keys.threshold_a,
        help="Default: the model's validation-best threshold.",
    )
    t_b = controls[1].slider("Threshold B", 0.0, 1.0, 0.5, 0.01, key=keys.threshold_b)
    opacity = controls[2].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key=keys.opacity)
    setting = widgets.instance_controls(bundle.instances, keys, controls[3:])
    widgets.threshold_readouts(analysis, t_a, t_b, setting)  # figures first, then pictures
    shown = analysis.compare(t_a, t_b, opacity=opacity, instances=setting)
    for side, view in zip(st.columns(2), (shown.a, shown.b), strict=True):
        side.image(view.overlay, caption=f"Overlay at {view.threshold:.2f}")
        side.image(view.mask_picture, caption=f"Prediction at {view.threshold:.2f}")
    widgets.overlay_legend(truth=analysis.has_truth)
    curve = shown.curve
    if curve is not None:
        figure = charts.threshold_figure(
            curve.thresholds,
            {"Dice": curve.dice, "Jaccard": curve.jaccard},
            best=curve.best_threshold,
            marks={"A": t_a, "B": t_b},
            title=f"Dice and Jaccard vs threshold (best Dice {curve.best_dice:.3f} "
            f"at {curve.best_threshold:.2f})",
        )
        st.plotly_chart(figure, key="threshold_curve")
    downloads = st.columns(3)
    downloads[0].download_button(
        "Mask PNG (A)",
        shown.a.mask_png,
        file_name=f"{analysis.stem}_mask_{t_a:.2f}.png",
        mime="image/png",
        on_click="ignore",
    )
    downloads[1].download_button(
        "Overlay PNG (A)",
        shown.a.overlay_png,
        file_name=f"{analysis.stem}_overlay_{t_a:.2f}.png",
        mime="image/png",
        on_click="ignore",
    )
    downloads[2].download_button(
        "Metrics CSV (A and B)",
        lambda: analysis.metrics_csv([t_a, t_b]),
        file_name=f"{analysis.stem}_metrics.csv",
        mime="text/csv",
        on_click="ignore",
    )
    st.subheader(f"Nuclei at threshold A = {t_a:.2f}")
    nuclei = analysis.nuclei(t_a, setting)
    widgets.nuclei_readouts(nuclei)
    left, right = st.columns(2)
    left.image(nuclei.outlines(analysis.picture), caption=f"{nuclei.count:,d} nuclei outlined")
    if nuclei.count:
        right.plotly_chart(charts.nuclei_histograms(nuclei.distributions()), key="nuclei_hist")
    widgets.nucleus_table(nuclei.table, key=keys.table_page)
    widgets.nuclei_downloads(nuclei, analysis.stem)


explore()
