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


# --- no server path in the browser ------------------------------------------------------------

SERVER_PATHS = tuple(
    dict.fromkeys(str(path) for path in (REPO, REPO.resolve(), MONUSEG.resolve()) if path.is_dir())
)
"""Absolute folders no browser may be shown: the repository (and its data roots: ``samples/``,
``data/``) and the real MoNuSeg tiles. Browser messages name files relative to them
(:func:`appkit.access.browser_message`); the server log keeps the full path."""

HIDDEN_FIELDS = {"stack_trace"}
"""Proto fields a browser is not shown: tracebacks stay in the server log
(``client.showErrorDetails = "none"`` in ``.streamlit/config.toml``)."""


def proto_texts(message, skip=HIDDEN_FIELDS):
    """Every string (and bytes value) of a protobuf message, nested messages included."""
    for field, value in message.ListFields():
        if field.name in skip:
            continue
        values = value if field.is_repeated else [value]
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                values = [entry for pair in value.items() for entry in pair]
                yield from (v for v in values if isinstance(v, str | bytes))
                values = [v for v in values if hasattr(v, "ListFields")]
            for item in values:
                yield from proto_texts(item, skip)
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            yield from values


def server_paths_shown(at) -> list[str]:
    """Lines of what ``at``'s last run drew (every element and block: text, labels, help,
    options, defaults, tables' bytes) that hold one of :data:`SERVER_PATHS`."""
    found = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "ListFields"):
            continue
        for text in proto_texts(proto):
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            found += [
                f"{getattr(node, 'type', type(node).__name__)}: {line.strip()[:300]}"
                for line in text.splitlines()
                if any(path in line for path in SERVER_PATHS)
            ]
    return found


@pytest.fixture(autouse=True)
def no_server_path_in_the_browser(request, monkeypatch):
    """Fails a test whose Streamlit pages (any ``AppTest``, any of its runs) showed the
    repository's absolute path, or MoNuSeg's, in anything a browser draws; a test that asks
    for :func:`server_paths_allowed` (one that checks this very check) is left alone."""
    import sys

    testing = sys.modules.get("streamlit.testing.v1.app_test")
    if testing is None or "server_paths_allowed" in request.fixturenames:
        yield  # this test module does not use AppTest, or the test opts out
        return
    shown: list[str] = []
    real_run = testing.AppTest._run

    def run_and_look(self, *args, **kwargs):
        result = real_run(self, *args, **kwargs)
        shown.extend(line for line in server_paths_shown(result) if line not in shown)
        return result

    monkeypatch.setattr(testing.AppTest, "_run", run_and_look)
    yield
    if shown:
        pytest.fail(
            "a page showed a server path to the browser:\n" + "\n".join(shown[:20]),
            pytrace=False,
        )


@pytest.fixture
def server_paths_allowed():
    """Asked for by a test whose pages may show server paths (the test of the check itself)."""
