"""Streamlit glue shared by the app's pages (``pages/``): state, cached resources, charts.

The pages hold widgets and layout only; they call :mod:`segcore` through the helpers here.
``appkit.charts`` builds plotly figures and imports neither Streamlit nor TensorFlow;
``appkit.state`` and ``appkit.widgets`` use Streamlit. Nothing here imports TensorFlow at
import time: the model is loaded in the background from the server's first page run
(:func:`appkit.state.preload`, :mod:`appkit.runtime`), without TensorFlow when a gated fast
runtime of it is cached.
"""
