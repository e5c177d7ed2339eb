"""Evaluate: the active model over a dataset split, with the sweep, the reliability diagram, a
table and the worst images.

UI only: ``segcore.evaluation.evaluate.evaluate`` does the work through
``appkit.state.split_evaluation``, which keeps results per model, dataset, split and threshold
for the life of the app process.
"""

import streamlit as st

from appkit import charts, navigation, state, widgets
from segcore.errors import SegcoreError

navigation.page_header()
st.title("Evaluate")
widgets.active_model_caption()
bundle = widgets.evaluation_model(key="eval_model")
widgets.runtime_caption(bundle)

source = state.sample_source()
splits = widgets.source_picker(source)
controls = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
split_name = controls[0].selectbox("Split", ["test", "val", "train"], key="eval_split")
threshold = controls[1].slider(
    "Threshold",
    0.0,
    1.0,
    float(round(bundle.threshold, 2)),
    0.01,
    key=f"eval_threshold_{bundle.card.name}",  # each model starts at its own threshold
)
worst_k = controls[2].number_input("Worst images shown", 1, 12, 3, key="eval_worst_k")
sample_set = splits.split(split_name)
if len(sample_set) == 0:
    st.warning(f"The {split_name} split of {source} is empty.")
    st.stop()

result = state.split_evaluation(bundle, splits, split_name, threshold)
run = controls[3].button(
    f"Evaluate {len(sample_set)} images", type="primary", disabled=result is not None
)
if result is None and not run:
    st.info(
        f"Press **Evaluate** to predict the {len(sample_set)} images of the {split_name} split "
        f"at full size (tiled) with {bundle.card.name}. Results are kept while the app runs."
    )
    st.stop()
if result is None:
    try:
        result = state.split_evaluation(bundle, splits, split_name, threshold, run=True)
    except SegcoreError as exc:
        widgets.show_error(exc, "Evaluation failed")
        st.stop()

st.subheader(f"{result.n_images} images of the {split_name} split at threshold {threshold:.2f}")
calibration = result.calibration
columns = st.columns(5)
columns[0].metric("Pooled Dice", f"{result.pooled['dice']:.3f}")
columns[1].metric("Pooled Jaccard", f"{result.pooled['jaccard']:.3f}")
columns[2].metric("Mean Dice per image", f"{result.mean['dice']:.3f}")
columns[3].metric("Mean Jaccard per image", f"{result.mean['jaccard']:.3f}")
columns[4].metric(
    "Calibration error (ECE)",
    f"{calibration.ece:.3f}",
    help=f"Expected calibration error of the probabilities, all pixels pooled: "
    f"{calibration.n_bins} equal-width bins of predicted probability, the pixel-weighted mean "
    "gap between a bin's mean probability and its fraction of true nucleus pixels. "
    "0 is perfectly calibrated; it does not depend on the threshold.",
)
objects = result.instances
columns = st.columns(4)
columns[0].metric("Nuclei: predicted / true", f"{objects['n_pred']:,d} / {objects['n_true']:,d}")
columns[1].metric("Detection F1", f"{objects['f1']:.3f}", help="Matched at IoU > 0.5, pooled.")
columns[2].metric("Mean PQ per image", f"{objects['mean_pq']:.3f}")
columns[3].metric("Mean AJI per image", f"{objects['mean_aji']:.3f}")
st.caption(
    "Pooled: pixel counts summed over all images, then scored. Mean: each image scored, "
    "then averaged with equal weight. Nuclei: the prediction split into nuclei with the "
    "model's setting, against the ground truth's instances."
)
for note in result.notes:
    st.caption(note)
sweep = result.sweep
left, right = st.columns(2)
left.plotly_chart(
    charts.threshold_figure(
        sweep.thresholds,
        {"Dice": sweep.pooled.dice, "Jaccard": sweep.pooled.jaccard},
        best=result.best_threshold,
        marks={"now": threshold},
        title=f"Pooled Dice and Jaccard vs threshold (best Dice at {result.best_threshold:.2f})",
    ),
    key="eval_curve",
)
right.plotly_chart(
    charts.reliability_figure(
        calibration,
        title=f"Reliability over {calibration.n_bins} bins (ECE {calibration.ece:.3f})",
    ),
    key="eval_reliability",
)
st.dataframe(
    result.per_image,
    hide_index=True,
    column_config={
        name: st.column_config.NumberColumn(format="%.3f")
        for name in ("dice", "jaccard", "precision", "recall", "detection_f1", "pq", "aji")
    },
)
st.subheader(f"The {worst_k} images with the lowest Dice")
worst = result.worst(worst_k)
for row in worst:
    analysis = state.sample_analysis(bundle, sample_set, row["id"])
    view = analysis.view(threshold)
    left, middle, right = st.columns([2, 2, 1])
    left.image(analysis.picture, caption=row["id"])
    middle.image(view.overlay, caption=f"Overlay at {threshold:.2f}")
    right.metric("Dice", f"{row['dice']:.3f}")
    right.metric("Jaccard", f"{row['jaccard']:.3f}")
    if right.button("Open in Predict", key=f"open_{row['id']}"):
        state.request_predict(source, split_name, row["id"])
        st.switch_page("pages/predict.py")
widgets.overlay_legend(truth=True)
