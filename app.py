"""Streamlit entry point: ``streamlit run app.py``.

Registers the pages in ``pages/`` (``appkit.navigation``) and runs the selected one; each page
draws the menu itself. Nothing here imports TensorFlow: the first page run of the server starts
loading the model in the background (``appkit.state.preload``) — its cached fast runtime
without TensorFlow where there is one, else the Keras model.
"""

from appkit import navigation

navigation.run()
