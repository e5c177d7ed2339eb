"""The classical baseline: hematoxylin + Gaussian + Otsu as a score, and `--model baseline`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from segcore.bundles.loading import load_bundle
from segcore.cli import main
from segcore.data.preprocessing import PreprocessConfig
from segcore.data.synthetic import generate_tile
from segcore.data.synthetic_set import generate_dataset
from segcore.errors import ConfigError
from segcore.inference.classical import ClassicalBaseline
from segcore.inference.predict import predict_probabilities
from segcore.metrics.counts import dice
from segcore.metrics.sweep import threshold_sweep


@pytest.fixture(scope="module")
def tile():
    return generate_tile(3, 96)


def test_score_at_one_half_is_the_otsu_mask_of_the_smoothed_hematoxylin(tile):
    image, _ = tile
    density = ndimage.gaussian_filter(rgb2hed(image)[..., 0].astype(np.float32), 2.0)
    otsu = density > threshold_otsu(density)  # the reference, computed directly
    score = ClassicalBaseline().probabilities(image)
    assert score.dtype == np.float32 and score.shape == image.shape[:2]
    assert score.min() >= 0.0 and score.max() <= 1.0
    np.testing.assert_array_equal(score >= 0.5, otsu)
    order = np.argsort(density, axis=None)  # the score grows with the hematoxylin density
    assert np.all(np.diff(score.ravel()[order]) >= 0)


def test_it_finds_synthetic_nuclei_and_sweeps_like_a_model(tile):
    image, mask = tile
    score = ClassicalBaseline().probabilities(image)
    assert dice(mask, score >= 0.5) > 0.6
    sweep = threshold_sweep(mask, score)
    assert sweep.counts_at(0.5).dice == pytest.approx(dice(mask, score >= 0.5))
    assert len(set(np.round(sweep.pooled.dice, 6))) > 10  # not a step: thresholds mean something


def test_predict_probabilities_hands_it_the_whole_image(tile):
    image, _ = tile
    baseline = ClassicalBaseline()
    direct = baseline.probabilities(image)
    via = predict_probabilities(baseline, image, PreprocessConfig(), tile_size=32, overlap=8)
    np.testing.assert_array_equal(via, direct)  # no tiles, no equalisation


def test_flat_images_and_bad_settings():
    flat = np.full((20, 30, 3), 180, np.uint8)
    assert not ClassicalBaseline().probabilities(flat).any()
    with pytest.raises(ConfigError):
        ClassicalBaseline(softness=0)


def test_load_bundle_baseline_and_the_cli(tmp_path, capsys):
    bundle = load_bundle("baseline")
    assert bundle.path is None and bundle.threshold == 0.5
    assert isinstance(bundle.model, ClassicalBaseline)
    data = generate_dataset(tmp_path / "synth", count=6, size=64, seed=1)
    report = tmp_path / "baseline.json"
    argv = ["-q", "evaluate", "--model", "baseline", "--data", str(data), "--split", "train"]
    assert main([*argv, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["model"] == "baseline" and 0.3 < result["pooled"]["dice"] <= 1.0
    capsys.readouterr()
    assert main([*argv, "--update-card"]) == 2
    assert "classical baseline has no card" in capsys.readouterr().err
