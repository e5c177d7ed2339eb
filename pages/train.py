"""Train: start a training in the background (fine-tuning the default with its own recipe, or
from scratch), watch it live, stop it, use its model.

UI only: ``appkit.training`` builds and checks the settings and estimates how long they take,
``appkit.training_runs`` says which run to show and how its status reads;
``segcore.training.jobs`` runs the training as its own process (it survives reloads and closed
browsers), started through ``appkit.access`` (the dataset must lie inside a data root; no
training in viewer mode). The live part reads the run folder every two seconds and redraws the
whole page when a run starts, changes state or ends.
"""

import streamlit as st

from appkit import (
    access,
    charts,
    dataset_upload,
    navigation,
    state,
    training,
    training_runs,
    widgets,
)
from segcore.errors import SegcoreError
from segcore.training import jobs
from segcore.training.devices import training_device_label
from segcore.training.locks import TrainingBusyError
from segcore.training.runs import RunDir

navigation.page_header()
st.title("Train")
widgets.active_model_caption()
st.caption(f"Trains on: **{training_device_label()}**")
training_runs.remember_run_state()

running = jobs.running_job()
with st.expander(
    "Add a dataset folder from a zip", key=dataset_upload.SECTION_KEY, on_change="rerun"
) as upload_section:
    if upload_section.open:  # drawn only when open
        dataset_upload.render()
if access.viewer_mode():
    st.info(access.VIEWER_NOTE, icon=":material/visibility:")
else:
    st.markdown("**New training**")
    preset = st.radio("Preset", training.presets(), key=training.PRESET_KEY, horizontal=True)
    key = training.PRESET_IDS[preset]
    defaults = training.preset_config(preset)
    if preset in training.RECIPE_PRESETS:
        st.caption(training.recipe_summary(defaults))
    data_default, data_note = training.dataset_default(preset)
    data = st.text_input(
        "Dataset",
        value=data_default,
        key=f"train_data_{key}",
        placeholder="data/my-dataset",
        help="'synthetic' for the embedded synthetic set, or a dataset folder. "
        + access.folder_help(),
    )
    if data_note:
        st.caption(data_note)
    if preset in training.RECIPE_PRESETS:
        choices = training.start_choices()
        row = st.columns([3, 1], vertical_alignment="bottom")
        start_from = row[0].selectbox(
            "Start from",
            list(choices),
            format_func=choices.get,
            key=f"train_start_{key}",
            help="The bundle whose weights the run starts from; the page compares it with the "
            "new model on your validation tiles when the run ends.",
        )
        epochs = row[1].number_input("Epochs", 1, 1000, defaults.epochs, key=f"train_epochs_{key}")
        values = training.FormValues(data=data, epochs=int(epochs), start_from=start_from)
    else:
        row = st.columns(4)
        epochs = row[0].number_input("Epochs", 1, 1000, 10, key=f"train_epochs_{key}")
        batch_size = row[1].number_input("Batch size", 1, 256, defaults.batch_size)
        image_size = row[2].number_input("Image size", 32, 1024, defaults.image_size, step=16)
        lr = row[3].number_input("Learning rate", 1e-6, 1.0, defaults.lr, format="%.0e")
        row = st.columns(4)
        crops = row[0].number_input(
            "Crops per epoch",
            0,
            100_000,
            0,
            help="Random crops drawn per epoch; 0 draws one per training image.",
        )
        loss = row[1].selectbox("Loss", ["bce", "bce+dice"], index=0)
        backbone = row[2].selectbox(
            "Backbone weights",
            ["none", "imagenet"],
            help="'imagenet' needs the Keras ResNet50 weights cached or an internet connection; "
            "'none' starts from random weights.",
        )
        augment = row[3].checkbox("Augmentation", value=True)
        values = training.FormValues(
            data=data,
            epochs=int(epochs),
            batch_size=int(batch_size),
            image_size=int(image_size),
            lr=float(lr),
            crops=int(crops),
            loss=loss,
            backbone=backbone,
            augment=bool(augment),
        )
    draft = training.draft(preset, values)
    if draft.error:
        st.warning(f"These settings cannot start: {draft.error}")
    for note in draft.notes:
        st.warning(note, icon=":material/info:")
    if draft.estimate:
        st.caption(draft.estimate)
    busy = training_runs.busy_note(running)
    if busy:
        st.caption(busy)
    if st.button("Start training", type="primary", disabled=running is not None):
        try:
            run = training.start(preset, values)
        except TrainingBusyError as exc:
            widgets.show_error(exc, "Not started")
        except SegcoreError as exc:
            widgets.show_error(exc, "Invalid training settings")
        else:
            st.toast(f"Started {run.run_id}")
            st.rerun()


