"""Small Streamlit renderers shared by the pages (no segcore logic of their own)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from appkit import state
from segcore.analysis import catalog
from segcore.analysis.overlays import legend
from segcore.bundles.loading import baseline_bundle
from segcore.bundles.refs import HF_SCHEME, resolve_bundle_ref
from segcore.bundles.store import read_card
from segcore.data import samples
from segcore.errors import SegcoreError

METRIC_LABELS = (
    ("dice", "Dice", "{:.3f}"),
    ("jaccard", "Jaccard", "{:.3f}"),
    ("precision", "Precision", "{:.3f}"),
    ("recall", "Recall", "{:.3f}"),
)


def metric_readouts(
    metrics: Mapping[str, Any],
    *,
    title: str,
    compare: Mapping[str, Any] | None = None,
    help: str | None = None,
) -> None:
    """One row: ``title``, then ``st.metric`` read-outs of Dice, Jaccard, precision, recall
    and the nuclei count.

    Without ground truth (``"reason"`` in ``metrics``) only the nuclei count is shown, with
    the reason the rest is absent. With ``compare``, each read-out shows its difference from it.
    ``help`` is a tooltip on the title.
    """
    columns = st.columns([1.3, 1, 1, 1, 1, 1], vertical_alignment="center")
    columns[0].markdown(f"**{title}**", help=help)
    if "reason" in metrics:
        columns[1].metric("Nuclei (predicted)", f"{metrics['nuclei_pred']:d}")
        columns[2].caption(f"Dice, Jaccard, precision and recall: {metrics['reason']}")
        return
    for column, (key, label, fmt) in zip(columns[1:], METRIC_LABELS, strict=False):
        delta = None
        if compare is not None and "reason" not in compare:
            delta = f"{metrics[key] - compare[key]:+.3f} vs A"
        column.metric(label, fmt.format(metrics[key]), delta=delta)
    columns[5].metric(
        f"Nuclei (truth {metrics['nuclei_true']})",
        f"{metrics['nuclei_pred']:d}",
        help="Connected components (8-connectivity) of the prediction, and of the ground "
        "truth in brackets.",
    )


def overlay_legend(*, truth: bool) -> None:
    """A one-line colour legend of the overlay."""
    items = [
        f"<span style='display:inline-block;width:0.9em;height:0.9em;background:{c.hex};"
        f"border:1px solid #666;margin-right:0.3em'></span>{c.label}"
        for c in legend(truth=truth)
    ]
    st.markdown(" &nbsp; ".join(items), unsafe_allow_html=True)


def active_model_caption() -> None:
    """The sidebar line naming the active model (reads the card only; no TensorFlow)."""
    ref = catalog.active_ref()
    try:  # an hf:// ref is named as it is: resolving it could mean a download
        card = None if ref.startswith(HF_SCHEME) else read_card(resolve_bundle_ref(ref))
    except SegcoreError as exc:
        st.sidebar.warning(f"Active model {ref!r}: {exc}")
        return
    name = card.name if card else ref
    threshold = f", threshold {card.threshold:.2f}" if card else ""
    st.sidebar.caption(f"**Active model:** {name} ({catalog.describe_ref(ref)}{threshold})")


def show_error(exc: BaseException, what: str = "") -> None:
    """Shows a segcore error's message (which names the file and the problem)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}", icon="⚠️")


SOURCE_CHOICES = {
    samples.BUILT_IN: "Built-in samples (real tissue)",
    samples.SYNTHETIC: "Synthetic H&E",
    "folder": "A dataset folder",
}


def source_picker(source: str):
    """The sample-source chooser (an expander) and the opened source's splits.

    Stops the page with a clear error when the source cannot be opened.
    """
    with st.expander(f"Samples come from {samples.describe_source(source)}", expanded=False):
        current = source if source in (samples.BUILT_IN, samples.SYNTHETIC) else "folder"
        kind = st.radio(
            "Sample source",
            list(SOURCE_CHOICES),
            index=list(SOURCE_CHOICES).index(current),
            format_func=SOURCE_CHOICES.get,
            horizontal=True,
            key="source_kind",
        )
        folder = ""
        if kind == "folder":
            folder = st.text_input(
                "Dataset folder (any supported layout)",
                value="" if current != "folder" else source,
                key="source_input",
            )
        if st.button("Use this source", key="source_apply"):
            chosen = folder.strip() if kind == "folder" else kind
            state.change_sample_source(chosen or samples.default_source())
            st.rerun()
    try:
        return state.open_source_cached(source)
    except SegcoreError as exc:
        show_error(exc, "Cannot open the sample source")
        st.stop()


MAGNIFICATIONS = {"40× (0.25 µm/px)": 0.25, "20× (0.5 µm/px)": 0.5}
CUSTOM_PIXEL_SIZE = "Custom µm/px"


def magnification(key: str, detected: float | None) -> float:
    """The image's pixel size, in µm: 40×, 20× or a custom value, with ``detected`` (from the
    file or the dataset) pre-selected; keyed per image so each starts from its own."""
    options = [*MAGNIFICATIONS, CUSTOM_PIXEL_SIZE]
    index = 0
    if detected is not None:
        near = [i for i, v in enumerate(MAGNIFICATIONS.values()) if abs(v - detected) <= 0.1 * v]
        index = near[0] if near else len(MAGNIFICATIONS)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    choice = left.radio(
        "Magnification",
        options,
        index=index,
        horizontal=True,
        key=f"magnification_{key}",
        help="The image is resampled to the model's pixel size before prediction and the "
        "result back, so a 20× scan is seen as the model learned nuclei at 40×."
        + (f" Detected: {detected:g} µm/px." if detected is not None else " None detected."),
    )
    if choice != CUSTOM_PIXEL_SIZE:
        return MAGNIFICATIONS[choice]
    return float(
        right.number_input(
            "µm per pixel",
            min_value=0.01,
            max_value=10.0,
            value=float(detected if detected is not None else 0.25),
            step=0.01,
            format="%.3f",
            key=f"pixel_size_{key}",
        )
    )


ACTIVE_MODEL = "Active model"
CLASSICAL_BASELINE = "Classical baseline"


def evaluation_model(key: str):
    """A choice between the active model and the classical baseline; returns the chosen bundle
    (the page stops with an error when the active model cannot be loaded)."""
    choice = st.radio(
        "Model",
        [ACTIVE_MODEL, CLASSICAL_BASELINE],
        horizontal=True,
        key=key,
        help="The classical baseline is hematoxylin by colour deconvolution, Gaussian blur and "
        "Otsu's threshold, with no learning: the reference every model should beat.",
    )
    return baseline_bundle() if choice == CLASSICAL_BASELINE else require_bundle()


def require_bundle():
    """The active model's bundle, or an error naming the problem and a stopped page."""
    try:
        return state.active_bundle()
    except SegcoreError as exc:
        show_error(exc, "The active model cannot be loaded; pick another on the Models page")
        st.stop()
