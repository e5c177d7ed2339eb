"""The explorer of one analysed image, shared by the Predict and Slides pages: the image's
pictures (:func:`image_views`), then two thresholds side by side with their read-outs (and the
runtime that produced them), overlays, curve, nuclei and downloads (:func:`explorer`), all
re-thresholding the cached probabilities of an :class:`~segcore.analysis.analyse.ImageAnalysis`
(the model never runs again here, unless asked to with a runtime that became ready).
"""

from __future__ import annotations

import streamlit as st

from appkit import charts, state, widgets

NO_TRUTH = "No ground truth: upload its mask to see Dice, Jaccard, precision and recall."
"""What the fourth picture says when the image has no ground truth (Predict's wording)."""


def image_views(analysis, bundle, pixel_size, *, no_truth: str = NO_TRUTH) -> None:
    """The caption (size, pixel size, time, model, runtime), the stain and display notes, and
    the four pictures: original, model input, probabilities, ground truth (or ``no_truth``).
    ``pixel_size`` is the one chosen (µm/px); for ``"auto"`` the caption gives the estimated
    one and says what was estimated (:attr:`ImageAnalysis.scale
    <segcore.analysis.analyse.ImageAnalysis.scale>`)."""
    height, width = analysis.shape
    if analysis.scale is not None:
        pixel_size = analysis.pixel_size
    st.caption(
        f"**{analysis.name}** — {width}×{height} px at {pixel_size:g} µm/px, predicted in "
        f"{analysis.seconds:.2f} s by {bundle.card.name} (trained at "
        f"{bundle.pixel_size or 0.25:g} µm/px"
        f"{', runtime ' + analysis.runtime if analysis.runtime else ''}"
        f"{', mean of 4 flips' if analysis.flips else ''}). Probabilities are "
        "cached: the sliders below never re-run the model."
    )
    if analysis.scale is not None:
        st.caption(f"Auto: {analysis.scale.describe()}.")
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
        views[3].info(no_truth)


def explorer(analysis, bundle, *, page: str = "") -> None:
    """Two thresholds side by side, the nuclei at threshold A and the downloads, in a fragment:
    a slider re-runs this part only and re-thresholds the cached probabilities.

    Args:
        analysis: the :class:`~segcore.analysis.analyse.ImageAnalysis` to explore.
        bundle: the loaded bundle (its threshold and nucleus setting are the defaults).
        page: prefixes the widget keys on a page other than Predict
            (:func:`appkit.state.explorer_keys`).
    """
    _explore(analysis, bundle, page)


@st.fragment
def _explore(analysis, bundle, page: str) -> None:
    model_id = bundle.card.model_sha256[:12]  # sliders start again at a new model's threshold
    keys = state.explorer_keys(model_id, analysis.stem, page)
    state.show_explorer_values(keys)  # before the widgets: the browser shows what is used
    controls = st.columns(5, vertical_alignment="bottom")  # a wrapped label stays aligned
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
    again = f"{page}_predict_again" if page else "predict_again"
    widgets.figures_caption(analysis, bundle, key=again)  # the runtime the figures came from
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
    _downloads(analysis, shown, t_a, t_b)
    st.subheader(f"Nuclei at threshold A = {t_a:.2f}")
    nuclei = analysis.nuclei(t_a, setting)
    widgets.nuclei_readouts(nuclei)
    left, right = st.columns(2)
    left.image(nuclei.outlines(analysis.picture), caption=f"{nuclei.count:,d} nuclei outlined")
    if nuclei.count:
        right.plotly_chart(charts.nuclei_histograms(nuclei.distributions()), key="nuclei_hist")
    widgets.nucleus_table(nuclei.table, key=keys.table_page)
    widgets.nuclei_downloads(nuclei, analysis.stem)


def _downloads(analysis, shown, t_a: float, t_b: float) -> None:
    """The mask and overlay PNGs at threshold A and the metrics CSV of A and B."""
    stem = analysis.stem
    files = (
        ("Mask PNG (A)", shown.a.mask_png, f"{stem}_mask_{t_a:.2f}.png", "image/png"),
        ("Overlay PNG (A)", shown.a.overlay_png, f"{stem}_overlay_{t_a:.2f}.png", "image/png"),
        (
            "Metrics CSV (A and B)",
            lambda: analysis.metrics_csv([t_a, t_b]),
            f"{stem}_metrics.csv",
            "text/csv",
        ),
    )
    for cell, (label, data, file_name, mime) in zip(st.columns(3), files, strict=True):
        cell.download_button(label, data, file_name=file_name, mime=mime, on_click="ignore")
