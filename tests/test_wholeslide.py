"""Whole-slide segmentation (segcore.wholeslide): reading tiles, stitching, outputs, resuming.

The slides are real files (devtools.slides: Aperio-style TIFF, lossless) made of synthetic H&E
(always available) or MoNuSeg tiles (skipped when absent). The model is a stand-in that scores
each pixel's hematoxylin density on its own, so a tile's output does not depend on its
context and the stitched nuclei can be compared exactly with one run of the whole image.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2hed

from devtools.slides import monuseg_mosaic, write_aperio_tiff
from segcore.bundles.card import ModelCard
from segcore.bundles.loading import Bundle
from segcore.data.preprocessing import enhance_with_lut, equalisation_lut, lightness_histogram
from segcore.data.synthetic import generate_tile
from segcore.errors import ConfigError, SlideError
from segcore.inference.flips import with_flips
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.inference.predict import predict_probabilities
from segcore.metrics.instances import match_instances
from segcore.slides.grid import plan_grid
from segcore.slides.reader import Slide, open_slide
from segcore.slides.tissue import TissueConfig
from segcore.wholeslide import outputs
from segcore.wholeslide.config import SlideRunConfig
from segcore.wholeslide.segment import segment_slide
from segcore.wholeslide.tiles import read_tile_image

OUTPUTS = outputs.OUTPUT_FILES


class HematoxylinModel:
    """A context-free stand-in model: each pixel's probability is a logistic of its own
    hematoxylin density (colour deconvolution). Raises after ``fail_after`` calls if given."""

    name = "hematoxylin-stand-in"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash in the model")
        hematoxylin = rgb2hed(np.clip(batch, 0.0, 1.0))[..., 0]
        z = np.clip((hematoxylin - 0.045) / 0.005, -50, 50)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def stand_in_bundle(pixel_size: float = 0.25) -> Bundle:
    """A bundle without preprocessing (equalisation would depend on the tile's content)."""
    card = ModelCard(
        name="stand-in",
        threshold=0.5,
        pixel_size=pixel_size,
        input_size=256,
        preprocess={"equalize": "none", "blur_kernel": 0},
        instances={"min_area_um2": 8.0, "split_depth_um": 0.15, "fill_holes": True},
    )
    return Bundle(path=None, card=card, model=None)


def synthetic_rgb(tiles: int = 2, size: int = 256, margin: int = 64) -> np.ndarray:
    """``tiles`` × ``tiles`` synthetic H&E tiles on white glass."""
    side = 2 * margin + tiles * size
    rgb = np.full((side, side, 3), 255, np.uint8)
    for i in range(tiles * tiles):
        y, x = margin + (i // tiles) * size, margin + (i % tiles) * size
        rgb[y : y + size, x : x + size] = generate_tile([7, i], size)[0]
    return rgb


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rgb = synthetic_rgb()
    path = write_aperio_tiff(tmp_path_factory.mktemp("slides") / "synthetic.svs", rgb)
    return path, rgb


FAST = SlideRunConfig(core_size=128, halo=64, chunk_tiles=4)
"""Small tiles, so the 640² test slide makes 25 tiles in 7 chunks."""


def run(slide: Path, out: Path, config: SlideRunConfig = FAST, model=None, **kwargs) -> dict:
    return segment_slide(
        slide,
        out,
        bundle=stand_in_bundle(),
        model=model or HematoxylinModel(),
        config=config,
        **kwargs,
    )


def reference_labels(
    rgb: np.ndarray, bundle: Bundle, model, pixel_size: float, lut: list | None = None
) -> np.ndarray:
    """The nuclei of one run over the whole image (equalised with ``lut`` if given)."""
    if lut is not None:
        rgb = enhance_with_lut(rgb, np.asarray(lut, np.uint8), bundle.preprocess)
    probabilities = predict_probabilities(
        model,
        rgb,
        bundle.preprocess,
        tile_size=256,
        overlap=SlideRunConfig().overlap,
        already_enhanced=lut is not None,
    )
    return label_instances(probabilities, bundle.threshold, bundle.instances, pixel_size=pixel_size)


def features_of(out: Path) -> list[dict]:
    with gzip.open(out / outputs.GEOJSON_FILE, "rt", encoding="utf-8") as handle:
        collection = json.load(handle)
    assert collection["type"] == "FeatureCollection"
    return collection["features"]


def rasterize(
    features: list[dict], shape: tuple[int, int], scale: float = 1.0, exclusive: bool = True
) -> np.ndarray:
    """The features' polygons as a label image (pixel centres inside), ``scale`` × level 0;
    asserts that no two nuclei share a pixel if ``exclusive`` (else the later one wins)."""
    import shapely
    from shapely import affinity
    from shapely.geometry import shape as to_shape

    labels = np.zeros(shape, np.int32)
    for feature in features:
        geometry = affinity.scale(to_shape(feature["geometry"]), scale, scale, origin=(0, 0))
        x0, y0, x1, y1 = geometry.bounds
        x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        x1, y1 = min(int(np.ceil(x1)), shape[1]), min(int(np.ceil(y1)), shape[0])
        ys, xs = np.mgrid[y0:y1, x0:x1]
        inside = shapely.contains_xy(geometry, xs + 0.5, ys + 0.5)
        window = labels[y0:y1, x0:x1]
        assert not exclusive or not window[inside].any(), f"nucleus {feature['id']} overlaps"
        window[inside] = int(feature["id"])
    return labels


def output_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    config = SlideRunConfig(
        region=[10, 20, 300, 400],
        instances={"min_area_um2": 4.0},
        tissue={"threshold": 0.2},
        threshold=0.4,
        pixel_size=0.5,
    )
    assert config.region == (10, 20, 300, 400)
    assert config.tissue == TissueConfig(threshold=0.2)
    assert SlideRunConfig.from_json(config.to_json()) == config
    assert config.instance_config(InstanceConfig()) == InstanceConfig(min_area_um2=4.0)
    assert SlideRunConfig().instance_config(InstanceConfig(split_depth_um=1.0)).split_depth_um == 1
    assert "read_ahead" not in config.result_dict()
    # flips shape the results, and are recorded only when on: folders made before match.
    assert "flips" not in config.result_dict()
    assert SlideRunConfig(flips=True).result_dict()["flips"] is True


@pytest.mark.parametrize(
    "values",
    [
        {"core_size": 32},
        {"halo": -1},
        {"chunk_tiles": 0},
        {"threshold": 1.5},
        {"instances": {"min_area_um2": -1}},
        {"instances": {"unknown": 1}},
        {"pixel_size": 0},
        {"region": (0, 0, 10)},
        {"region": (0, 0, 0, 10)},
        {"runtime": "fast"},
        {"read_ahead": -1},
        {"flips": "yes"},
        {"tissue": {"max_side": 1}},
    ],
)
def test_config_refuses_bad_values(values):
    with pytest.raises(ConfigError):
        SlideRunConfig(**values)


# --------------------------------------------------------------------------------------------
# Reading tiles on the work grid
# --------------------------------------------------------------------------------------------


def test_tiles_at_the_models_pixel_size_are_the_slides_pixels(synthetic_slide):
    path, rgb = synthetic_slide
    with open_slide(path) as slide:
        grid = plan_grid(slide.info, None, model_pixel_size=0.25, core_size=256, halo=32)
        image = read_tile_image(slide, grid, (-32, 100, 200, 150))
    assert np.all(image[:, :32] == 255)  # outside the slide: glass
    assert np.array_equal(image[:, 32:], rgb[100:250, 0:168])


def test_a_coarser_model_gets_block_averages(synthetic_slide):
    path, rgb = synthetic_slide
    with open_slide(path) as slide:
        grid = plan_grid(slide.info, None, model_pixel_size=0.5)
        image = read_tile_image(slide, grid, (10, 20, 100, 80))
    blocks = rgb[40:200, 20:220].reshape(80, 2, 100, 2, 3).mean(axis=(1, 3))
    assert np.abs(image - blocks).max() <= 0.5 + 1e-9


def test_a_20x_slide_is_enlarged_the_same_way_by_every_tile(tmp_path, synthetic_slide):
    _, rgb = synthetic_slide
    path = write_aperio_tiff(tmp_path / "20x.svs", rgb, mpp=0.5, app_mag=20)
    with open_slide(path) as slide:
        grid = plan_grid(slide.info, None, model_pixel_size=0.25)
        assert grid.scale == 2.0
        first = read_tile_image(slide, grid, (300, 300, 200, 200))
        second = read_tile_image(slide, grid, (400, 350, 200, 200))
    overlap_first, overlap_second = first[50:, 100:], second[:150, :100]
    assert np.abs(overlap_first.astype(int) - overlap_second).max() <= 1
    whole = cv2.resize(rgb, (2 * rgb.shape[1], 2 * rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(first.astype(int) - whole[300:500, 300:500]).max() <= 1


# --------------------------------------------------------------------------------------------
# Stitching
# --------------------------------------------------------------------------------------------


def assert_same_nuclei(reference: np.ndarray, stitched: np.ndarray, tolerance: float) -> None:
    match = match_instances(reference, stitched)
    assert abs(match.n_pred - match.n_true) <= tolerance * match.n_true
    assert match.tp >= (1 - tolerance) * match.n_true
    assert match.tp >= (1 - tolerance) * match.n_pred


def test_stitched_nuclei_equal_one_run_of_the_whole_image(tmp_path, synthetic_slide):
    path, rgb = synthetic_slide
    summary = run(path, tmp_path / "run")
    bundle = stand_in_bundle()
    reference = reference_labels(rgb, bundle, HematoxylinModel(), 0.25)
    features = features_of(tmp_path / "run")
    stitched = rasterize(features, rgb.shape[:2])
    n_reference = len(np.unique(reference)) - 1
    assert summary["nuclei"] == len(features) == n_reference > 50
    assert summary["tiles"] == 25
    match = match_instances(reference, stitched)
    assert match.tp == n_reference  # every nucleus once: none lost, none duplicated
    # Exact, but for the (rare) clusters larger than the halo that a box cut, all counted.
    assert np.count_nonzero(match.ious < 1.0) <= summary["edge_nuclei"]
    assert match.ious.min() > 0.99
    assert [f["id"] for f in features] == [str(i) for i in range(1, len(features) + 1)]


class ShiftedModel(HematoxylinModel):
    """The stand-in reading each pixel's probability 3 pixels to its left: not symmetric
    under mirroring, so averaging its flips changes what it finds."""

    name = "shifted-stand-in"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.roll(super().__call__(batch), 3, axis=2)


def test_flips_average_each_tile_over_its_mirror_images_and_are_recorded(tmp_path, synthetic_slide):
    path, rgb = synthetic_slide
    flipped = dataclasses.replace(FAST, flips=True)
    plain_model, flips_model = ShiftedModel(), ShiftedModel()
    plain = run(path, tmp_path / "plain", model=plain_model)
    summary = run(path, tmp_path / "flips", flipped, model=flips_model)
    assert flips_model.calls == 4 * plain_model.calls
    assert summary["flips"] is True and plain["flips"] is False
    assert summary["runtime"] == plain["runtime"] == "shifted-stand-in"
    assert json.loads((tmp_path / "flips" / "run.json").read_text())["config"]["flips"] is True
    assert "flips" not in json.loads((tmp_path / "plain" / "run.json").read_text())["config"]
    # The stitched nuclei are one flip-averaged run's over the whole image (but near the model
    # tiles' edges, where the shift wraps around), not the plain run's.
    bundle = stand_in_bundle()
    reference = reference_labels(rgb, bundle, with_flips(ShiftedModel()), 0.25)
    stitched = rasterize(features_of(tmp_path / "flips"), rgb.shape[:2])
    plain_reference = reference_labels(rgb, bundle, ShiftedModel(), 0.25)
    same, other = match_instances(reference, stitched), match_instances(plain_reference, stitched)
    assert_same_nuclei(reference, stitched, 0.02)
    assert same.ious.mean() > 0.95 and other.ious.mean() < 0.8  # measured: 0.99 and 0.65
    # A folder of the run without flips is not continued with them.
    with pytest.raises(SlideError, match=r"holds another run.*config\.flips"):
        run(path, tmp_path / "plain", flipped)


def test_stitching_a_20x_slide_on_the_upsampled_grid(tmp_path, synthetic_slide):
    _, rgb = synthetic_slide
    half = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    path = write_aperio_tiff(tmp_path / "20x.svs", half, mpp=0.5, app_mag=20)
    config = SlideRunConfig(core_size=256, halo=64, chunk_tiles=4)
    summary = run(path, tmp_path / "run", config)
    assert summary["grid"]["scale"] == 2.0
    work = cv2.resize(half, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    reference = reference_labels(work, stand_in_bundle(), HematoxylinModel(), 0.25)
    stitched = rasterize(features_of(tmp_path / "run"), work.shape[:2], scale=2.0)
    assert_same_nuclei(reference, stitched, 0.005)


def clahe_bundle() -> Bundle:
    """The stand-in with the default model's equalisation (CLAHE, one tile: one mapping)."""
    bundle = stand_in_bundle()
    preprocess = {"equalize": "clahe", "clahe_tile_grid": 1, "clahe_clip_limit": 4.0}
    return Bundle(None, dataclasses.replace(bundle.card, preprocess=preprocess), None)


def test_one_equalisation_for_the_whole_slide_fitted_on_its_tissue(tmp_path):
    """Every tile is equalised with the slide's one mapping, fitted on the tissue only: the
    nuclei are those of one run over the whole image with that mapping, and more glass around
    the same tissue changes nothing."""
    rgb = synthetic_rgb(tiles=2, margin=64)
    wide = np.pad(rgb, ((192, 192), (192, 192), (0, 0)), constant_values=255)
    # equalised, the stand-in makes blobs of up to 130 pixels: a halo wider than that
    config = SlideRunConfig(core_size=192, halo=160, chunk_tiles=4)
    results = {}
    for name, image in (("narrow", rgb), ("wide", wide)):
        path = write_aperio_tiff(tmp_path / f"{name}.svs", image)
        summary = segment_slide(
            path, tmp_path / name, bundle=clahe_bundle(), model=HematoxylinModel(), config=config
        )
        results[name] = (summary, features_of(tmp_path / name))
    lut = results["narrow"][0]["settings"]["equalisation"]["lut"]
    wide_lut = results["wide"][0]["settings"]["equalisation"]["lut"]
    # the same tissue, sampled from other tiles through a coarser mask: nearly the same mapping
    assert np.abs(np.subtract(lut, wide_lut)).max() <= 3
    own = equalisation_lut(lightness_histogram(rgb), clahe_bundle().preprocess)
    assert lut != own.tolist()  # the whole image's own mapping counts the glass
    assert lut != list(range(256))
    reference = reference_labels(rgb, clahe_bundle(), HematoxylinModel(), 0.25, lut)
    stitched = rasterize(results["narrow"][1], rgb.shape[:2])
    assert_same_nuclei(reference, stitched, 0.0)
    wide_stitched = rasterize(results["wide"][1], wide.shape[:2])[192:-192, 192:-192]
    assert_same_nuclei(reference, wide_stitched, 0.005)


@pytest.mark.slow
def test_stitching_with_the_default_model_on_real_tissue(tmp_path, monuseg):
    """The real network on MoNuSeg tissue, tiled on one lattice (cores of 3 × 224 pixels), gives
    the nuclei of one run over the whole image equalised with the slide's one mapping.

    (Each tile equalised over itself instead, as before the slide-wide mapping, changed nuclei
    anywhere, not only at tile borders: measured on this mosaic with cores of 512 and a halo
    of 96, 354 nuclei tiled against 311 in one run over the whole slide with its glass.)
    """
    from segcore.bundles.loading import load_bundle
    from segcore.slides.grid import fit_model_tiles

    weights = Path(__file__).resolve().parents[1] / "weights" / "default"
    if not (weights / "model.keras").is_file():
        pytest.skip("the default model is not in weights/default")
    loaded = load_bundle(weights)
    bundle = Bundle(loaded.path, loaded.card, None)
    mosaic = monuseg_mosaic(monuseg, rows=2, cols=2, crop=500, margin=64)
    path = write_aperio_tiff(tmp_path / "mosaic.svs", mosaic.rgb)
    config = SlideRunConfig(core_size=672, halo=128, chunk_tiles=2)
    summary = segment_slide(
        path, tmp_path / "run", bundle=bundle, model=loaded.model, config=config
    )
    assert summary["grid"]["lattice_aligned"] and summary["tiles"] == 4
    height, width = mosaic.rgb.shape[:2]
    padded = np.full(
        (fit_model_tiles(height + 256, (256, 32)), fit_model_tiles(width + 256, (256, 32)), 3),
        255,
        np.uint8,
    )
    padded[128 : 128 + height, 128 : 128 + width] = mosaic.rgb
    lut = summary["settings"]["equalisation"]["lut"]
    reference = reference_labels(padded, bundle, loaded.model, 0.25, lut)[128:-128, 128:-128]
    reference = reference[:height, :width]
    stitched = rasterize(features_of(tmp_path / "run"), (height, width))
    assert summary["nuclei"] > 150
    assert_same_nuclei(reference, stitched, 0.005)


# --------------------------------------------------------------------------------------------
# The region split into nuclei: the core and what its nuclei reach, the whole box's nuclei
# --------------------------------------------------------------------------------------------


def blobs(seed: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Probabilities of nucleus-like blobs: smoothed noise (larger ``sigma``: larger blobs,
    clusters and long branching objects), rescaled to [0, 1]."""
    noise = np.random.default_rng(seed).random(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def kept_nuclei(probabilities, core, instances, whole_box):
    """:func:`tile_nuclei` of one box ``(0, 0)`` with the core ``(x, y, w, h)``."""
    from types import SimpleNamespace

    from segcore.slides.grid import GridTile
    from segcore.wholeslide.tiles import tile_nuclei

    h, w = probabilities.shape
    tile = GridTile(index=0, row=0, col=0, core=core, box=(0, 0, w, h))
    grid = SimpleNamespace(pixel_size=0.25, scale=1.0, halo=core[0])
    image = np.full((h, w, 3), 128, np.uint8)
    return tile_nuclei(
        tile,
        image,
        probabilities,
        grid=grid,
        threshold=0.5,
        instances=instances,
        whole_box=whole_box,
    )


@pytest.mark.parametrize("foreground", [0.4, 0.25], ids=["crowded", "sparse"])
@pytest.mark.parametrize(
    "instances",
    [
        InstanceConfig(),
        InstanceConfig(split_depth_um=0.0, fill_holes=False),
        InstanceConfig(split_depth_um=0.5, min_area_um2=2.0),
    ],
    ids=["default", "every-maximum-no-filling", "deeper"],
)
def test_the_nuclei_region_keeps_the_whole_boxs_nuclei(foreground, instances):
    """Every nucleus a tile keeps, split over :func:`nuclei_region` only, is the one split over
    the whole box: same pixels, measurements, outline and order; the region grows with the
    objects that cross the core's border (crowded: often to the whole box) and is smaller than
    the box when they are sparser."""
    from segcore.wholeslide.nuclei_region import nuclei_region

    shape, core = (301, 333), (61, 47, 200, 190)  # odd sizes and an odd corner
    kept, smaller = 0, 0
    for seed, sigma in enumerate([2.0, 3.0, 4.0, 6.0]):  # small blobs to long clusters
        probabilities = blobs(seed, shape, sigma)
        threshold = np.quantile(probabilities, 1 - foreground)
        probabilities = np.clip(probabilities - threshold + 0.5, 0, 1).astype(np.float32)
        whole = kept_nuclei(probabilities, core, instances, whole_box=True)
        part = kept_nuclei(probabilities, core, instances, whole_box=False)
        assert part.records == whole.records and part.edge_nuclei == whole.edge_nuclei
        kept += len(whole.records)
        x0, y0, x1, y1 = nuclei_region(probabilities, 0.5, instances.fill_holes, (61, 47, 261, 237))
        assert x0 <= 61 and y0 <= 47 and x1 >= 261 and y1 >= 237 and x0 % 2 == y0 % 2 == 0
        smaller += (x1 - x0) * (y1 - y0) < shape[0] * shape[1]
    assert kept >= 15
    assert foreground > 0.3 or smaller >= 3
    assert foreground < 0.3 or smaller < 4  # crowded: some object crosses far


def test_an_object_crossing_the_core_reaches_as_far_as_it_goes():
    """A long object from the core to the box's right edge takes the region there (and the
    nucleus it holds stays whole); a ring beside the core, whose hole reaches into the region,
    is taken whole, so its hole is filled as over the whole box."""
    from segcore.wholeslide.nuclei_region import CONTEXT_PIXELS, nuclei_region

    probabilities = np.zeros((200, 300), np.float32)
    core = (50, 50, 150, 150)  # x0, y0, x1, y1
    probabilities[60:70, 40:60] = 1  # crosses the left border: 10 px out
    assert nuclei_region(probabilities, 0.5, True, core) == (24, 44, 150, 150)
    probabilities[100:108, 120:300] = 1  # from the core to the right edge
    assert nuclei_region(probabilities, 0.5, True, core)[2] == 300
    probabilities[100:108, 120:300] = 0
    ring = np.zeros((200, 300), np.uint8)
    cv2.circle(ring, (190, 150), 20, 1, thickness=3)  # x 170..210, not meeting the core
    probabilities[60:70, 138:160] = 1  # a nucleus crossing the right border: to x = 160
    probabilities = np.maximum(probabilities, ring.astype(np.float32))
    hole = np.flatnonzero((ndimage.binary_fill_holes(ring) > ring).any(axis=0))
    assert hole[0] < 160 + CONTEXT_PIXELS < hole[-1]  # the hole reaches into the region
    assert nuclei_region(probabilities, 0.5, True, core)[2] >= hole[-1] + 2  # and all of it
    assert nuclei_region(probabilities, 0.5, False, core)[2] == 160 + CONTEXT_PIXELS
    instances = InstanceConfig()
    whole = kept_nuclei(probabilities, (50, 50, 100, 100), instances, whole_box=True)
    part = kept_nuclei(probabilities, (50, 50, 100, 100), instances, whole_box=False)
    assert part.records == whole.records and len(whole.records) == 2


@pytest.mark.slow
def test_real_tissue_gives_the_same_outputs_from_the_region_as_from_the_whole_box(
    tmp_path, monuseg, monkeypatch
):
    """On a slide of real MoNuSeg tissue, splitting only each tile's
    :func:`nuclei_region` gives the bytes of splitting its whole box: every nucleus, its
    outline, measurements and id, none lost or duplicated across tile borders."""
    import functools

    from segcore.wholeslide import nuclei_region as region_module
    from segcore.wholeslide import pipeline, tiles

    mosaic = monuseg_mosaic(monuseg, rows=2, cols=2, crop=400, margin=48)
    path = write_aperio_tiff(tmp_path / "mosaic.svs", mosaic.rgb)
    config = SlideRunConfig(core_size=224, halo=96, chunk_tiles=4)
    fractions = []
    real_region = region_module.nuclei_region

    def measured(probabilities, *args):
        x0, y0, x1, y1 = real_region(probabilities, *args)
        fractions.append((x1 - x0) * (y1 - y0) / probabilities.size)
        return x0, y0, x1, y1

    monkeypatch.setattr(tiles, "nuclei_region", measured)
    summary = run(path, tmp_path / "region", config)
    whole_box = functools.partial(tiles.tile_nuclei, whole_box=True)
    monkeypatch.setattr(pipeline, "tile_nuclei", whole_box)
    whole = run(path, tmp_path / "whole", config)
    assert summary["tiles"] == whole["tiles"] == len(fractions) >= 16
    assert summary["nuclei"] == whole["nuclei"] > 150
    assert output_bytes(tmp_path / "region") == output_bytes(tmp_path / "whole")
    assert np.median(fractions) < 0.75  # boxes of 416² for cores of 224²: the region is smaller
    # and the stitched nuclei are those of one run over the whole image, each once (but for
    # a cluster wider than the halo; outlines have no holes: one nucleus wrapped around
    # another is drawn over it)
    features = features_of(tmp_path / "region")
    reference = reference_labels(mosaic.rgb, stand_in_bundle(), HematoxylinModel(), 0.25)
    assert abs(len(features) - len(np.unique(reference)) + 1) <= 0.005 * len(features)
    assert_same_nuclei(reference, rasterize(features, reference.shape, exclusive=False), 0.005)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def test_outputs_geojson_csv_heat_map_and_summary(tmp_path, synthetic_slide):
    import csv

    from shapely.geometry import shape as to_shape

    path, rgb = synthetic_slide
    out = tmp_path / "run"
    summary = run(path, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "run.json", "summary.json"])
    assert json.loads((out / "summary.json").read_text()) == summary
    features = features_of(out)
    with open(out / outputs.CSV_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == outputs.CSV_COLUMNS
    assert len(rows) == len(features) == summary["nuclei"]
    for feature, row in zip(features, rows, strict=True):
        assert feature["type"] == "Feature" and feature["id"] == row["id"]
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["classification"]["name"] == "Nucleus"
        measurements = properties["measurements"]
        assert set(measurements) == set(outputs.CSV_COLUMNS)
        assert float(row["area_um2"]) == measurements["area_um2"]
        polygon = to_shape(feature["geometry"])
        assert polygon.is_valid
        assert polygon.area == pytest.approx(measurements["area_um2"] / 0.25**2, rel=1e-6)
        centroid = polygon.centroid  # of the pixel squares: the table's centroid
        assert (centroid.x, centroid.y) == pytest.approx(
            (measurements["centroid_x"], measurements["centroid_y"]), abs=1e-3
        )
    for key in ("nuclei", "tissue_mm2", "density_per_mm2", "seconds", "tiles", "megapixels"):
        assert summary[key] is not None
    assert summary["state"] == "completed" and summary["runtime"] == "hematoxylin-stand-in"
    assert summary["slide"]["name"] == "synthetic.svs"
    assert len(summary["slide"]["sha256_ends"]) == 64
    assert summary["density_per_mm2"] == pytest.approx(
        summary["nuclei"] / summary["tissue_mm2"], rel=1e-3
    )
    assert summary["tissue_mm2"] == pytest.approx(512 * 512 * 0.25**2 / 1e6, rel=0.15)
    density = np.load(out / outputs.DENSITY_NPY)
    assert density.dtype == np.float32 and list(density.shape) == summary["density"]["shape"]
    cell_mm2 = (summary["density"]["cell_um"] / 1000) ** 2
    assert density.sum() * cell_mm2 == pytest.approx(summary["nuclei"], rel=1e-4)
    picture = cv2.imread(str(out / outputs.DENSITY_PNG), cv2.IMREAD_UNCHANGED)
    assert picture.shape == (*density.shape, 4)
    assert picture[0, 0, 3] == 0 and picture[rgb.shape[0] // 2, rgb.shape[1] // 2, 3] == 255


def test_nuclei_cut_by_a_too_small_halo_are_counted(tmp_path, synthetic_slide):
    path, _ = synthetic_slide
    summary = run(path, tmp_path / "run", SlideRunConfig(core_size=128, halo=0))
    assert summary["edge_nuclei"] > 0


def test_a_slide_without_tissue_gives_empty_outputs(tmp_path):
    path = write_aperio_tiff(tmp_path / "glass.svs", np.full((300, 300, 3), 250, np.uint8))
    summary = run(path, tmp_path / "run")
    assert summary["nuclei"] == 0 and summary["tiles"] == 0
    assert summary["tissue_mm2"] == 0 and summary["density_per_mm2"] is None
    assert features_of(tmp_path / "run") == []
    assert (tmp_path / "run" / outputs.CSV_FILE).read_text().startswith("id,centroid_x")


def test_progress_reports_every_tile_and_phase(tmp_path, synthetic_slide):
    path, _ = synthetic_slide
    reports = []
    summary = run(path, tmp_path / "run", progress=reports.append)
    phases = [r["phase"] for r in reports]
    assert phases[:2] == ["tissue", "segmenting"] and phases[-2:] == ["merging", "completed"]
    done = [r["tiles_done"] for r in reports if r["phase"] == "segmenting"]
    assert done == list(range(0, 26))
    assert reports[-1]["nuclei"] == summary["nuclei"] and reports[-1]["tiles_total"] == 25
    assert reports[-2]["eta_s"] == 0


def test_threads_change_nothing_in_the_outputs(tmp_path, synthetic_slide, monkeypatch):
    path, _ = synthetic_slide
    run(path, tmp_path / "threads")
    monkeypatch.setenv("SEGCORE_SLIDE_POST_THREAD", "0")
    config = SlideRunConfig(core_size=128, halo=64, chunk_tiles=4, read_ahead=0)
    run(path, tmp_path / "inline", config)
    assert output_bytes(tmp_path / "threads") == output_bytes(tmp_path / "inline")


# --------------------------------------------------------------------------------------------
# Resuming, refusing, failing
# --------------------------------------------------------------------------------------------


def no_engine_threads() -> bool:
    names = {thread.name for thread in threading.enumerate()}
    return not any(name.startswith(("slide-reader", "slide-nuclei")) for name in names)


def test_a_stopped_run_resumes_to_identical_outputs(tmp_path, synthetic_slide):
    path, _ = synthetic_slide
    run(path, tmp_path / "whole")
    asked = []
    stopped = run(path, tmp_path / "run", should_stop=lambda: len(asked) > 5 or asked.append(1))
    assert stopped["state"] == "stopped" and stopped["tiles_done"] == 4  # chunk 0 of 4 tiles
    assert stopped["tiles_total"] == 25 and no_engine_threads()
    assert not (tmp_path / "run" / "summary.json").exists()
    assert [p.name for p in (tmp_path / "run" / "parts").iterdir()] == ["chunk-00000.jsonl.gz"]
    model = HematoxylinModel()
    summary = run(path, tmp_path / "run", model=model)
    assert summary["tiles_computed"] == 21 and model.calls == 21 and summary["resumed"]
    assert output_bytes(tmp_path / "run") == output_bytes(tmp_path / "whole")
    assert not (tmp_path / "run" / "parts").exists()


def test_a_crash_inside_a_chunk_resumes_to_identical_outputs(tmp_path, synthetic_slide):
    path, _ = synthetic_slide
    run(path, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(path, tmp_path / "run", model=HematoxylinModel(fail_after=10))  # tile 11, chunk 2
    assert no_engine_threads()
    parts = sorted(p.name for p in (tmp_path / "run" / "parts").iterdir())
    assert parts == ["chunk-00000.jsonl.gz", "chunk-00001.jsonl.gz"]
    assert not (tmp_path / "run" / "summary.json").exists()
    summary = run(path, tmp_path / "run")
    assert summary["tiles_computed"] == 17
    assert output_bytes(tmp_path / "run") == output_bytes(tmp_path / "whole")


def test_a_finished_run_returns_its_summary_without_computing(tmp_path, synthetic_slide):
    path, _ = synthetic_slide
    first = run(path, tmp_path / "run")
    again = run(path, tmp_path / "run", model=HematoxylinModel(fail_after=0))
    assert again == first


def test_a_folder_holding_another_run_is_refused(tmp_path, synthetic_slide):
    path, rgb = synthetic_slide
    out = tmp_path / "run"
    run(path, out, should_stop=lambda: True)
    other = SlideRunConfig(core_size=128, halo=64, chunk_tiles=4, threshold=0.3)
    with pytest.raises(SlideError, match=rf"{out} holds another run.*config.threshold"):
        run(path, out, other)
    other_slide = write_aperio_tiff(tmp_path / "other.svs", rgb[::-1].copy())
    with pytest.raises(SlideError, match=r"holds another run .*synthetic.svs.*slide\."):
        run(other_slide, out)
    # read_ahead does not change the results: the run resumes.
    assert run(path, out, SlideRunConfig(core_size=128, halo=64, chunk_tiles=4, read_ahead=1))[
        "state"
    ] == ("completed")


def fail_fsync_for(monkeypatch, name: str) -> None:
    """Makes ``os.fsync`` of a file whose path contains ``name`` raise ENOSPC (a full disk)."""
    real = os.fsync

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("name", ["nuclei.csv", "chunk-00001", "density.png"])
def test_a_full_disk_fails_clearly_and_leaves_nothing_half_written(
    tmp_path, synthetic_slide, monkeypatch, name
):
    path, _ = synthetic_slide
    out = tmp_path / "run"
    fail_fsync_for(monkeypatch, name)
    with pytest.raises(SlideError, match=rf"disk full while writing {out}/.*{name}"):
        run(path, out)
    assert no_engine_threads()
    assert not (out / "summary.json").exists()
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    monkeypatch.undo()
    assert run(path, out)["state"] == "completed"


def test_an_unreadable_region_fails_naming_the_tile_and_region(
    tmp_path, synthetic_slide, monkeypatch
):
    path, _ = synthetic_slide
    real = Slide.read_region

    def read_region(self, x, y, width, height, *, level=0):
        if (x, y) == (192, 64):  # tile 7's box: core (256, 128), halo 64
            raise SlideError(f"{self.info.path.name}: region x={x}, y={y} cannot be read: bad")
        return real(self, x, y, width, height, level=level)

    monkeypatch.setattr(Slide, "read_region", read_region)
    with pytest.raises(SlideError, match=r"tile 7 \(row 1, column 2.*x=192, y=64.*synthetic"):
        run(path, tmp_path / "run")
    assert no_engine_threads()
    assert not (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "parts" / "chunk-00000.jsonl.gz").exists()


KILLED_RUN = """
import sys, time
from pathlib import Path
from tests.test_wholeslide import FAST, HematoxylinModel, run

class Slow(HematoxylinModel):
    def __call__(self, batch):
        time.sleep(0.3)
        return super().__call__(batch)

run(Path(sys.argv[1]), Path(sys.argv[2]), FAST, model=Slow())
"""


@pytest.mark.slow
def test_a_killed_run_resumes_to_identical_outputs(tmp_path, synthetic_slide):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    path, _ = synthetic_slide
    run(path, tmp_path / "whole")
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(path), str(out)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (out / "parts" / "chunk-00001.jsonl.gz").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # inside chunk 2
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "summary.json").exists()
    summary = run(path, out)
    assert 0 < summary["tiles_computed"] < 25
    assert output_bytes(out) == output_bytes(tmp_path / "whole")


def test_large_shrinks_are_read_in_bands(synthetic_slide, monkeypatch):
    from segcore.wholeslide import tiles

    path, rgb = synthetic_slide
    monkeypatch.setattr(tiles, "BAND_PIXELS", 5000)
    sizes = []
    with open_slide(path) as slide:
        real = slide.read_region

        def read_region(x, y, width, height, *, level=0):
            sizes.append(width * height)
            return real(x, y, width, height, level=level)

        slide.read_region = read_region
        grid = plan_grid(slide.info, None, model_pixel_size=1.0)  # 4 × 4 blocks
        image = read_tile_image(slide, grid, (20, 10, 100, 120))
        plain = plan_grid(slide.info, None, model_pixel_size=0.25)
        assert np.array_equal(read_tile_image(slide, plain, (5, 6, 300, 200)), rgb[6:206, 5:305])
    blocks = rgb[40:520, 80:480].reshape(120, 4, 100, 4, 3).mean(axis=(1, 3))
    assert np.abs(image - blocks).max() <= 0.5 + 1e-9
    assert max(sizes) <= 5000 and len(sizes) > 10
