"""The tree is ruff-clean (lint and format), as configured in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO


def ruff() -> list[str]:
    """``python -m ruff`` from this interpreter's environment (no PATH needed)."""
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed; install requirements-test.txt")
    return [sys.executable, "-m", "ruff"]


def test_ruff_check():
    result = subprocess.run([*ruff(), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = subprocess.run(
        [*ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pages_hold_no_tensorflow_import():
    """Pages reach TensorFlow only through segcore (the landing page must not load it)."""
    for page in [*sorted((REPO / "pages").glob("*.py")), REPO / "app.py"]:
        text = page.read_text()
        assert "import tensorflow" not in text and "import keras" not in text, page


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = readme.split("Install the test dependencies and run every test", 1)[1]
    command = block.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    assert command in (REPO / ".ci" / "run").read_text()
    assert "python -m pytest" in command
