"""Small Streamlit renderers shared by the pages (no segcore logic of their own)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import streamlit as st

from appkit import access, state
from segcore.analysis import cards, catalog
from segcore.analysis.exports import MAX_PNG_LABEL
from segcore.analysis.overlays import legend
from segcore.bundles.loading import baseline_bundle
from segcore.bundles.refs import HF_SCHEME, resolve_bundle_ref
from segcore.bundles.store import read_card
from segcore.data import roots, samples
from segcore.errors import SegcoreError
from segcore.inference.instances import InstanceConfig

METRIC_LABELS = (
    ("dice", "Dice", "{:.3f}"),
    ("jaccard", "Jaccard", "{:.3f}"),
    ("precision", "Precision", "{:.3f}"),
    ("recall", "Recall", "{:.3f}"),
)


NUCLEI_HELP = (
    "Nuclei of the prediction, touching ones split by the watershed with the settings above."
)
TRUTH_NUCLEI_HELP = (
    " The ground truth has {count:,d} nuclei (its instance labels, or the connected components "
    "of a binary mask)."
)


def metric_readouts(
    metrics: Mapping[str, Any],
    *,
    title: str,
    compare: Mapping[str, Any] | None = None,
    help: str | None = None,
):
    """One row: ``title``, then ``st.metric`` read-outs of Dice, Jaccard, precision, recall
    and the nuclei count.

    Without ground truth (``"reason"`` in ``metrics``) only the nuclei count is shown, with
    the reason the rest is absent. With ``compare``, each read-out shows its difference from it.
    ``help`` is a tooltip on the title. Without ``nuclei_pred`` in ``metrics`` (pixel figures
    only: :meth:`~segcore.analysis.explorer.ThresholdExplorer.pixel_metrics_at`) the count shows
    "…" until :func:`show_nuclei_count` fills it.

    Returns:
        The count's slot, for :func:`show_nuclei_count`.
    """
    # the title's and the count's columns wider: "Classical baseline" and "Nuclei (predicted)"
    # fit on one line with their help icons at 1280 px
    columns = st.columns([1.5, 1, 1, 1, 1, 1.5], vertical_alignment="center")
    columns[0].markdown(f"**{title}**", help=help)
    if "reason" in metrics:
        slot = columns[1].empty()
        columns[2].caption(f"Dice, Jaccard, precision and recall: {metrics['reason']}")
    else:
        for column, (key, label, fmt) in zip(columns[1:], METRIC_LABELS, strict=False):
            delta = None
            if compare is not None and "reason" not in compare:
                delta = f"{metrics[key] - compare[key]:+.3f} vs A"
            column.metric(label, fmt.format(metrics[key]), delta=delta)
        slot = columns[5].empty()
    show_nuclei_count(slot, metrics, metrics.get("nuclei_pred"))
    return slot


def show_nuclei_count(slot, metrics: Mapping[str, Any], count: int | None) -> None:
    """Shows the predicted nuclei ``count`` (``None``: "…", still being split) in a row's slot
    from :func:`metric_readouts`."""
    value = "…" if count is None else f"{count:,d}"
    truth = metrics.get("nuclei_true") if "reason" not in metrics else None
    extra = "" if truth is None else TRUTH_NUCLEI_HELP.format(count=truth)
    slot.metric("Nuclei (predicted)", value, help=NUCLEI_HELP + extra)


def threshold_readouts(analysis, t_a: float, t_b: float, setting) -> None:
    """The Predict page's read-out rows — thresholds A and B and the classical baseline — drawn
    with the pixel figures first (a look-up: the browser shows them at once), then each row's
    nuclei count as its split finishes (the split of a 1000² map takes about 0.2 s)."""
    explorer = analysis.explorer
    a, b = explorer.pixel_metrics_at(t_a), explorer.pixel_metrics_at(t_b)
    known_a = explorer.known_nuclei_at(t_a, setting)
    known_b = explorer.known_nuclei_at(t_b, setting)
    if known_a is not None:
        a = {**a, "nuclei_pred": known_a}  # counted before: no "…" at all
    if known_b is not None:
        b = {**b, "nuclei_pred": known_b}
    slot_a = metric_readouts(a, title=f"Threshold A = {t_a:.2f}")
    slot_b = metric_readouts(b, title=f"Threshold B = {t_b:.2f}", compare=a)
    metric_readouts(
        analysis.baseline_metrics(),
        title="Classical baseline",
        compare=a,
        help="Hematoxylin by colour deconvolution, Gaussian blur, Otsu threshold: no learning. "
        "Differences are against threshold A.",
    )
    if known_a is None:
        show_nuclei_count(slot_a, a, explorer.nuclei_at(t_a, setting))
    if known_b is None:
        show_nuclei_count(slot_b, b, explorer.nuclei_at(t_b, setting))


def figures_caption(analysis, bundle, *, key: str) -> None:
    """The line under the read-outs: which runtime produced the figures (and, when this
    session saw figures of the same image from another runtime before, that they were
    predicted again) and the ground truth's nuclei count. When the runtime that predicts now
    differs from the one of the shown figures (a fast runtime became ready meanwhile), the line
    says so and a button (``key``) predicts the image again with it."""
    produced = analysis.runtime
    parts = []
    if produced:
        text = f"Predicted with **{produced}**"
        before = state.runtime_before(analysis)
        if before:
            text += (
                f" (predicted again once it was ready: the {before} figures shown before for "
                "this image differ slightly)"
            )
        parts.append(text)
    truth = analysis.explorer.nuclei_true
    if truth is not None:
        parts.append(f"ground truth: {truth:,d} nuclei")
    now = state.runtime_name(bundle) if produced else ""
    if now and now != produced:
        left, right = st.columns([4, 1], vertical_alignment="center")
        parts.append(f"**{now}** is ready now: these figures are still {produced}'s")
        left.caption(" · ".join(parts) + ".")
        if right.button(
            "Predict again",
            key=key,
            icon=":material/refresh:",
            help=f"Predict this image again with {now} (the figures may move slightly).",
        ):
            st.rerun(scope="app")  # a full run predicts the image with the runtime of now
    elif parts:
        st.caption(" · ".join(parts) + ".")


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
        st.sidebar.warning(access.browser_message(f"Active model {ref!r}: {exc}"))
        return
    name = card.name if card else ref
    threshold = f", threshold {card.threshold:.2f}" if card else ""
    st.sidebar.caption(f"**Active model:** {name} ({catalog.describe_ref(ref)}{threshold})")


def runtime_caption(bundle) -> None:
    """The sidebar line saying which runtime runs ``bundle`` (:func:`state.runtime_status`);
    nothing for the classical baseline. While a fast runtime is prepared in the background the
    line says so, and the page's next run (the next image, slider or click) uses it and says
    which. (Not a self-refreshing fragment: measured, a sidebar fragment with ``run_every`` kept
    the idle server at 30–70 % of a core, and delayed every upload by about 0.7 s.)"""
    line = state.runtime_status(bundle)
    if line is not None:
        st.sidebar.caption(line)


def runtime_gate_table(folder, card) -> None:
    """The accuracy gate's figures of the bundle at ``folder`` on this server's CPU (one row per
    fast runtime) and the runtime ``auto`` picks; a line saying none are recorded yet otherwise."""
    from segcore.bundles.runtime_cache import gate_record
    from segcore.inference.runtimes.selection import choose

    record = gate_record(folder, card)
    if record is None:
        st.caption(
            "**Runtimes:** no accuracy-gate record on this server's CPU yet (made on first use, "
            "or by `python -m segcore runtimes --prepare`)."
        )
        return
    st.markdown(f"**Runtimes on this server** — auto runs `{choose(record)}`")
    st.dataframe(
        [
            {
                "runtime": r["runtime"],
                "gate": "pass" if r["passed"] else "fail",
                "ms per tile": round(r["ms_per_tile"], 1),
                "× keras": round(r["time_ratio"], 2),
                "why": r["reason"],
            }
            for r in record["results"]
        ],
        hide_index=True,
    )
    if record.get("keras_reference"):
        st.caption(
            f"Gated on this CPU without TensorFlow, against {record['keras_reference']}; "
            "“× keras” was measured there."
        )


def model_card(card, folder) -> None:
    """A model card as a newcomer reads it (:mod:`segcore.analysis.cards`): what the model is
    (a two-column table: name, threshold, pixel size, training data, licence...), its figures
    per set and, for a fine-tuned model, the card's ``comparison`` of the starting model and
    this one. ``folder`` is the bundle's folder; server paths are named as a browser may see
    them (:func:`appkit.access.browser_message`)."""
    facts = [*cards.card_facts(card), ("Folder", catalog.display_path(folder))]
    st.table(
        [{"": what, "Value": access.browser_message(value)} for what, value in facts],
        hide_index=True,
        hide_header=True,
    )
    figures = cards.figure_rows(card)
    if figures:
        st.markdown(
            "**Figures per set**",
            help="Pooled: pixel counts summed over the set's images, then scored; mean Dice: "
            "each image scored, then averaged. Best threshold: the one of best pooled Dice on "
            "that set (the model's threshold is chosen on validation data only).",
        )
        for row in figures:
            row["Data"] = access.browser_message(row["Data"])
        st.table(figures, hide_index=True)
    else:
        st.caption("No figures recorded (`python -m segcore evaluate --update-card` adds them).")
    rows, notes = cards.comparison_table(card.to_dict().get("comparison"))
    if rows:
        st.markdown(
            "**Before and after fine-tuning**",
            help="The model this one started from and this one, scored on the same images, "
            "each at its own threshold.",
        )
        st.table(
            [{k: access.browser_message(v) for k, v in row.items()} for row in rows],
            hide_index=True,
        )
        if notes:
            st.caption(" · ".join(f"{what}: {access.browser_message(v)}" for what, v in notes))


def card_json(card) -> None:
    """The full card as JSON, in a collapsed expander (server paths named as a browser may see
    them)."""
    with st.expander("Full card (JSON)", icon=":material/data_object:"):
        st.code(access.browser_message(json.dumps(card.to_dict(), indent=2)), language="json")


def show_error(exc: BaseException, what: str = "") -> None:
    """Shows a segcore error's message (which names the file and the problem), files inside the
    data roots named relative to their root (:func:`appkit.access.browser_message`)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{access.browser_message(exc)}", icon=":material/error:")


