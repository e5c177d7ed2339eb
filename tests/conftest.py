"""Shared fixtures. Real-data tests read ../shared/data/monuseg and skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs the reference runtime unless a test asks for another: figures compared with
# the library stay exact, and no test converts a model it did not mean to.
os.environ["SEGCORE_RUNTIME"] = "keras"

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MONUSEG = Path(os.environ.get("SEGCORE_MONUSEG", REPO.parent / "shared" / "data" / "monuseg"))


@pytest.fixture(scope="session")
def monuseg() -> Path:
    """The MoNuSeg folder in ../shared (never copied into the repository)."""
    if not (MONUSEG / "train" / "images").is_dir():
        pytest.skip(f"real MoNuSeg tiles not available at {MONUSEG} (set SEGCORE_MONUSEG)")
    return MONUSEG


def write_png(path: Path, array: np.ndarray) -> Path:
    """Writes a uint8/uint16 array (RGB order for colour) as PNG, for test fixtures."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = array[..., ::-1]
    assert cv2.imwrite(str(path), np.ascontiguousarray(array))
    return path


def make_pairs_dataset(
    root: Path, n: int = 6, size: int = 48, seed: int = 0, mask_suffix: str = ""
) -> Path:
    """Writes ``n`` random image/mask pairs in the images/ + masks/ layout."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = (rng.random((size, size)) > 0.7).astype(np.uint8) * 255
        write_png(root / "images" / f"img_{i:03d}.png", image)
        write_png(root / "masks" / f"img_{i:03d}{mask_suffix}.png", mask)
    return root


TINY_MODEL = {"aspp_filters": 8, "aspp_rates": [2, 4], "low_level_filters": 8, "decoder_filters": 8}
"""The narrow-headed DeepLabV3+ the training tests train (seconds per epoch on 2 cores)."""


def tiny_config(data, run_dir, **overrides):
    """A :class:`~segcore.training.config.TrainConfig` of 2 epochs of 4 crops of 64² on
    :data:`TINY_MODEL`, for the training tests; ``overrides`` replace any field."""
    from segcore.training.config import TrainConfig

    values = dict(
        data=str(data),
        epochs=2,
        batch_size=2,
        image_size=64,
        crops_per_epoch=4,
        model=TINY_MODEL,
        preview_tiles=2,
        val_fraction=0.2,
        test_fraction=0.1,
        run_dir=None if run_dir is None else str(run_dir),
    )
    values.update(overrides)
    return TrainConfig(**values)
