"""Pixel size from the nuclei (``auto``): the estimator on discs of known size, the second
pass only when needed, the CLI's ``--pixel-size auto`` and its report, the app's choice."""

from __future__ import annotations

import json
import logging
import math
import re

import cv2
import numpy as np
import pytest

from segcore.cli import main
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.scale import (
    AUTO,
    MIN_NUCLEI,
    REFERENCE_NUCLEUS_AREA_UM2,
    SNAP_BOUNDARY,
    ScaleEstimate,
    combine_estimates,
    estimate_from_probabilities,
    nucleus_area_px,
    parse_pixel_size,
    predict_auto,
    snap_pixel_size,
)
from tests.conftest import write_png

PLAIN = PreprocessConfig(equalize="none", blur_kernel=0)
NUCLEUS = (90, 50, 150)  # hematoxylin purple
BACKGROUND = (235, 190, 215)  # eosin pink
# A disc with the reference area at 40× (0.25 µm/px): radius ≈ 13.6 px.
RADIUS_40X = math.sqrt(REFERENCE_NUCLEUS_AREA_UM2 / 0.25**2 / math.pi)


def discs(side: int, radius: float, count: int = 4) -> np.ndarray:
    """``count`` × ``count`` purple discs of ``radius`` px, well apart, on pink: RGB uint8."""
    image = np.empty((side, side, 3), np.uint8)
    image[:] = BACKGROUND
    step = side / count
    for row in range(count):
        for col in range(count):
            centre = (round((col + 0.5) * step), round((row + 0.5) * step))
            cv2.circle(image, centre, round(radius), NUCLEUS, thickness=-1)
    return image


def darkness(batch):
    """A stand-in model: the probability is how dark the green channel is."""
    return 1.0 - batch[..., 1:2]


def counting(calls):
    def model(batch):
        calls.append(batch.shape)
        return darkness(batch)

    return model


def test_the_same_discs_at_half_size_read_twice_the_pixel_size():
    at_40x = discs(256, RADIUS_40X)
    at_20x = cv2.resize(at_40x, (128, 128), interpolation=cv2.INTER_AREA)  # a 20× scan of it
    first_40x = predict_auto(darkness, at_40x, PLAIN, threshold=0.5, model_pixel_size=0.25)[1]
    first_20x = predict_auto(darkness, at_20x, PLAIN, threshold=0.5, model_pixel_size=0.25)[1]
    assert first_40x.nuclei == first_20x.nuclei == 16
    assert first_40x.measured == pytest.approx(0.25, rel=0.05)  # the reference's own area
    assert first_20x.measured / first_40x.measured == pytest.approx(2.0, rel=0.05)
    assert (first_40x.pixel_size, first_20x.pixel_size) == (0.25, 0.5)


def test_the_second_pass_runs_only_when_the_estimate_is_not_the_models():
    calls_40x, calls_20x = [], []
    at_40x = discs(256, RADIUS_40X)
    probs, estimate = predict_auto(
        counting(calls_40x), at_40x, PLAIN, threshold=0.5, model_pixel_size=0.25, tile_size=256
    )
    assert len(calls_40x) == 1 and estimate.pixel_size == 0.25  # the first pass is the answer
    at_20x = cv2.resize(at_40x, (128, 128), interpolation=cv2.INTER_AREA)
    probs, estimate = predict_auto(
        counting(calls_20x), at_20x, PLAIN, threshold=0.5, model_pixel_size=0.25, tile_size=256
    )
    assert len(calls_20x) == 2 and estimate.pixel_size == 0.5  # resampled ×2 and predicted
    assert probs.shape == (128, 128)  # on the image's own grid
    assert estimate.describe().startswith("pixel size estimated from the nuclei: 0.50 µm/px")


def test_a_first_pass_given_by_the_caller_is_not_computed_again():
    calls = []
    image = discs(256, RADIUS_40X)
    first = darkness(image[None].astype(np.float32) / 255)[0, ..., 0]
    probs, estimate = predict_auto(
        counting(calls), image, PLAIN, threshold=0.5, model_pixel_size=0.25, first=first
    )
    assert calls == [] and probs is first and estimate.pixel_size == 0.25


def test_too_few_nuclei_give_no_estimate_and_the_models_pixel_size():
    image = discs(256, RADIUS_40X / 2, count=3)  # 9 nuclei: small ones, but too few to tell
    probs, estimate = predict_auto(darkness, image, PLAIN, threshold=0.5, model_pixel_size=0.25)
    assert estimate.nuclei == 9 < MIN_NUCLEI and probs.shape == (256, 256)
    assert estimate.measured is None and estimate.pixel_size == 0.25 and not estimate.estimated
    assert "not estimated (9 nuclei found, 10 needed)" in estimate.describe()


def test_the_area_weighted_median_ignores_specks():
    labels = np.zeros((40, 40), np.int32)
    labels[0, 0], labels[0, 2], labels[0, 4] = 1, 2, 3  # three 1-px specks
    labels[10:20, 10:20] = 4  # one nucleus of 100 px
    assert nucleus_area_px(labels) == (100.0, 4)  # the plain median would say 1 px
    assert nucleus_area_px(np.zeros((4, 4), np.int32)) == (None, 0)


def test_snapping_reads_40x_up_to_the_boundary_and_20x_above():
    assert snap_pixel_size(0.18) == snap_pixel_size(SNAP_BOUNDARY) == 0.25
    assert snap_pixel_size(SNAP_BOUNDARY + 0.001) == snap_pixel_size(0.9) == 0.5
    blank = np.zeros((64, 64), np.float32)
    assert estimate_from_probabilities(blank, 0.5).pixel_size == 0.25  # nothing: the model's


