"""The app's pages, and a guard that every page runs under ``app.py``'s navigation.

Streamlit treats a ``pages/`` folder beside the entry script as its older "pages directory"
mode until ``st.navigation`` has been called once in the server process. So when the first
request after a start is a page URL (a bookmark such as ``/predict``), Streamlit runs that page
file alone — without ``app.py``, hence without our navigation, page titles and wide layout.
:func:`require_entrypoint`, called at the top of every page, notices that and reruns the app
through ``app.py`` (calling ``st.navigation`` turns the old mode off for the process).
"""

from __future__ import annotations

import threading

import streamlit as st

_run = threading.local()


def pages() -> list:
    """The ``st.Page`` entries of the app, in menu order (Home first and default)."""
    return [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/predict.py", title="Predict", icon=":material/biotech:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/models.py", title="Models", icon=":material/inventory_2:"),
    ]


def run() -> None:
    """Builds the navigation and runs the selected page (what ``app.py`` does)."""
    navigation = st.navigation(pages())
    _run.entrypoint = True
    try:
        navigation.run()
    finally:
        _run.entrypoint = False


def require_entrypoint() -> None:
    """Reruns through ``app.py`` when a page was started without it (see the module doc)."""
    if not getattr(_run, "entrypoint", False):
        st.navigation(pages(), position="hidden")
        st.rerun()