SOURCE_CHOICES = {
    samples.BUILT_IN: "Built-in samples (real tissue)",
    samples.SYNTHETIC: "Synthetic H&E",
    "folder": "A dataset folder",
}


def source_picker(source: str):
    """The sample-source chooser (an expander) and the opened source's splits.

    A typed folder must lie inside a data root (:func:`appkit.access.browser_source`); any other
    is refused with one generic message and the source stays as it was. Stops the page with a
    clear error when the source cannot be opened.
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
                f"Dataset folder under {roots.describe_roots(access.data_roots())}",
                value="" if current != "folder" else source,
                key="source_input",
                help=access.folder_help(),
            )
        if st.button("Use this source", key="source_apply"):
            try:
                chosen = kind if kind != "folder" else access.browser_source(folder)
            except SegcoreError as exc:
                show_error(exc, "Cannot use this folder")
            else:
                state.change_sample_source(chosen)
                st.rerun()
    try:
        return state.open_source_cached(source)
    except SegcoreError as exc:
        show_error(exc, "Cannot open the sample source")
        st.stop()


MAGNIFICATIONS = {"40× (0.25 µm/px)": 0.25, "20× (0.5 µm/px)": 0.5}
CUSTOM_PIXEL_SIZE = "Custom µm/px"
AUTO_PIXEL_SIZE = "Auto (from the nuclei)"


FLIPS_KEY = "predict_flips"
"""``st.session_state`` key of the Predict page's test-time flips box (one for every image)."""

