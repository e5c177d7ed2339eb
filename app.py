"""Streamlit entry point: ``streamlit run app.py``.

Builds the navigation over the pages in ``pages/`` and shows the active model in the sidebar.
Nothing here imports TensorFlow: the model is loaded by the first page that needs it.
"""

import streamlit as st

st.set_page_config(page_title="Nuclei segmentation explorer", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/predict.py", title="Predict", icon="🔬"),
    st.Page("pages/evaluate.py", title="Evaluate", icon="📊"),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/models.py", title="Models", icon="📦"),
]

navigation = st.navigation(PAGES)
navigation.run()