def test_one_estimate_for_a_set_is_the_median_of_its_images():
    estimates = [ScaleEstimate(0.5, 0.45, 20), ScaleEstimate(0.25, 0.3, 30)]
    estimates += [ScaleEstimate(0.5, 0.5, 40), ScaleEstimate(0.25, None, 2)]  # no vote
    whole = combine_estimates(estimates)
    assert (whole.pixel_size, whole.measured, whole.nuclei) == (0.5, 0.45, 92)
    assert (whole.images, whole.agree) == (4, 2)
    assert "median of 4 images, 2 of them agree" in whole.describe()


def test_pixel_size_text_is_auto_or_a_number_in_range():
    assert parse_pixel_size("auto") == parse_pixel_size(" Auto ") == AUTO
    assert parse_pixel_size("0.5") == 0.5
    for bad in ("0", "fast", ""):
        with pytest.raises(ConfigError):
            parse_pixel_size(bad)


def test_cli_predict_pixel_size_auto_parses_and_reports(tmp_path, caplog):
    small = cv2.resize(discs(256, RADIUS_40X), (128, 128), interpolation=cv2.INTER_AREA)
    write_png(tmp_path / "scan20x.png", small)
    argv = ["predict", "--model", "baseline", "--out", str(tmp_path / "out")]
    with caplog.at_level(logging.INFO, logger="segcore"):
        assert main([*argv, "--pixel-size", "auto", str(tmp_path / "scan20x.png")]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any("scan20x.png: pixel size estimated from the nuclei: 0.50 µm/px" in m for m in said)
    assert any("0.5 µm/px)" in m for m in said)  # what the outputs were predicted at
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segcore"):  # a PNG records no pixel size
        assert main([*argv, str(tmp_path / "scan20x.png")]) == 0  # so auto is the default
    assert any("estimated from the nuclei: 0.50" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segcore"):  # a given one is used as it is
        assert main([*argv, "--pixel-size", "0.25", str(tmp_path / "scan20x.png")]) == 0
    assert not any("estimated" in r.getMessage() for r in caplog.records)


def test_cli_refuses_a_pixel_size_that_is_neither_auto_nor_a_number(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--pixel-size", "fast", "--out", str(tmp_path), "x.png"])
    assert exit_.value.code == 2 and "give 'auto' or a number" in capsys.readouterr().err


def test_cli_evaluate_estimates_one_pixel_size_for_the_split(tmp_path, capsys):
    data = tmp_path / "scan20x"
    for i in range(8):
        image = cv2.resize(discs(256, RADIUS_40X + i % 3), (128, 128), interpolation=cv2.INTER_AREA)
        write_png(data / "images" / f"t{i}.png", image)
        write_png(data / "masks" / f"t{i}.png", (image[..., 1] < 150).astype(np.uint8) * 255)
    report = tmp_path / "report.json"
    argv = ["-q", "evaluate", "--model", "baseline", "--data", str(data), "--split", "train"]
    assert main([*argv, "--pixel-size", "auto", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        r"estimated from the nuclei: 0\.50 µm/px \(20×; median of [2-8] images", printed
    )
    result = json.loads(report.read_text())
    assert result["pixel_size"] == 0.5 and "0.50 µm/px" in result["pixel_size_estimate"]


def test_the_apps_auto_choice_maps_to_auto():
    from appkit import widgets

    options = widgets.magnification_options(auto=True)
    assert options[0] == widgets.AUTO_PIXEL_SIZE == "Auto (from the nuclei)"
    assert widgets.chosen_pixel_size(widgets.AUTO_PIXEL_SIZE) == AUTO
    assert widgets.chosen_pixel_size("20× (0.5 µm/px)") == 0.5
    assert widgets.chosen_pixel_size(widgets.CUSTOM_PIXEL_SIZE) is None
    # Nothing recorded: Auto for an upload, the model's 40× for a dataset's sample (as
    # evaluate scores it); recorded: the magnification near it.
    assert widgets.default_magnification(options, None) == widgets.AUTO_PIXEL_SIZE
    assert widgets.default_magnification(options, None, image=False) == "40× (0.25 µm/px)"
    assert widgets.default_magnification(options, 0.26) == "40× (0.25 µm/px)"
    assert widgets.default_magnification(options, 0.8) == widgets.CUSTOM_PIXEL_SIZE
    plain = widgets.magnification_options(auto=False)  # the Slides page: no Auto
    assert widgets.AUTO_PIXEL_SIZE not in plain
    assert widgets.default_magnification(plain, None) == "40× (0.25 µm/px)"


def test_an_analysis_asked_for_auto_records_what_was_estimated():
    from segcore.analysis.analyse import analyse_image

    at_20x = cv2.resize(discs(256, RADIUS_40X), (128, 128), interpolation=cv2.INTER_AREA)
    analysis = analyse_image(
        darkness, at_20x, PLAIN, pixel_size=AUTO, model_pixel_size=0.25, threshold=0.5
    )
    assert analysis.scale is not None and analysis.scale.pixel_size == 0.5
    assert analysis.pixel_size == 0.5  # the µm settings and measurements use the estimate
    assert analysis.probabilities.shape == (128, 128)
    given = analyse_image(darkness, at_20x, PLAIN, pixel_size=0.5, model_pixel_size=0.25)
    assert given.scale is None
    np.testing.assert_allclose(analysis.probabilities, given.probabilities)