REGION_FLIPS_KEY = "slides_region_flips"
"""``st.session_state`` key of the Slides page's flips box for the region explorer (one for every
region; the whole-slide job has its own box per slide)."""

FLIPS_HELP = (
    "Average the model over the image and its three mirror images: four network calls per "
    "tile instead of one, for slightly better nuclei on stains unlike the training set's (the "
    "default model gained 0.003 to 0.018 Dice on five labs' validation images)."
)
"""The help of the test-time flips boxes (Predict page; Slides page: region and whole slide)."""


def flips_box(bundle, key: str = FLIPS_KEY) -> bool:
    """The "Test-time flips" box (off by default; none for the classical baseline, which has
    no network to flip): whether to average the model over each image's mirror images.

    Args:
        bundle: the loaded bundle.
        key: the box's ``st.session_state`` key, defaults to the Predict page's
            :data:`FLIPS_KEY`.
    """
    if bundle.path is None:
        return False
    return st.checkbox("Test-time flips", key=key, help=FLIPS_HELP)


def magnification_options(*, auto: bool) -> list[str]:
    """The choices of :func:`magnification`: Auto first when offered, 40×, 20×, custom."""
    return [*([AUTO_PIXEL_SIZE] if auto else []), *MAGNIFICATIONS, CUSTOM_PIXEL_SIZE]


