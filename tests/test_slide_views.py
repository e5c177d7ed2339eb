"""What the app shows of a slide (segcore.analysis.slide_views): overview, boxes, clicks,
pictures and read-outs, on a small Aperio-style slide of synthetic H&E on glass."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import slide_views
from segcore.data.synthetic import generate_tile
from segcore.errors import SlideError


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from devtools import slides as test_slides

    image = np.full((1200, 1600, 3), 255, np.uint8)
    image[300:812, 900:1412] = generate_tile([3, 1], 512)[0]
    path = tmp_path_factory.mktemp("slide") / "case.svs"
    return test_slides.write_aperio_tiff(path, image, levels=(1, 4)), image


def test_the_overview_finds_the_tissue_and_maps_clicks_to_level0(slide):
    path, image = slide
    view = slide_views.open_overview(path)
    assert view.info.format == "aperio" and view.thumbnail.shape == (768, 1024, 3)
    assert view.downsample == pytest.approx(1600 / 1024)
    assert 0.05 < view.tissue.fraction < 0.25
    assert view.tissue.covers(900, 300, 512, 512) and not view.tissue.covers(0, 0, 400, 200)
    # A click in the middle of the thumbnail shown at half size is the slide's middle.
    assert view.to_level0(256, 192, 512, 384) == (800, 600)
    assert view.to_level0(-5, 10_000, 512, 384) == (0, 1199)  # clipped to the slide
    box = slide_views.tissue_box(view, view.tissue)
    assert box[2:] == (1000, 1000) and box[0] <= 1156 <= box[0] + 1000  # around the tissue
    pixels, truth = slide_views.read_region(path, (900, 300, 64, 32))
    assert truth is None and np.array_equal(pixels, image[300:332, 900:964])
    assert view.tissue_at(None) is view.tissue
    assert view.tissue_at(0.9).fraction < view.tissue.fraction


def test_boxes_are_clipped_to_the_slide():
    assert slide_views.box_around(800, 600, 1600, 1200) == (300, 100, 1000, 1000)
    assert slide_views.box_around(10, 10, 1600, 1200) == (0, 0, 1000, 1000)
    assert slide_views.box_around(1590, 1190, 1600, 1200) == (600, 200, 1000, 1000)
    assert slide_views.clip_box(5000, 5000, 700, 500) == (0, 0, 700, 500)  # a small slide
    tall = np.zeros((1024, 512, 3), np.uint8)
    assert slide_views.shown_size(tall, 600) == {"width": 300, "height": 600}
    assert slide_views.shown_size(tall[:100, :50], 600) == {"width": 50, "height": 100}


def test_pictures_and_readouts(slide):
    path, _ = slide
    view = slide_views.open_overview(path)
    picture = slide_views.outline_picture(view, view.tissue, (0, 0, 1000, 1000))
    assert picture.shape == view.thumbnail.shape and not np.array_equal(picture, view.thumbnail)
    assert tuple(picture[0, 300]) == slide_views.REGION_COLOR  # the region's top edge
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3], rgba[:5, :, 3] = 200, 255  # opaque on the top half only
    thumbnail = np.full((20, 20, 3), 100, np.uint8)
    shown = slide_views.density_overlay(thumbnail, rgba, opacity=1.0)
    assert tuple(shown[0, 0]) == (200, 200, 200) and tuple(shown[-1, -1]) == (100, 100, 100)
    described = slide_views.describe(view.info)
    assert described["Pixel size"] == "0.25 µm/px — from openslide.mpp-x"
    assert described["Objective"] == "40×" and described["Levels"] == "2 (down to 1/4)"
    area = slide_views.tissue_readouts(view.tissue, 0.25)["Tissue area"]
    assert area == f"{view.tissue.area_mm2(0.25):,.2f} mm²"
    assert slide_views.tissue_readouts(view.tissue, None)["Tissue area"] == "–"
    counts = slide_views.run_readouts({"nuclei": 12, "tissue_mm2": 0.25, "density_per_mm2": 48})
    assert counts["Nuclei (whole slide)"] == "12" and counts["Nuclei density"] == "48 /mm²"
    assert counts["Run time"] == "–"
    timed = slide_views.run_readouts({"seconds": 61.25, "flips": True})
    assert timed["Run time"] == "61.2 s (with test-time flips)"


def test_a_missing_or_bad_file_is_one_slide_error(tmp_path):
    (tmp_path / "notes.svs").write_text("text")
    with pytest.raises(SlideError, match=r"notes\.svs"):
        slide_views.open_overview(tmp_path / "notes.svs")
    with pytest.raises(SlideError, match=r"missing\.svs: no such slide file"):
        slide_views.open_overview(tmp_path / "missing.svs")
