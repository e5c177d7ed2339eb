"""Streamlit entry point: ``streamlit run app.py``.

Builds the navigation over the pages in ``pages/`` (``appkit.navigation``) and runs the
selected one. Nothing here imports TensorFlow: the model is loaded by the first page that
needs it.
"""

import streamlit as st

from appkit import navigation

st.set_page_config(page_title="Nuclei segmentation explorer", page_icon="🔬", layout="wide")
navigation.run()