def default_magnification(options: list[str], detected: float | None, *, image: bool = True) -> str:
    """The choice pre-selected for an image whose file or dataset records ``detected`` µm/px
    (None: nothing usable): the magnification within 10 % of it, else custom. With nothing
    detected: for an ``image`` (an upload), Auto where offered and
    :data:`~segcore.inference.scale.PIXEL_SIZE_WHEN_UNKNOWN` is auto, as ``predict`` does; for
    a dataset's sample (``image=False``), 40× — the model's, as ``evaluate`` and the Evaluate
    page score it."""
    from segcore.inference.scale import PIXEL_SIZE_WHEN_UNKNOWN, is_auto

    if detected is None:
        if image and AUTO_PIXEL_SIZE in options and is_auto(PIXEL_SIZE_WHEN_UNKNOWN):
            return AUTO_PIXEL_SIZE
        return next(iter(MAGNIFICATIONS))
    near = [name for name, v in MAGNIFICATIONS.items() if abs(v - detected) <= 0.1 * v]
    return near[0] if near else CUSTOM_PIXEL_SIZE


def chosen_pixel_size(choice: str) -> float | str | None:
    """What a choice of :func:`magnification` means: µm per pixel, ``"auto"``
    (:data:`segcore.inference.scale.AUTO`) for Auto, None for custom (the number box says)."""
    from segcore.inference.scale import AUTO

    if choice == AUTO_PIXEL_SIZE:
        return AUTO
    return MAGNIFICATIONS.get(choice)


