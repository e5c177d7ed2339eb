"""Models: the bundles in weights/ and runs/, their cards, the active one, and the Hub.

UI only: ``segcore.analysis.catalog`` lists and switches; ``segcore.bundles`` reads cards. In
viewer mode (``appkit.access``) the page is read-only.
"""

import streamlit as st

from appkit import access, navigation, state, widgets
from segcore.analysis import catalog
from segcore.bundles.refs import HF_SCHEME, hub_ref
from segcore.errors import SegcoreError

navigation.page_header()
st.title("Models")
widgets.active_model_caption()
active = state.active_ref()
problems: list = []
entries = catalog.available_bundles(problems=problems)
for folder, message in problems:
    st.warning(f"{catalog.display_path(folder)}: not usable — {access.browser_message(message)}")

st.markdown(
    f"**Active:** `{access.browser_message(active)}` — used by Predict and Evaluate in every "
    "session."
)
viewer = access.viewer_mode()
if viewer:
    st.info(access.VIEWER_NOTE, icon=":material/visibility:")
if active.startswith(HF_SCHEME):
    st.caption("This model comes from the Hugging Face Hub cache.")

for entry in entries:
    card = entry.card
    is_active = catalog.same_bundle(entry.ref, active)
    test, validation = card.figures("test"), card.figures("validation")
    label = catalog.describe_ref(entry.ref)
    title = f"{card.name} · {entry.source}: {label}{' (active)' if is_active else ''}"
    icon = ":material/check_circle:" if is_active else ":material/deployed_code:"
    with st.expander(title, expanded=is_active, icon=icon):
        cells = st.columns(4)
        cells[0].metric("Threshold", f"{card.threshold:.2f}")
        if validation is not None:
            cells[1].metric("Validation Dice", f"{validation.pooled['dice']:.3f}")
        if test is not None:
            cells[2].metric("Test Dice", f"{test.pooled['dice']:.3f}")
        cells[3].metric("Input size", f"{card.input_size}²")
        if not (is_active or viewer) and st.button("Use this model", key=f"use_{entry.ref}"):
            try:
                state.switch_model(entry.ref)
            except SegcoreError as exc:
                widgets.show_error(exc, "Cannot switch")
            else:
                st.rerun()
        widgets.model_card(card, entry.path)
        if is_active:
            widgets.runtime_gate_table(entry.path, card)
        widgets.card_json(card)

if not viewer:
    st.subheader("Pull from the Hugging Face Hub")
    with st.form("hub_form"):
        hub_text = st.text_input(
            "Repository and revision",
            placeholder="org/name@0123456789abcdef0123456789abcdef01234567",
            help="A commit hash pins the exact files; a branch name (e.g. main) follows the repo.",
        )
        pull = st.form_submit_button("Download and use")
    if pull:
        try:
            ref = hub_ref(hub_text)
            with st.spinner(f"Fetching {ref}…"):
                card = state.switch_model(ref)
        except SegcoreError as exc:
            widgets.show_error(exc, "Cannot pull that bundle")
        else:
            st.success(f"Active model is now {card.name} ({ref}).")
