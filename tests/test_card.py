"""The model card schema: figures per split, the format-1 migration, one writer for all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.bundles.card import CARD_FORMAT_VERSION, VALIDATION, ModelCard, SplitFigures
from segcore.data.datasets import FileSampleSet
from segcore.data.images import encode_png
from segcore.data.layouts import FilePair
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.evaluation.evaluate import evaluate
from segcore.metrics.counts import ConfusionCounts, confusion_counts
from tests.conftest import REPO

FOUR = {"dice": 0.8, "jaccard": 0.667, "precision": 0.75, "recall": 0.857}

# The metrics of a format-1 card as training and `evaluate --update-card` wrote them.
V1_CARD = {
    "name": "old",
    "architecture": {"aspp_filters": 256},
    "backbone_weights": "imagenet",
    "threshold": 0.56,
    "dataset": {"data": "../data/monuseg"},
    "training": {"command": "python -m segcore train"},
    "created": "2026-11-27T20:44:19+00:00",
    "metrics": {
        "validation": {
            "threshold": 0.56,
            **{k: v for k, v in FOUR.items()},
            **{f"mean_{k}": v - 0.01 for k, v in FOUR.items()},
            "at_0.5": {"dice": 0.79},
            "images": 4,
        },
        "history_last": {"epoch": 9, "loss": 0.53},
        "test": {
            "data": "../data/monuseg",
            "images": 14,
            "threshold": 0.56,
            "pooled": FOUR,
            "mean": FOUR,
            "best_threshold_on_this_split": 0.62,
            "command": "python -m segcore evaluate --split test --update-card",
        },
    },
}


def test_format_1_cards_are_migrated():
    card = ModelCard.from_dict(V1_CARD)
    assert card.format_version == CARD_FORMAT_VERSION == 2
    validation, test = card.figures(VALIDATION), card.figures("test")
    assert validation.pooled == FOUR and validation.mean["dice"] == pytest.approx(0.79)
    assert validation.images == 4 and validation.data == "../data/monuseg"
    assert test.pooled == FOUR and test.best_threshold == 0.62 and test.images == 14
    assert "evaluate" in test.command
    assert card.backbone_weights == "imagenet" and "backbone_weights" not in card.to_dict()
    assert card.training["history_last"] == {"epoch": 9, "loss": 0.53}
    assert card.extra == {}
    assert ModelCard.from_json(card.to_json()) == card  # written as format 2, read back alike


def test_the_shipped_default_card_has_validation_and_test_figures():
    card = ModelCard.from_json((REPO / "weights" / "default" / "card.json").read_text())
    assert card.format_version == CARD_FORMAT_VERSION
    assert card.figures("validation").threshold == card.threshold
    assert 0 < card.figures("test").pooled["dice"] < 1


def test_figures_are_keyed_by_split_and_pixel_size():
    native = SplitFigures(split="test", threshold=0.5, images=2, pooled=FOUR, mean=FOUR)
    at_20x = SplitFigures(
        split="test", threshold=0.5, images=2, pooled=FOUR, mean=FOUR, pixel_size=0.5
    )
    card = ModelCard(name="m").with_figures(native).with_figures(at_20x)
    assert set(card.metrics) == {"test", "test@0.5um"}
    assert card.figures("test") is native and card.figures("test", 0.5) is at_20x
    assert card.figures("test", 0.25) is None and card.figures("validation") is None
    better = SplitFigures(split="test", threshold=0.4, images=2, pooled=FOUR, mean=FOUR)
    assert card.with_figures(better).figures("test") is better  # replaced, not added
    assert json.loads(card.to_json())["metrics"]["test@0.5um"]["pixel_size"] == 0.5


@pytest.mark.parametrize(
    "changes",
    [
        {"split": ""},
        {"threshold": 1.2},
        {"images": -1},
        {"pooled": {"dice": 0.5}},
        {"mean": {**FOUR, "dice": "high"}},
        {"pixel_size": 0},
        {"best_threshold": 2.0},
    ],
)
def test_invalid_figures_raise_config_error(changes):
    fields = {"split": "test", "threshold": 0.5, "images": 1, "pooled": FOUR, "mean": FOUR}
    with pytest.raises(ConfigError):
        SplitFigures(**{**fields, **changes})


def test_a_card_refuses_figures_under_another_key():
    figures = SplitFigures(split="test", threshold=0.5, images=1, pooled=FOUR, mean=FOUR)
    with pytest.raises(ConfigError, match="metrics"):
        ModelCard(name="m", metrics={"validation": figures})


def test_figures_from_an_evaluation_match_the_counts(tmp_path):
    rng = np.random.default_rng(0)
    masks = [(rng.random((24, 24)) < 0.3).astype(np.uint8) for _ in range(3)]
    probs = {i: np.clip(m * 0.7 + rng.random((24, 24)) * 0.4, 0, 1) for i, m in enumerate(masks)}
    pairs = []
    for i, mask in enumerate(masks):
        image = np.full((24, 24, 3), i, np.uint8)  # the model reads the image's id off it
        (tmp_path / f"{i}.png").write_bytes(encode_png(image))
        (tmp_path / f"{i}_mask.png").write_bytes(encode_png(mask * 255))
        pairs.append(FilePair(str(i), tmp_path / f"{i}.png", tmp_path / f"{i}_mask.png"))

    def model(batch):
        ids = [round(float(x[0, 0, 0]) * 255) for x in batch]
        return np.stack([np.pad(probs[i], (0, 8))[..., None] for i in ids])  # bottom/right pad

    plain = PreprocessConfig(equalize="none", blur_kernel=0)
    result = evaluate(model, FileSampleSet(pairs), plain, tile_size=32, overlap=0)
    at_04 = SplitFigures.from_evaluation(result, split="val", threshold=0.4, data="x")
    pooled = sum(
        (confusion_counts(m, probs[i] >= 0.4) for i, m in enumerate(masks)),
        ConfusionCounts(0, 0, 0, 0),
    )
    assert at_04.threshold == 0.4 and at_04.images == 3 and at_04.data == "x"
    assert at_04.pooled["dice"] == pytest.approx(pooled.dice)
    assert at_04.pooled["recall"] == pytest.approx(pooled.recall)
    own = SplitFigures.from_evaluation(result, split="val")
    assert own.threshold == result.threshold and own.pooled["dice"] == result.pooled["dice"]
    assert own.best_threshold == result.best_threshold


def test_a_run_has_a_bundle_once_both_files_exist(tmp_path):
    from segcore.bundles.store import is_bundle
    from segcore.training.runs import RunDir

    run = RunDir(tmp_path / "run")
    assert not run.has_bundle()
    run.bundle_dir.mkdir(parents=True)
    (run.bundle_dir / "card.json").write_text(ModelCard(name="m").to_json())
    assert not run.has_bundle() and not is_bundle(run.bundle_dir)  # model.keras still missing
    (run.bundle_dir / "model.keras").write_bytes(b"weights")
    assert run.has_bundle()
