"""Config files read with the wrong type of value: one ConfigError naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segcore.bundles.card import ModelCard, SplitFigures
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.instances import InstanceConfig
from segcore.network.config import ModelConfig
from segcore.slides.tissue import TissueConfig
from segcore.training.config import AugmentConfig, TrainConfig
from segcore.training.recipes import read_recipe
from segcore.wholeslide.config import SlideRunConfig
from tests.conftest import REPO

CONFIGS = (
    TrainConfig,
    AugmentConfig,
    ModelConfig,
    PreprocessConfig,
    InstanceConfig,
    TissueConfig,
    SlideRunConfig,
)


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (TrainConfig, {"epochs": "many"}, "TrainConfig.epochs must be an integer, got 'many'"),
        (TrainConfig, {"epochs": True}, "TrainConfig.epochs must be an integer, got True"),
        (TrainConfig, {"epochs": 2.5}, "TrainConfig.epochs must be an integer, got 2.5"),
        (TrainConfig, {"lr": "fast"}, "TrainConfig.lr must be a number, got 'fast'"),
        (TrainConfig, {"lr": None}, "TrainConfig.lr must be a number, got None"),
        (TrainConfig, {"augment": 1}, "TrainConfig.augment must be true or false, got 1"),
        (TrainConfig, {"data": 3}, "TrainConfig.data must be a string, got 3"),
        (TrainConfig, {"loss": ["bce"]}, "TrainConfig.loss must be a string, got ['bce']"),
        (
            TrainConfig,
            {"crops_per_epoch": "all"},
            "TrainConfig.crops_per_epoch must be an integer or null, got 'all'",
        ),
        (TrainConfig, {"preprocess": []}, "TrainConfig.preprocess must be an object, got []"),
        (
            TrainConfig,
            {"validation_sources": "data/lab"},
            "TrainConfig.validation_sources must be a list, got 'data/lab'",
        ),
        # nested configs name their own field
        (
            TrainConfig,
            {"augmentation": {"flips": "yes"}},
            "AugmentConfig.flips must be true or false, got 'yes'",
        ),
        (
            TrainConfig,
            {"preprocess": {"blur_kernel": "3"}},
            "PreprocessConfig.blur_kernel must be an integer, got '3'",
        ),
        (
            TrainConfig,
            {"model": {"aspp_rates": [6, "twelve"]}},
            "ModelConfig.aspp_rates must be a list of integers, got [6, 'twelve']",
        ),
        (
            InstanceConfig,
            {"min_area_um2": "8"},
            "InstanceConfig.min_area_um2 must be a number, got '8'",
        ),
        (
            SlideRunConfig,
            {"core_size": "big"},
            "SlideRunConfig.core_size must be an integer, got 'big'",
        ),
        (
            SlideRunConfig,
            {"region": [0, 0, "w", 4]},
            "SlideRunConfig.region must be a list of integers or null, got [0, 0, 'w', 4]",
        ),
        (
            SlideRunConfig,
            {"tissue": {"max_side": "big"}},
            "TissueConfig.max_side must be an integer, got 'big'",
        ),
        (SlideRunConfig, {"tissue": 5}, "SlideRunConfig.tissue must be an object, got 5"),
        (
            ModelCard,
            {"name": "m", "threshold": "high"},
            "ModelCard.threshold must be a number, got 'high'",
        ),
        (
            ModelCard,
            {"name": "m", "format_version": "2"},
            "ModelCard.format_version must be an integer, got '2'",
        ),
        (ModelCard, {"name": "m", "input_size": 256.0}, "ModelCard.input_size must be an integer"),
        (ModelCard, {"name": 7}, "ModelCard.name must be a string, got 7"),
    ],
)
def test_a_value_of_the_wrong_type_is_named(cls, data, message):
    with pytest.raises(ConfigError) as info:
        cls.from_dict(data)
    assert message in str(info.value)


def test_long_values_are_shortened_in_the_message():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"epochs": "x" * 5000})
    assert len(str(info.value)) < 150 and str(info.value).endswith("...")


@pytest.mark.parametrize(
    "data",
    [
        {"lr": 1},  # an int is a number
        {"val_fraction": 0, "test_fraction": 0},
        {"crops_per_epoch": None, "backbone_weights": None, "init_from": None},
        {"backbone_weights": "none"},
        {"crops_per_epoch": np.int64(12), "lr": np.float32(0.01), "augment": np.bool_(True)},
        {"augmentation": {"flips": False, "scale_min": 1, "context": 2}},
        {"model": {"aspp_rates": (2, 4)}},  # a tuple where JSON gives a list
        {"validation_sources": []},
    ],
)
def test_values_of_the_right_type_pass(data):
    TrainConfig.from_dict(data)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_config_reads_back_what_it_writes(cls):
    config = cls()
    assert cls.from_json(config.to_json()) == config


def test_slide_run_config_takes_nested_objects_and_nulls():
    config = SlideRunConfig.from_dict(
        {
            "threshold": None,
            "pixel_size": 0.5,
            "region": [0, 0, 64, 64],
            "instances": {"min_area_um2": 4},
            "tissue": TissueConfig(threshold=0.05).to_dict(),
        }
    )
    assert config.region == (0, 0, 64, 64) and config.tissue.threshold == 0.05
    assert SlideRunConfig.from_dict({**config.to_dict(), "threshold": 1}).threshold == 1


def test_the_repositorys_configs_still_load():
    for path in sorted((REPO / "scripts" / "recipes").glob("*.json")):
        read_recipe(path)
    for path in sorted(REPO.glob("weights/*/card.json")):
        card = ModelCard.from_file(path)
        assert card.preprocess_config and card.instance_config and card.model_config
        for figures in card.metrics.values():
            SplitFigures.from_dict(figures.to_dict())


def test_a_config_file_names_the_file_and_the_field(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_file(path)
    assert str(info.value) == f"{path}: TrainConfig.epochs must be an integer, got 'many'"


def test_the_start_threshold_rule_needs_a_start():
    with pytest.raises(ConfigError, match='threshold_rule "start" needs a starting bundle'):
        TrainConfig(threshold_rule="start")
    with pytest.raises(ConfigError, match="threshold_rule must be one of"):
        TrainConfig(threshold_rule="median", init_from="default")
    assert TrainConfig(threshold_rule="start", init_from="default").threshold_rule == "start"
