"""Streamlit entry point: ``streamlit run app.py``.

Registers the pages in ``pages/`` (``appkit.navigation``) and runs the selected one; each page
draws the menu itself. Nothing here imports TensorFlow: the model is loaded by the first page
that needs it.
"""

from appkit import navigation

navigation.run()
