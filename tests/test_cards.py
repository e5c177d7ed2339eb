"""segcore.analysis.cards: a model card as the Models page's tables (no Streamlit needed)."""

from __future__ import annotations

from segcore.analysis import cards
from segcore.bundles.card import ModelCard, SplitFigures

FIGURES = {"dice": 0.80761, "jaccard": 0.6773, "precision": 0.7239, "recall": 0.9133}


def card(**changes) -> ModelCard:
    values = {
        "name": "demo-v1",
        "pixel_size": 0.25,
        "threshold": 0.46,
        "preprocess": {"equalize": "clahe", "clahe_clip_limit": 4.0},
        "instances": {"min_area_um2": 8.0, "split_depth_um": 0.15, "fill_holes": True},
        "dataset": {"data": "monuseg", "sizes": {"train": 26, "val": 4, "test": 14}},
        "training": {"epochs_completed": 12, "best_epoch": 9, "time_s": 1684, "device": "CPU"},
        "licence": "CC BY-NC-SA 4.0",
        "created": "2026-12-01T09:55:11+00:00",
        "versions": {"segcore": "0.1.0"},
        "model_sha256": "ab" * 32,
        **changes,
    }
    return ModelCard(**values)


def test_card_facts_read_as_sentences_not_json():
    facts = dict(cards.card_facts(card()))
    assert facts["Name"] == "demo-v1"
    assert facts["Threshold"] == "0.46 (best pooled Dice on the validation images)"
    assert facts["Pixel size"] == "0.25 µm/px"
    assert facts["Input tiles"] == "256 × 256 px"
    assert facts["Preprocessing"] == "equalize clahe · clahe clip limit 4"
    assert facts["Nucleus splitting"] == "min area 8 µm² · split depth 0.15 µm · fill holes yes"
    assert facts["Training data"] == "monuseg (train 26, val 4, test 14 images)"
    assert facts["Training"] == "12 epochs · best epoch 9 · 28 min · on CPU"
    assert facts["Backbone initialisation"] == "random"
    assert facts["Licence"] == "CC BY-NC-SA 4.0"
    assert facts["Created"] == "2026-12-01 09:55:11 UTC"
    assert facts["model.keras SHA-256"] == "abababababababab…"
    assert "Fine-tuned from" not in facts


def test_card_facts_of_a_sparse_card_say_what_is_unknown():
    facts = dict(cards.card_facts(ModelCard(name="bare", versions={})))
    assert facts["Pixel size"] == "not recorded (taken as 0.25 µm/px)"
    assert facts["Preprocessing"] == "defaults" and facts["Training data"] == "not recorded"
    assert "Training" not in facts and "Software" not in facts
    assert "model.keras SHA-256" not in facts


def test_card_facts_name_the_starting_model_and_a_shared_threshold():
    training = {
        "init_from_card": {"name": "demo-v0", "model_sha256": "cd" * 32},
        "threshold_choice": {"sources": {"a": {}, "b": {}}, "rule": "mean"},
    }
    facts = dict(cards.card_facts(card(training=training)))
    assert facts["Fine-tuned from"] == "demo-v0"
    assert facts["Threshold"] == "0.46 (one for the validation parts of 2 sources, mean rule)"


def test_card_facts_name_a_shipped_runtime_only_when_there_is_one():
    prepared = {"runtime": "openvino-int8", "versions": {"openvino": "2026.4.1", "nncf": "3.4.0"}}
    facts = dict(cards.card_facts(card(prepared=prepared)))
    assert facts["Shipped runtime"] == (
        "openvino-int8 in prepared/ (openvino 2026.4.1 · nncf 3.4.0): gated on first use, "
        "no TensorFlow"
    )
    assert "Shipped runtime" not in dict(cards.card_facts(card()))


def test_figure_rows_have_fixed_decimals_per_set():
    figures = SplitFigures(
        split="test", threshold=0.46, images=14, pooled=FIGURES, mean=FIGURES, data="monuseg"
    )
    [row] = cards.figure_rows(card(metrics={"test": figures}))
    assert row == {
        "Set": "test",
        "Images": "14",
        "Threshold": "0.46",
        "Dice": "0.808",
        "Jaccard": "0.677",
        "Precision": "0.724",
        "Recall": "0.913",
        "Mean Dice per image": "0.808",
        "Best threshold": "–",
        "Data": "monuseg",
    }
    assert cards.figure_rows(card()) == []


def test_comparison_table_takes_any_dict_of_dicts():
    comparison = {
        "split": "val",
        "images": 4,
        "before": {"model": "v0", "threshold": 0.46, "dice": 0.8076, "pq": 0.566},
        "after": {"model": "v1", "threshold": 0.52, "dice": 0.8211, "pq": None},
        "gain": {"dice": 0.0136},
    }
    rows, notes = cards.comparison_table(comparison)
    assert rows == [
        {"": "Model", "Before": "v0", "After": "v1", "Gain": ""},
        {"": "Threshold", "Before": "0.46", "After": "0.52", "Gain": ""},
        {"": "Dice (pooled)", "Before": "0.808", "After": "0.821", "Gain": "+0.014"},
        {"": "PQ", "Before": "0.566", "After": "–", "Gain": ""},
    ]
    assert notes == [("Split", "val"), ("Images", "4")]
    assert cards.comparison_table(None) == ([], [])
    assert cards.comparison_table({}) == ([], [])
    assert cards.comparison_table("not a dict") == ([], [])
