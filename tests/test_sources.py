"""Validation across sources (issue 19): split.json parts, the shared threshold, the trainer's
multi-source checkpoint choice and raw-context training crops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.data.datasets import open_dataset
from segcore.data.preprocessing import PreprocessConfig, enhance_image
from segcore.errors import ConfigError, DatasetError
from segcore.evaluation.sources import choose_threshold, open_validation_sources
from segcore.metrics.sweep import threshold_sweep
from tests.conftest import make_pairs_dataset, tiny_config


def with_split(root, val, test):
    (root / "split.json").write_text(json.dumps({"rule": "by hand", "val": val, "test": test}))
    return root


def test_split_json_fixes_the_val_and_test_parts_and_no_training(tmp_path):
    root = with_split(
        make_pairs_dataset(tmp_path / "lab", n=5),
        ["img_003", "img_000"],
        ["img_001", "img_002", "img_004"],
    )
    splits = open_dataset(root, seed=7)
    assert list(splits.val.ids) == ["img_000", "img_003"]
    assert list(splits.test.ids) == ["img_001", "img_002", "img_004"]
    assert len(splits.train) == 0 and splits.carved == ()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"val": ["img_000"], "test": ["img_000", "img_001", "img_002"]}, "in both val and test"),
        ({"val": ["img_009"], "test": ["img_000", "img_001", "img_002"]}, "no such sample"),
        ({"val": ["img_000"], "test": ["img_001"]}, "in neither part"),
        ({"val": ["img_000"]}, "not a split file"),
        ({"val": [1], "test": []}, "not a split file"),
    ],
)
def test_a_bad_split_file_is_named_with_its_problem(tmp_path, spec, message):
    root = make_pairs_dataset(tmp_path / "lab", n=3)
    (root / "split.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match=r"split\.json") as error:
        open_dataset(root)
    assert message in str(error.value) + str(getattr(error.value, "problems", ""))


def sweep_of(dice_by_threshold_shape, seed):
    """A real sweep of one random image pair, for choose_threshold's bookkeeping."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((32, 32)) > 0.5).astype(np.uint8)
    probs = np.clip(truth * dice_by_threshold_shape + rng.random((32, 32)) * 0.5, 0, 1)
    return threshold_sweep(truth, probs)


def test_the_shared_threshold_maximises_the_rule_over_sources():
    sweeps = {"a": sweep_of(0.5, 0), "b": sweep_of(0.3, 1), "c": sweep_of(0.6, 2)}
    grid = sweeps["a"].thresholds
    curves = np.stack([s.pooled.get("dice") for s in sweeps.values()])
    for rule, combined in (("mean", curves.mean(0)), ("worst", curves.min(0))):
        choice = choose_threshold(sweeps, rule)
        assert choice.score == pytest.approx(combined.max())
        index = int(np.argmin(np.abs(grid - choice.threshold)))
        assert combined[index] == pytest.approx(combined.max())
        for name, sweep in sweeps.items():  # each source's Dice is read at that threshold
            assert choice.dice[name] == pytest.approx(sweep.pooled.get("dice")[index])
            _own_t, own_d = choice.own_best[name]
            assert own_d >= choice.dice[name] - 1e-12
    with pytest.raises(ConfigError, match="unknown source rule"):
        choose_threshold(sweeps, "median")


def test_validation_sources_are_the_val_parts_named_by_folder(tmp_path):
    a = with_split(make_pairs_dataset(tmp_path / "lab-a", n=3), ["img_000"], ["img_001", "img_002"])
    b = with_split(make_pairs_dataset(tmp_path / "lab-b", n=2), ["img_001"], ["img_000"])
    sources = open_validation_sources([a, b])
    assert [(s.name, list(s.samples.ids)) for s in sources] == [
        ("lab-a", ["img_000"]),
        ("lab-b", ["img_001"]),
    ]
    with pytest.raises(DatasetError, match="distinct folder names"):
        open_validation_sources([a, a])


def test_raw_context_crop_equalises_the_context_not_the_crop():
    from segcore.training.config import AugmentConfig
    from segcore.training.pipeline import raw_context_crop

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    image[:, :100] //= 4  # a dark half: equalising the context differs from the crop alone
    mask = (rng.random((200, 200)) > 0.5).astype(np.uint8)
    pre = PreprocessConfig()
    augment = AugmentConfig(
        raw_crops=True, context=2.0, scale_min=1.0, scale_max=1.0, hed_probability=0.0
    )
    crop, truth = raw_context_crop(image, mask, np.random.default_rng(3), 64, augment, pre)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8 and truth.shape == (64, 64)
    # Scale 1: the crop is a window of the preprocessed 128² context; find it through the mask.
    rng = np.random.default_rng(3)
    rng.uniform(0, 0)  # the scale draw (log 1 = 0)
    cy, cx = rng.integers(0, 200 - 128 + 1), rng.integers(0, 200 - 128 + 1)
    rng.random()  # the stain draw
    y, x = rng.integers(0, 128 - 64 + 1), rng.integers(0, 128 - 64 + 1)
    np.testing.assert_array_equal(truth, mask[cy + y : cy + y + 64, cx + x : cx + x + 64])
    context = enhance_image(image[cy : cy + 128, cx : cx + 128], pre)
    np.testing.assert_array_equal(crop, context[y : y + 64, x : x + 64])
    alone = enhance_image(image[cy + y : cy + y + 64, cx + x : cx + x + 64], pre)
    assert not np.array_equal(crop, alone)


