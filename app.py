"""Streamlit entry point: ``streamlit run app.py``.

Builds the navigation only; each page lives in ``pages/`` and calls into ``segcore``.
"""

import streamlit as st

st.set_page_config(page_title="Nuclei segmentation explorer", page_icon="🔬", layout="wide")

navigation = st.navigation([st.Page("pages/home.py", title="Home", icon="🏠", default=True)])
navigation.run()