@st.fragment(run_every=2)
def live() -> None:
    """The running (or watched, or last) run: progress, curves, preview, log; refreshed every
    2 s. When a run starts, changes state or ends, the whole page is drawn again."""
    if training_runs.run_state_changed():
        st.rerun()
    run, why = training_runs.shown_run()
    if run is None:
        st.info("No training has run yet. Start one above; it keeps running if you close the page.")
        return
    status = training_runs.read_status(run)
    head = st.columns([3, 1], vertical_alignment="center")
    head[0].markdown(training_runs.headline(run, status))
    if why == "latest":
        st.caption("The most recent run in the runs folder.")
    if training_runs.is_active(status):
        if not access.viewer_mode() and head[1].button("Stop", key=f"stop_{run.run_id}"):
            access.stop_training(run.path)
            st.toast("Stop requested: the run saves and stops after its current batch.")
        fraction, text = training_runs.progress(status)
        st.progress(fraction, text=text)
    ended = training_runs.outcome(status)
    if ended is not None:
        kind, text = ended
        {"success": st.success, "warning": st.warning, "error": st.error}[kind](text)
        rows = training_runs.comparison_rows(status.get("comparison"))
        if rows:
            st.markdown("**Before and after**")
            st.dataframe(rows, hide_index=True, column_config=training_runs.comparison_columns())
            st.caption(training_runs.comparison_caption(status["comparison"]))
    rows = run.read_metrics()
    if rows:
        named, dice_keys = training_runs.chart_rows(rows, training_runs.image_size_of(run))
        curves = st.columns(2)
        curves[0].plotly_chart(
            charts.training_figure(named, ["loss", "val_loss"], title="Loss"),
            key=f"loss_{run.run_id}",
        )
        curves[1].plotly_chart(
            charts.training_figure(named, dice_keys, title="Dice per epoch"),
            key=f"dice_{run.run_id}",
        )
        st.caption(
            "Per-epoch figures: soft Dice of the batches, pooled Dice on validation tiles at "
            "0.5 and, with validation sources, their Dice at their threshold. The run's "
            "validation Dice is measured once, at the end, on the full-size validation images."
        )
    preview = run.latest_preview()
    if preview is not None:
        st.image(str(preview), caption=f"{preview.stem}: image | ground truth | prediction")
    with st.expander("Log (last 40 lines)"):
        st.code(run.log_tail(40) or "(empty)", language=None)


live()

st.subheader("Runs")
all_jobs = jobs.list_jobs()
if not all_jobs:
    st.caption("No runs yet in this runs folder.")
for job in all_jobs:
    run = RunDir(job["path"])
    cells = st.columns([3, 2, 1, 2], vertical_alignment="center")
    cells[0].markdown(f"**{job['run_id']}** · {job['state']}")
    cells[1].markdown(training_runs.run_figure(job))
    if cells[2].button("Watch", key=f"watch_{job['run_id']}"):
        training_runs.watch(job["path"])
        st.rerun()
    if (
        run.has_bundle()
        and not access.viewer_mode()
        and cells[3].button("Use this model", key=f"use_{job['run_id']}")
    ):
        try:
            state.switch_model(str(run.bundle_dir))
        except SegcoreError as exc:
            widgets.show_error(exc, "Cannot switch")
        else:
            st.toast(f"The app now uses {job['run_id']}")
            st.rerun()
