"""Home: what the app does and which model is active. Does not import TensorFlow."""

import streamlit as st

import segcore
from appkit import navigation, widgets

navigation.page_header()
widgets.active_model_caption()
st.title("Nuclei segmentation in H&E histopathology")
st.caption(f"segcore {segcore.__version__} · DeepLabV3+ on a ResNet50 backbone")
st.markdown(
    """
Explore a nucleus segmentation model on H&E tiles: upload an image with its ground-truth mask,
or pick a sample, then move the threshold and watch Dice and Jaccard follow. Open a whole slide,
explore any region of it and segment all its tissue into QuPath-ready nuclei.
"""
)
left, right = st.columns(2)
with left:
    st.page_link(
        "pages/predict.py",
        label="**Predict** — one image, two thresholds, live metrics",
        icon=":material/biotech:",
    )
    st.page_link(
        "pages/slides.py",
        label="**Slides** — a whole slide: explore a region, segment it all",
        icon=":material/gallery_thumbnail:",
    )
    st.page_link(
        "pages/evaluate.py",
        label="**Evaluate** — a whole dataset split",
        icon=":material/analytics:",
    )
with right:
    st.page_link(
        "pages/train.py",
        label="**Train** — a new model in the background",
        icon=":material/model_training:",
    )
    st.page_link(
        "pages/models.py",
        label="**Models** — bundles, cards, the Hub",
        icon=":material/inventory_2:",
    )
st.markdown(
    """
With no set-up the samples are real tissue — crops of MoNuSeg test tiles shipped in `samples/`
— and the model is the committed default bundle (`weights/default`, trained on MoNuSeg). The
synthetic H&E set, or a dataset folder of a supported layout under the server's data roots, can
be chosen on the Predict and Evaluate pages.
"""
)