@pytest.mark.slow
def test_a_run_with_validation_sources_keeps_the_best_shared_score(tmp_path):
    from segcore.bundles.loading import load_bundle
    from segcore.training.trainer import train

    data = make_pairs_dataset(tmp_path / "train-lab", n=8, size=64, seed=1)
    other = with_split(
        make_pairs_dataset(tmp_path / "other-lab", n=3, size=64, seed=2),
        ["img_000", "img_001"],
        ["img_002"],
    )
    config = tiny_config(
        data,
        tmp_path / "runs" / "r",
        validation_sources=[str(other)],
        augmentation={"raw_crops": True, "hed_probability": 0.5},
    )
    run = train(config, runs_dir=tmp_path / "runs")
    assert run.read_status()["state"] == "completed", run.read_status()
    rows = run.read_metrics()
    for row in rows:
        assert {"val_sources_dice", "val_dice_train-lab", "val_dice_other-lab"} <= set(row)
        assert row["val_sources_dice"] == pytest.approx(
            (row["val_dice_train-lab"] + row["val_dice_other-lab"]) / 2
        )
    best = max(rows, key=lambda r: r["val_sources_dice"])
    state = json.loads((run.checkpoints_dir / "state.json").read_text())
    assert state["best"]["epoch"] == best["epoch"]
    card = load_bundle(run.bundle_dir).card
    record = card.training["validation_sources"]
    assert record["sources"] == ["train-lab", "other-lab"] and record["rule"] == "mean"
    assert card.threshold == record["threshold"]
    assert record["score"] == pytest.approx(best["val_sources_dice"], abs=1e-6)


def test_a_bad_source_rule_or_list_is_refused():
    from segcore.training.config import TrainConfig

    with pytest.raises(ConfigError, match="source_rule"):
        TrainConfig(source_rule="median")
    with pytest.raises(ConfigError, match="validation_sources"):
        TrainConfig(validation_sources="../shared/data/tnbc")


def test_choose_threshold_prints_each_source_and_records_the_choice(tmp_path, capsys):
    from segcore.bundles.card import ModelCard
    from segcore.bundles.loading import load_bundle
    from segcore.bundles.store import save_bundle
    from segcore.cli import main
    from segcore.data.synthetic_set import generate_dataset
    from segcore.network.model import build_deeplabv3plus

    model = build_deeplabv3plus(
        aspp_filters=8, aspp_rates=(2, 4), low_level_filters=8, decoder_filters=8
    )
    card = ModelCard(
        name="tiny", input_size=64, preprocess=PreprocessConfig().to_dict(), threshold=0.5
    )
    bundle = save_bundle(model, tmp_path / "tiny", card)
    data = generate_dataset(tmp_path / "synth", count=8, size=64, seed=2)
    lab = with_split(
        generate_dataset(tmp_path / "lab", count=3, size=64, seed=5),
        ["synth_00000", "synth_00001"],
        ["synth_00002"],
    )
    argv = [
        "-q",
        "choose-threshold",
        "--model",
        str(bundle),
        "--data",
        str(data),
        "--source",
        str(lab),
        "--overlap",
        "16",
        "--runtime",
        "keras",
    ]
    assert main([*argv, "--rule", "worst", "--update-card"]) == 0
    printed = capsys.readouterr().out
    assert "synth " in printed and "lab " in printed and "chosen threshold" in printed
    record = load_bundle(bundle).card.training["threshold_choice"]
    assert record["rule"] == "worst" and set(record["dice"]) == {"synth", "lab"}
    assert load_bundle(bundle).card.threshold == record["threshold"]
    assert record["score"] == pytest.approx(min(record["dice"].values()))
    assert main([*argv[:2], "--model", "baseline", *argv[4:], "--update-card"]) == 2
    assert "no card to update" in capsys.readouterr().err


def test_instance_settings_for_several_sources_weigh_each_source_the_same():
    from segcore.evaluation.instance_tuning import InstanceTuning, combine_tunings
    from segcore.inference.instances import InstanceConfig

    def tuning(scores, n_images):
        table = [
            {
                "min_area_um2": a,
                "split_depth_um": d,
                "mean_pq": s,
                "mean_aji": s,
                "score": s,
                "median_count_error": 0.1,
            }
            for (a, d), s in zip([(2.0, 0.1), (4.0, 0.1), (8.0, 0.2)], scores, strict=True)
        ]
        return InstanceTuning(InstanceConfig(), table, n_images)

    # The big source prefers the first setting, the two small ones the last: equal weights.
    combined = combine_tunings(
        {
            "big": tuning([0.9, 0.5, 0.4], 100),
            "a": tuning([0.2, 0.5, 0.7], 2),
            "b": tuning([0.3, 0.4, 0.7], 2),
        }
    )
    assert (combined.config.min_area_um2, combined.config.split_depth_um) == (8.0, 0.2)
    assert combined.best["score"] == pytest.approx(0.6) and combined.n_images == 104
    assert combined.best["score_big"] == 0.4
    with pytest.raises(ConfigError, match="different grids"):
        combine_tunings(
            {
                "x": tuning([1, 1, 1], 1),
                "y": InstanceTuning(InstanceConfig(), tuning([1, 1, 1], 1).table[:2], 1),
            }
        )