def magnification(
    key: str, detected: float | None, *, note: str = "", auto: bool = False, image: bool = True
):
    """The image's pixel size, in µm: 40×, 20× or a custom value — or, with ``auto``, the
    choice "Auto", returned as ``"auto"`` (estimated from the nuclei when predicted:
    :mod:`segcore.inference.scale`) — with ``detected`` (from the file or the dataset)
    pre-selected (:func:`default_magnification`; ``image``: an upload, not a dataset's sample);
    keyed per image so each starts from its own.
    ``note`` (why a value the file records is not used) is shown under the choice. The custom
    box takes the one range of pixel sizes (:data:`segcore.data.images.PIXEL_SIZE_RANGE`); a
    ``detected`` value outside it is not used (and said so)."""
    from segcore.data.images import (
        MAX_PIXEL_SIZE,
        MIN_PIXEL_SIZE,
        PIXEL_SIZE_RANGE,
        in_pixel_size_range,
    )

    if detected is not None and not in_pixel_size_range(detected):
        note = note or f"The recorded {detected:.4g} µm/px is outside {PIXEL_SIZE_RANGE}: not used."
        detected = None
    options = magnification_options(auto=auto)
    index = options.index(default_magnification(options, detected, image=image))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    choice = left.radio(
        "Magnification",
        options,
        index=index,
        horizontal=True,
        key=f"magnification_{key}",
        help="The image is resampled to the model's pixel size before prediction and the "
        "result back, so a 20× scan is seen as the model learned nuclei at 40×."
        + (
            " Auto estimates it from the nuclei's size on a first pass (40× or 20×)."
            if auto
            else ""
        )
        + (f" Detected: {detected:g} µm/px." if detected is not None else " None detected."),
    )
    if note:
        left.caption(note)
    if choice != CUSTOM_PIXEL_SIZE:
        return chosen_pixel_size(choice)
    return float(
        right.number_input(
            "µm per pixel",
            min_value=MIN_PIXEL_SIZE,
            max_value=MAX_PIXEL_SIZE,
            value=float(detected if detected is not None else 0.25),
            step=0.01,
            format="%.3f",
            key=f"pixel_size_{key}",
            help=f"In {PIXEL_SIZE_RANGE} (40× ≈ 0.25, 20× ≈ 0.5).",
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


def instance_controls(default: InstanceConfig, keys: state.ExplorerKeys, columns) -> InstanceConfig:
    """The two nucleus-splitting sliders (minimum area, split depth, keyed by ``keys``), starting
    at the model's setting ``default``; ``columns`` are the two Streamlit columns to put them in."""
    min_area = columns[0].slider(
        "Min. area (µm²)",
        0.0,
        max(40.0, default.min_area_um2),
        float(default.min_area_um2),
        0.5,
        key=keys.min_area,
        help="Minimum nucleus area: objects smaller than this are dropped as specks. Default: "
        "the model's setting, chosen on validation tiles.",
    )
    depth = columns[1].slider(
        "Split depth (µm)",
        0.0,
        max(3.0, default.split_depth_um),
        float(default.split_depth_um),
        0.05,
        key=keys.split_depth,
        help="How much thinner the neck between two touching nuclei must be before they are "
        "split: lower splits more, high values keep touching nuclei together.",
    )
    return InstanceConfig(min_area_um2=min_area, split_depth_um=depth)


def nuclei_readouts(view) -> None:
    """The nuclei section's read-outs: count, density, median size and, with ground truth,
    detection F1, PQ and AJI (``view`` is a :class:`segcore.analysis.objects.NucleiView`).
    Labels are short and units sit in them, so six read-outs fit one row; the detail is in
    each one's help."""
    summary = view.summary
    columns = st.columns(6)
    columns[0].metric("Nuclei", f"{view.count:,d}")
    density = summary.get("density_per_mm2")
    columns[1].metric(
        "Density (/mm²)",
        "–" if density is None else f"{density:,.0f}",
        help="Nuclei per mm² of the image (needs the pixel size).",
    )
    area = summary.get("median_area")
    unit = summary.get("area_unit", "µm²")
    columns[2].metric(f"Median area ({unit})", "–" if area is None else f"{area:.1f}")
    scores = view.scores
    if scores is None:
        columns[3].caption("Upload or pick an annotated image to see PQ, AJI and detection F1.")
        return
    columns[3].metric(
        "Detection F1",
        f"{scores.f1:.3f}",
        help=f"Predicted nuclei matched one-to-one to the ground truth's {scores.n_true:,d} "
        f"at IoU > 0.5: {scores.tp:,d} matched, {scores.fp:,d} extra, {scores.fn:,d} missed.",
    )
    columns[4].metric(
        "PQ", f"{scores.pq:.3f}", help="Panoptic quality = detection F1 × mean IoU of matches."
    )
    columns[5].metric(
        "AJI", f"{scores.aji:.3f}", help="Aggregated Jaccard index (Kumar et al. 2017)."
    )
    if view.truth_note:
        st.caption(view.truth_note)


_COLUMN_NAMES = {
    "id": "ID",
    "centroid_x": "Centroid x",
    "centroid_y": "Centroid y",
    "area": "Area",
    "perimeter": "Perimeter",
    "equivalent_diameter": "Equiv. diameter",
    "circularity": "Circularity",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "mean_hematoxylin_od": "Hematoxylin OD",
}
"""Headers of the nucleus table's columns, by name without the unit suffix."""

_COLUMN_FORMATS = {"id": "%d", "centroid_x": "%.1f", "centroid_y": "%.1f", "area": "%.1f"}
"""Fixed decimals per column (others: perimeter and diameter 2, the unitless ones 3)."""

_COLUMN_HELP = {
    "circularity": "4π·area / perimeter²: 1 for a disc, less for elongated or ragged outlines.",
    "eccentricity": "Of the ellipse with the same second moments: 0 a circle, towards 1 a line.",
    "solidity": "Area / area of the convex hull.",
    "mean_hematoxylin_od": "Mean hematoxylin optical density over the nucleus (rgb2hed).",
    "equivalent_diameter": "Diameter of the disc of the same area.",
}


def nucleus_columns(table) -> dict[str, Any]:
    """``st.dataframe``'s ``column_config`` for a :class:`segcore.analysis.nuclei.NucleusTable`:
    readable headers with the unit (``area_um2`` → "Area (µm²)") and fixed decimals."""
    config = {}
    for name, unit in table.units.items():
        base = name
        for suffix in ("_um2", "_px2", "_um", "_px"):
            if name.endswith(suffix) and name not in ("centroid_x", "centroid_y"):
                base = name[: -len(suffix)]
                break
        label = _COLUMN_NAMES.get(base, base.replace("_", " ").capitalize())
        if unit:
            label += f" ({unit})"
        decimals = 3 if not unit else 2
        config[name] = st.column_config.NumberColumn(
            label,
            format=_COLUMN_FORMATS.get(base, f"%.{decimals}f"),
            help=_COLUMN_HELP.get(base),
        )
    return config


def nucleus_table(table, key: str, page_size: int = 200) -> None:
    """The per-nucleus measurements, a page at a time (``table`` is a
    :class:`segcore.analysis.nuclei.NucleusTable`; ``key`` the page number's widget key), with
    units in the headers and fixed decimals (:func:`nucleus_columns`)."""
    if not len(table):
        st.caption("No nuclei at this threshold and setting.")
        return
    pages = table.page_count(page_size)
    page = 1
    if pages > 1:
        box, note = st.columns([1, 5], vertical_alignment="bottom")
        page = box.number_input(f"Page (of {pages})", 1, pages, 1, key=key)
        note.caption(f"{page_size} nuclei a page; the CSV download below has all {len(table):,d}.")
    st.dataframe(
        table.page(page - 1, page_size),
        hide_index=True,
        height=260,
        column_config=nucleus_columns(table),
    )


def nuclei_downloads(view, stem: str) -> None:
    """GeoJSON (QuPath), label PNG and CSV downloads of a
    :class:`segcore.analysis.objects.NucleiView`."""
    cells = st.columns(3)
    cells[0].download_button(
        "Nuclei GeoJSON (QuPath)",
        view.geojson,
        file_name=f"{stem}.geojson",
        mime="application/geo+json",
        on_click="ignore",
    )
    if view.count > MAX_PNG_LABEL:
        cells[1].caption(f"{view.count:,d} nuclei: too many for a 16-bit label PNG.")
    else:
        cells[1].download_button(
            "Nucleus labels PNG (16-bit)",
            view.label_png,
            file_name=f"{stem}_labels.png",
            mime="image/png",
            on_click="ignore",
        )
    cells[2].download_button(
        "Nuclei CSV", view.csv, file_name=f"{stem}_nuclei.csv", mime="text/csv", on_click="ignore"
    )
