"""Home page: what the project holds so far. Does not import TensorFlow."""

import streamlit as st

import segcore

st.title("Nuclei segmentation in H&E histopathology")
st.caption(f"segcore {segcore.__version__}")
st.markdown(
    """
A DeepLabV3+ network on a ResNet50 backbone for binary nucleus segmentation, with the
preprocessing it was designed with, Dice and Jaccard metrics, dataset loaders and a synthetic
H&E data set. The library is `segcore`; this app will grow pages for prediction with a live
threshold slider, evaluation, training and model management.

**Available now** (from the command line and Python):

- `python -m segcore synth --out data/synthetic` — write the synthetic H&E nuclei data set
  (760 tiles of 256×256, seeded and deterministic).
- `segcore.build_deeplabv3plus()` — the model; any input size that is a multiple of 16.
- `segcore.preprocessing`, `segcore.metrics`, `segcore.datasets`, `segcore.pipeline`.
"""
)
