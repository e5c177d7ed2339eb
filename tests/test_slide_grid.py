"""The tile grid over a slide's tissue (segcore.slides.grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segcore.errors import SlideError
from segcore.slides.grid import level_for_downsample, plan_grid
from segcore.slides.reader import SlideInfo, SlideLevel
from segcore.slides.tissue import TissueMask


def slide_info(width=1000, height=700, pixel_size=0.25, downsamples=(1, 4, 16)) -> SlideInfo:
    levels = tuple(
        SlideLevel(max(1, int(width // d)), max(1, int(height // d)), float(d)) for d in downsamples
    )
    return SlideInfo(
        path=Path("test.svs"),
        format="aperio",
        backend="openslide",
        levels=levels,
        pixel_size=pixel_size,
        pixel_size_source="given" if pixel_size else "none",
        objective_power=40.0,
    )


def coverage(grid, shape) -> np.ndarray:
    """How many cores cover each work pixel of a (h, w) canvas."""
    count = np.zeros(shape, np.int32)
    for tile in grid.tiles:
        x, y, w, h = tile.core
        count[y : y + h, x : x + w] += 1
    return count


def test_cores_partition_the_slide_and_boxes_add_the_halo():
    grid = plan_grid(slide_info(), None, model_pixel_size=0.25, core_size=256, halo=32)
    assert grid.scale == 1.0 and grid.level == 0 and grid.pixel_size == 0.25
    assert (grid.rows, grid.cols) == (3, 4)
    assert [t.index for t in grid.tiles] == list(range(12))  # row-major
    assert np.all(coverage(grid, (700, 1000)) == 1)
    last = grid.tiles[-1]
    assert (last.row, last.col) == (2, 3)
    assert last.core == (768, 512, 232, 188)  # the last row and column are narrower
    for tile in grid.tiles:
        x, y, w, h = tile.core
        assert tile.box == (x - 32, y - 32, w + 64, h + 64)
        assert tile.index == tile.row * grid.cols + tile.col


def test_only_tiles_whose_core_touches_tissue_keep_their_index():
    mask = np.zeros((70, 100), bool)  # downsample 10: one mask pixel per 10 level-0 pixels
    mask[5:10, 5:10] = True  # level-0 50..100: inside core (0, 0)
    mask[40, 60] = True  # level-0 x 600..610, y 400..410: core (row 1, col 2)
    tissue = TissueMask(mask, 10.0, 0.1)
    grid = plan_grid(slide_info(), tissue, model_pixel_size=0.25, core_size=256, halo=0)
    assert [(t.index, t.row, t.col) for t in grid.tiles] == [(0, 0, 0), (6, 1, 2)]
    empty = TissueMask(np.zeros((70, 100), bool), 10.0, 0.1)
    assert plan_grid(slide_info(), empty, model_pixel_size=0.25).tiles == ()


def test_a_20x_slide_is_upsampled_to_the_work_grid():
    info = slide_info(width=600, height=400, pixel_size=0.5)
    grid = plan_grid(info, None, model_pixel_size=0.25, core_size=256, halo=16)
    assert grid.scale == 2.0 and grid.level == 0 and grid.pixel_size == 0.25
    assert grid.work_region == (0, 0, 1200, 800)
    assert np.all(coverage(grid, (800, 1200)) == 1)
    assert grid.to_level0(1200, 800) == (600.0, 400.0)


def test_a_40x_slide_for_coarser_models_reads_the_nearest_finer_level():
    info = slide_info(width=4000, height=4000)
    half = plan_grid(info, None, model_pixel_size=0.5)  # wants downsample 2: level 0, shrink 2×
    assert (half.level, half.scale, half.pixel_size) == (0, 0.5, 0.5)
    assert half.work_region == (0, 0, 2000, 2000)
    one = plan_grid(info, None, model_pixel_size=1.0)  # wants 4: level 1 exactly
    assert (one.level, one.level_downsample, one.scale) == (1, 4.0, 0.25)
    coarse = plan_grid(info, None, model_pixel_size=3.0)  # wants 12: level 1, never 16
    assert coarse.level == 1 and coarse.scale == pytest.approx(0.25 / 3)


def test_level_choice_never_coarser_than_asked_with_one_percent_tolerance():
    levels = (1.0, 4.0002, 16.001)
    assert level_for_downsample(levels, 1.0) == 0
    assert level_for_downsample(levels, 3.99) == 1  # within 1 %
    assert level_for_downsample(levels, 3.9) == 0
    assert level_for_downsample(levels, 100.0) == 2
    assert level_for_downsample(levels, 0.5) == 0  # finer than level 0: level 0


def test_pixel_sizes_within_two_percent_use_the_level_as_it_is():
    near = plan_grid(slide_info(pixel_size=0.2527), None, model_pixel_size=0.25)
    assert near.scale == 1.0 and near.pixel_size == 0.2527  # µm measurements stay exact
    far = plan_grid(slide_info(pixel_size=0.2634), None, model_pixel_size=0.25)
    assert far.scale == pytest.approx(0.2634 / 0.25) and far.pixel_size == pytest.approx(0.25)


def test_a_region_is_covered_exactly_and_clipped_to_the_slide():
    info = slide_info(pixel_size=0.5)
    grid = plan_grid(info, None, model_pixel_size=0.25, core_size=128, region=(100, 50, 200, 90))
    assert grid.region == (100, 50, 200, 90)
    assert grid.work_region == (200, 100, 400, 180)
    count = coverage(grid, (1400, 2000))
    assert np.all(count[100:280, 200:600] == 1) and count.sum() == 400 * 180
    clipped = plan_grid(info, None, model_pixel_size=0.25, region=[900, 600, 500, 500])
    assert clipped.region == (900, 600, 100, 100)


@pytest.mark.parametrize(
    ("region", "problem"),
    [
        ((2000, 0, 10, 10), "outside the slide"),
        ((0, 0, 0, 10), "empty"),
        ((0, 0, 10), "four integers"),
        ((0.5, 0, 10, 10), "four integers"),
    ],
)
def test_bad_regions_are_refused(region, problem):
    with pytest.raises(SlideError, match=problem):
        plan_grid(slide_info(), None, model_pixel_size=0.25, region=region)


def test_a_slide_without_pixel_size_is_refused_with_the_fix():
    with pytest.raises(SlideError, match=r"test.svs: .*no pixel size.*--pixel-size"):
        plan_grid(slide_info(pixel_size=None), None, model_pixel_size=0.25)


def test_sizes_are_checked():
    with pytest.raises(SlideError, match="core_size"):
        plan_grid(slide_info(), None, model_pixel_size=0.25, core_size=16)
    with pytest.raises(SlideError, match="halo"):
        plan_grid(slide_info(), None, model_pixel_size=0.25, halo=-1)


def test_to_dict_is_json_safe():
    import json

    grid = plan_grid(slide_info(), None, model_pixel_size=0.25, core_size=512)
    data = json.loads(json.dumps(grid.to_dict()))
    assert data["tiles"] == len(grid.tiles) == 4
    assert data["tile_indices"] == [0, 1, 2, 3]
    assert data["region"] == [0, 0, 1000, 700]


def test_boxes_hold_whole_model_tiles_on_one_lattice():
    info = slide_info(width=2000, height=1000)
    grid = plan_grid(
        info, None, model_pixel_size=0.25, core_size=576, halo=128, model_tiles=(256, 64)
    )
    assert grid.to_dict()["lattice_aligned"]
    for tile in grid.tiles:
        x, y, w, h = tile.box
        assert (x - tile.core[0], y - tile.core[1]) == (-128, -128)
        assert (w - 256) % 192 == 0 and (h - 256) % 192 == 0  # whole model tiles
        assert w >= tile.core[2] + 256 and h >= tile.core[3] + 256
        assert (x + 128) % 192 == 0 and (y + 128) % 192 == 0  # one lattice for all boxes
    assert grid.tiles[0].box == (-128, -128, 832, 832)
    last = grid.tiles[-1]  # core 2000 - 3 × 576 = 272 wide: 528 → 640
    assert last.core[2] == 272 and last.box[2] == 640
    assert not plan_grid(info, None, model_pixel_size=0.25, model_tiles=None).to_dict()[
        "lattice_aligned"
    ]
    big = slide_info(width=4000, height=4000)
    default = plan_grid(big, None, model_pixel_size=0.25, model_tiles=(256, 32))
    assert (default.core_size, default.halo) == (1792, 128)
    assert default.tiles[0].box == (-128, -128, 2048, 2048)
    assert default.to_dict()["lattice_aligned"]
    unaligned = plan_grid(info, None, model_pixel_size=0.25, core_size=1024, model_tiles=(256, 64))
    assert not unaligned.to_dict()["lattice_aligned"]
