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


def test_importing_segcore_does_not_load_tensorflow():
    code = (
        "import sys, segcore, segcore.images, segcore.preprocessing, segcore.datasets, "
        "segcore.metrics, segcore.tiling, segcore.model_config, segcore.training, "
        "segcore.runs, segcore.jobs, segcore.locks, segcore.bundle, segcore.hub, "
        "segcore.inference, segcore.evaluation, segcore.synthetic, segcore.visualize; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
