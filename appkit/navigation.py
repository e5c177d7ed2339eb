"""The app's pages, and the page header (configuration + menu) every page starts with.

The menu is drawn by :func:`page_header` with ``st.page_link`` rather than by
``st.navigation``'s own sidebar, which ``app.py`` hides. The reason: Streamlit treats a
``pages/`` folder beside the entry script as its older "pages directory" mode until
``st.navigation`` has run once in the server process, so when the first request after a start
is a page URL (a bookmark such as ``/predict``) Streamlit runs that page file alone, without
``app.py``. Because every page sets its own configuration and menu, it looks and works the same
either way (and Streamlit's auto-generated menu of file names is hidden by
``client.showSidebarNavigation = false`` in ``.streamlit/config.toml``).
"""

from __future__ import annotations

import streamlit as st

from appkit import script_runs, state

MENU = (
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/predict.py", "Predict", ":material/biotech:"),
    ("pages/slides.py", "Slides", ":material/gallery_thumbnail:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/models.py", "Models", ":material/inventory_2:"),
)
"""``(file, title, icon)`` of every page, in menu order; the first is the default."""


def pages() -> list:
    """The ``st.Page`` entries of the app, in menu order (Home first and default)."""
    return [
        st.Page(path, title=title, icon=icon, default=index == 0)
        for index, (path, title, icon) in enumerate(MENU)
    ]


def run() -> None:
    """What ``app.py`` does: registers the pages (menu hidden) and runs the selected one, then
    starts loading the active model in the background (:func:`appkit.state.preload`; after the
    page, so that the server's first page — the landing page — is not slowed by it)."""
    st.navigation(pages(), position="hidden").run()
    state.preload()


def page_header() -> None:
    """The browser title, icon and wide layout, and the sidebar menu; first call of a page (and
    the start of each full run for :func:`appkit.state.begin_page_run`).

    Also switches off Streamlit's per-run Keras reset, once per process
    (:func:`appkit.script_runs.keep_keras_state`)."""
    script_runs.keep_keras_state()
    st.set_page_config(
        page_title="Nuclei segmentation explorer", page_icon=":material/biotech:", layout="wide"
    )
    state.begin_page_run()
    with st.sidebar:
        for path, title, icon in MENU:
            st.page_link(path, label=title, icon=icon)
        st.divider()
