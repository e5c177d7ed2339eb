"""Train: start a training in the background, watch it live, stop it, use its model.

UI only: ``segcore.training.jobs`` runs the training as its own process (it survives reloads and
closed browsers), started through ``appkit.access`` (the dataset must lie inside a data root; no
training in viewer mode); this page reads the run folder every two seconds.
"""

import streamlit as st

from appkit import access, charts, navigation, state, widgets
from segcore.data import samples
from segcore.errors import SegcoreError
from segcore.training import jobs
from segcore.training.config import TrainConfig
from segcore.training.devices import training_device_label
from segcore.training.locks import TrainingBusyError
from segcore.training.runs import ACTIVE_STATES, RunDir, progress_of

navigation.page_header()
st.title("Train")
widgets.active_model_caption()
st.caption(f"Trains on: **{training_device_label()}**")

running = jobs.running_job()
defaults = TrainConfig()
if access.viewer_mode():
    st.info(access.VIEWER_NOTE, icon=":material/visibility:")
    start = False
else:
    with st.form("train_form"):
        st.markdown("**New training**")
        data = st.text_input(
            "Dataset",
            value=samples.SYNTHETIC,
            help="'synthetic' for the embedded synthetic set, or a dataset folder. "
            + access.folder_help(),
        )
        row = st.columns(4)
        epochs = row[0].number_input("Epochs", 1, 1000, 10)
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
        start = st.form_submit_button(
            "Start training", type="primary", disabled=running is not None
        )
if start:
    try:
        config = TrainConfig(
            data=data.strip() or samples.SYNTHETIC,
            epochs=int(epochs),
            batch_size=int(batch_size),
            image_size=int(image_size),
            lr=float(lr),
            loss=loss,
            augment=bool(augment),
            crops_per_epoch=int(crops) or None,
            backbone_weights=None if backbone == "none" else backbone,
        )
        run = access.start_training(config)
    except TrainingBusyError as exc:
        widgets.show_error(exc, "Not started")
    except SegcoreError as exc:
        widgets.show_error(exc, "Invalid training settings")
    else:
        st.session_state["watched_run"] = str(run.path)
        st.toast(f"Started {run.run_id}")
        st.rerun()


@st.fragment(run_every=2)
def live() -> None:
    """The running (or last watched) run: progress, curves, preview, log; refreshed every 2 s."""
    job = jobs.running_job()
    watched = st.session_state.get("watched_run")
    run = job if job is not None else (RunDir(watched) if watched else None)
    if run is None or not run.exists():
        st.info("No training is running. Start one above; it keeps running if you close the page.")
        return
    status = run.read_status()
    state_name = status.get("state")
    head = st.columns([3, 1], vertical_alignment="center")
    head[0].markdown(f"**{run.run_id}** — {state_name} on {status.get('device') or '…'}")
    if state_name in ACTIVE_STATES:
        if not access.viewer_mode() and head[1].button("Stop", key=f"stop_{run.run_id}"):
            access.stop_training(run.path)
            st.toast("Stop requested: the run saves and stops after its current batch.")
        fraction, text = progress_of(status)
        st.progress(fraction, text=text)
    elif state_name == "failed":
        reason = access.browser_message(f"{status.get('reason')}\n\n{status.get('hint') or ''}")
        st.error(f"Failed: {reason}")
    elif state_name == "stopped":
        st.warning(f"Stopped after epoch {status.get('epoch')}: {status.get('reason') or ''}")
    elif state_name == "completed":
        st.success(
            f"Completed: validation Dice {status.get('val_dice', float('nan')):.3f} at threshold "
            f"{status.get('threshold', float('nan')):.2f}"
        )
    rows = run.read_metrics()
    if rows:
        curves = st.columns(2)
        curves[0].plotly_chart(
            charts.training_figure(rows, ["loss", "val_loss"], title="Loss"),
            key=f"loss_{run.run_id}",
        )
        curves[1].plotly_chart(
            charts.training_figure(
                rows, ["dice_coef", "val_dice_coef", "val_pooled_dice"], title="Dice"
            ),
            key=f"dice_{run.run_id}",
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
    metrics = job.get("metrics") or {}
    cells = st.columns([3, 1, 1, 2], vertical_alignment="center")
    cells[0].markdown(f"**{job['run_id']}** · {job['state']}")
    cells[1].markdown(
        f"val Dice {metrics['val_pooled_dice']:.3f}" if "val_pooled_dice" in metrics else "—"
    )
    if cells[2].button("Watch", key=f"watch_{job['run_id']}"):
        st.session_state["watched_run"] = job["path"]
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
