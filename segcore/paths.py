"""Where the repository is: the root that the default folders (``weights/``, ``runs/``,
``data/``) are found under when segcore runs from a checkout."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding ``segcore/``, ``weights/`` and ``app.py``."""
