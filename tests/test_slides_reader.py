"""Opening slides and reading regions: every format the test writers make, bad inputs, threads.

The slides are built by ``devtools.slides`` (no real slide can be downloaded): exact block-mean
pyramids, lossless unless a test says JPEG, so regions can be compared pixel for pixel.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from devtools import slides as ds
from segcore.data import images
from segcore.errors import ConfigError, SlideError
from segcore.slides.reader import SLIDE_SUFFIXES, open_slide
from segcore.slides.tiff_backend import composite_on_white, ome_physical_size
from tests.conftest import write_png

HEIGHT, WIDTH = 1040, 1300  # not multiples of the tiles: edge tiles are partial
LEVELS = (1, 2, 4)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    """Random pixels (every pixel differs from its neighbours) with a white glass border."""
    rng = np.random.default_rng(7)
    rgb = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    rgb[40:-40, 60:-60] = rng.integers(0, 256, (HEIGHT - 80, WIDTH - 120, 3), dtype=np.uint8)
    return rgb


@pytest.fixture(scope="module")
def written(tmp_path_factory, source) -> dict[str, Path]:
    """The same image as each format the reader meets."""
    folder = tmp_path_factory.mktemp("slides")
    written = {
        "aperio": ds.write_aperio_tiff(folder / "s.svs", source, levels=LEVELS, tile=256),
        "ome": ds.write_ome_tiff(folder / "s.ome.tif", source, mpp=0.5, levels=LEVELS, tile=128),
        "plain": ds.write_plain_tiff(folder / "plain.tif", source, tile=256),
        "strips": ds.write_plain_tiff(folder / "strips.tif", source, tile=None),
    }
    with pytest.MonkeyPatch.context() as patch:  # as the writers store slides over 4 GB
        patch.setattr(ds, "_bigtiff", lambda _source: True)
        written["aperio-bigtiff"] = ds.write_aperio_tiff(
            folder / "big.svs", source, levels=LEVELS, tile=256
        )
        written["ome-bigtiff"] = ds.write_ome_tiff(
            folder / "big.ome.tif", source, mpp=0.5, levels=LEVELS, tile=128
        )
    return written


EXPECTED = {  # format, backend, levels, pixel size, its source, objective
    "aperio": ("aperio", "openslide", 3, 0.25, "openslide.mpp-x", 40.0),
    "ome": ("ome-tiff", "tifffile", 3, 0.5, "OME PhysicalSizeX", None),
    "plain": ("generic-tiff", "openslide", 1, None, "none", None),
    "strips": ("tiff", "tifffile", 1, None, "none", None),
    # BigTIFF (64-bit offsets, 20-byte directory entries): what a 40,000² slide is written as
    "aperio-bigtiff": ("aperio", "openslide", 3, 0.25, "openslide.mpp-x", 40.0),
    "ome-bigtiff": ("ome-tiff", "tifffile", 3, 0.5, "OME PhysicalSizeX", None),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_format_opens_with_its_size_levels_and_pixel_size(written, kind):
    fmt, backend, n_levels, pixel_size, source_name, power = EXPECTED[kind]
    with open_slide(written[kind]) as slide:
        info = slide.info
        assert (info.format, info.backend) == (fmt, backend)
        assert (info.width, info.height) == (WIDTH, HEIGHT)
        assert len(info.levels) == n_levels
        for level, factor in zip(info.levels, LEVELS, strict=False):
            assert (level.width, level.height) == (WIDTH // factor, HEIGHT // factor)
            assert level.downsample == pytest.approx(factor, rel=0.01)
        assert info.pixel_size == pixel_size
        assert info.pixel_size_source == source_name
        assert info.objective_power == power
        data = json.loads(json.dumps(info.to_dict()))
        assert data["name"] == written[kind].name and data["width"] == WIDTH
        assert len(data["levels"]) == n_levels


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_regions_equal_the_source_pixels(written, source, kind):
    with open_slide(written[kind]) as slide:
        for level in range(len(slide.info.levels)):
            factor = LEVELS[level]
            expected = ds.downsample(source, factor)
            x, y = 300, 200  # level-0 corner, a multiple of every factor
            region = slide.read_region(x, y, 229, 130, level=level)  # crosses tile borders
            assert region.shape == (130, 229, 3) and region.dtype == np.uint8
            lx, ly = x // factor, y // factor
            np.testing.assert_array_equal(region, expected[ly : ly + 130, lx : lx + 229])


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_outside_the_slide_is_white_glass(written, source, kind):
    with open_slide(written[kind]) as slide:
        region = slide.read_region(WIDTH - 50, -20, 100, 60)
        np.testing.assert_array_equal(region[20:, :50], source[:40, WIDTH - 50 :])
        assert (region[:20] == 255).all() and (region[:, 50:] == 255).all()
        assert (slide.read_region(WIDTH + 10, HEIGHT + 10, 8, 8) == 255).all()


@pytest.mark.parametrize("kind", ["aperio", "ome"])
def test_thumbnail_is_small_read_from_a_reduced_level(written, source, kind, monkeypatch):
    with open_slide(written[kind]) as slide:
        levels_read = []
        original = slide.read_region

        def spy(*args, **kwargs):
            levels_read.append(kwargs.get("level", 0))
            return original(*args, **kwargs)

        monkeypatch.setattr(slide, "read_region", spy)
        thumb, downsample = slide.thumbnail(300)
        assert max(thumb.shape[:2]) == 300 and thumb.dtype == np.uint8
        assert thumb.shape[:2] == (round(HEIGHT * 300 / WIDTH), 300)
        assert downsample == pytest.approx(WIDTH / 300, rel=0.01)
        assert set(levels_read) == {2}  # the 4× level, not level 0
        level2 = ds.downsample(source, 4)
        expected = cv2.resize(level2, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(thumb, expected)


def test_thumbnail_of_a_small_slide_is_the_slide(written, source):
    with open_slide(written["plain"]) as slide:
        thumb, downsample = slide.thumbnail(4096)
    np.testing.assert_array_equal(thumb, source)
    assert downsample == 1.0


def test_thumbnail_read_in_bands_matches_one_read(written, monkeypatch):
    from segcore.slides import reader

    with open_slide(written["plain"]) as slide:
        whole, _ = slide.thumbnail(300)
        monkeypatch.setattr(reader, "_BAND_PIXELS", 20_000)  # about 15 rows of level 0 a band
        banded, _ = slide.thumbnail(300)
    assert banded.shape == whole.shape
    assert np.abs(banded.astype(int) - whole).mean() < 2


def test_level_for_downsample_never_coarser_than_asked(written):
    with open_slide(written["aperio"]) as slide:
        picks = {d: slide.level_for_downsample(d) for d in (0.5, 1, 1.9, 1.99, 2, 3.9, 4, 100)}
        assert picks == {0.5: 0, 1: 0, 1.9: 0, 1.99: 1, 2: 1, 3.9: 1, 4: 2, 100: 2}
        assert slide.level_pixel_size(0) == 0.25
        assert slide.level_pixel_size(2) == pytest.approx(1.0, rel=0.01)


def test_given_pixel_size_overrides_or_supplies_the_files(written):
    with open_slide(written["plain"], pixel_size=0.5) as slide:
        assert (slide.info.pixel_size, slide.info.pixel_size_source) == (0.5, "given")
    with open_slide(written["aperio"], pixel_size=0.26) as slide:
        assert (slide.info.pixel_size, slide.info.pixel_size_source) == (0.26, "given")
    with pytest.raises(ConfigError, match="pixel size"):
        open_slide(written["plain"], pixel_size=0)


def test_ome_pixel_size_units_and_out_of_range_values(tmp_path, source):
    small = source[:256, :256]
    nm = ds.write_ome_tiff(tmp_path / "nm.ome.tif", small, mpp=0.25, unit="nm", levels=(1,))
    with open_slide(nm) as slide:
        assert slide.info.pixel_size == pytest.approx(0.25)
    far = ds.write_ome_tiff(tmp_path / "far.ome.tif", small, mpp=72.0, levels=(1,))
    with open_slide(far) as slide:  # outside (0, 10] µm/px: reported as absent
        assert (slide.info.pixel_size, slide.info.pixel_size_source) == (None, "none")
    assert ome_physical_size("<OME><Pixels PhysicalSizeX='2' PhysicalSizeXUnit='pc'/></OME>") == (
        None,
        None,
    )
    assert ome_physical_size("not xml") == (None, None)


@pytest.mark.parametrize("tile", [(128, 128), None], ids=["tiled-openslide", "strips-tifffile"])
def test_tiff_resolution_tags_give_the_pixel_size(tmp_path, source, tile):
    for name, resolution, unit, expected in (
        ("cm.tif", 1e4 / 0.5, "CENTIMETER", 0.5),
        ("inch.tif", 25_400 / 0.25, "INCH", 0.25),
        ("72dpi.tif", 72, "INCH", None),  # 353 µm/px: a default, not a measurement
    ):
        path = tmp_path / name
        tifffile.imwrite(
            path, source[:256, :256], tile=tile, photometric="rgb", metadata=None,
            resolution=(resolution, resolution), resolutionunit=unit,
        )  # fmt: skip
        with open_slide(path) as slide:
            assert slide.info.backend == ("openslide" if tile else "tifffile")
            assert slide.info.pixel_size == pytest.approx(expected)
            assert slide.info.pixel_size_source == ("TIFF resolution" if expected else "none")


@pytest.mark.parametrize("ome", [False, True])
def test_transparent_pixels_are_composited_on_white(tmp_path, ome):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    alpha = np.full((300, 400, 1), 255, np.uint8)
    alpha[:100], alpha[100:200] = 0, 128
    path = tmp_path / ("rgba.ome.tif" if ome else "rgba.tif")
    tifffile.imwrite(
        path, np.concatenate([rgb, alpha], axis=2), tile=(256, 256), photometric="rgb",
        extrasamples=["unassalpha"], ome=ome, metadata={"axes": "YXS"} if ome else None,
    )  # fmt: skip
    with open_slide(path) as slide:
        region = slide.read_region(0, 0, 400, 300)
    np.testing.assert_array_equal(region, composite_on_white(rgb, alpha, premultiplied=False))
    assert (region[:100] == 255).all()
    np.testing.assert_array_equal(region[200:], rgb[200:])


def test_composite_on_white_premultiplied():
    rgb = np.array([[[100, 0, 50]]], np.uint8)
    alpha = np.array([[[100]]], np.uint8)
    np.testing.assert_array_equal(
        composite_on_white(rgb, alpha, premultiplied=True), [[[255, 155, 205]]]
    )


@pytest.mark.parametrize("kind", ["aperio", "ome"])
def test_two_threads_reading_at_once_get_the_right_pixels(written, source, kind):
    expected = ds.downsample(source, 2)
    errors: list[str] = []
    with open_slide(written[kind]) as slide:

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(30):
                level = int(rng.integers(0, 2))
                factor = LEVELS[level]
                x, y = (int(v) * 4 for v in rng.integers(0, 250, 2))
                region = slide.read_region(x, y, 100, 90, level=level)
                want = (source if level == 0 else expected)[
                    y // factor : y // factor + 90, x // factor : x // factor + 100
                ]
                if not np.array_equal(region[: want.shape[0], : want.shape[1]], want):
                    errors.append(f"thread {seed}: level {level} at {x},{y}")

        threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors


# --- bad input: one SlideError naming the file ------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SlideError, match=r"nope\.svs: no such slide file"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideError, match="a folder, not a slide file"):
        open_slide(tmp_path)


def test_files_that_are_not_slides(tmp_path):
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n" * 20)
    png = write_png(tmp_path / "tile.png", np.zeros((32, 32, 3), np.uint8))
    renamed = tmp_path / "tile.svs"
    renamed.write_bytes(png.read_bytes())
    for path in (text, png, renamed):
        with pytest.raises(SlideError, match=rf"{path.name}: not a slide \(reads .*SVS"):
            open_slide(path)


def _cut_points(path: Path) -> list[int]:
    """Where to cut a file: through every level's data, at each level's end, and 1 byte short."""
    size = path.stat().st_size
    ends = []
    with tifffile.TiffFile(path) as tif:
        for level in tif.series[0].levels:
            page = level.keyframe
            ends.append(int(np.max(np.add(page.dataoffsets, page.databytecounts))))
    cuts = {6, *ends, *(int(size * f) for f in np.linspace(0.01, 0.99, 9)), size - 1}
    return sorted(cuts - {size})


@pytest.mark.parametrize("kind", ["aperio", "ome", "aperio-bigtiff", "ome-bigtiff"])
def test_truncated_slides_fail_cleanly_wherever_cut(tmp_path, written, kind):
    data = written[kind].read_bytes()
    for cut in _cut_points(written[kind]):
        path = tmp_path / f"cut-{cut}{written[kind].suffix}"
        path.write_bytes(data[:cut])
        with (
            pytest.raises(SlideError, match=rf"{path.name}: truncated or incomplete"),
            open_slide(path) as slide,
        ):
            slide.read_region(0, 0, WIDTH, HEIGHT)


@pytest.mark.parametrize("kind", ["aperio", "ome"])
def test_corrupt_tile_data_fails_on_read_naming_file_and_region(tmp_path, written, kind):
    data = bytearray(written[kind].read_bytes())
    with tifffile.TiffFile(written[kind]) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data[offset : offset + count] = bytes(range(256)) * (count // 256) + bytes(count % 256)
    path = tmp_path / f"corrupt-{kind}{written[kind].suffix}"
    path.write_bytes(bytes(data))
    with (
        open_slide(path) as slide,
        pytest.raises(SlideError, match=rf"{path.name}: region x=0, y=0, .* cannot be read"),
    ):
        slide.read_region(0, 0, WIDTH, HEIGHT)


def test_corrupted_bytes_give_slide_error_or_pixels_never_a_crash(tmp_path, written):
    """Seeded random corruption of headers, directories and tiles (a crash kills pytest)."""
    rng = np.random.default_rng(2026)
    originals = {kind: written[kind].read_bytes() for kind in ("aperio", "ome")}
    outcomes = []
    for case in range(60):
        kind = ("aperio", "ome")[case % 2]
        data = bytearray(originals[kind])
        for _ in range(int(rng.integers(1, 12))):
            zone = int(rng.integers(0, 3))  # the header, the directories at the end, anywhere
            if zone == 0:
                pos = int(rng.integers(0, 4096))
            elif zone == 1:
                pos = len(data) - 1 - int(rng.integers(0, 8192))
            else:
                pos = int(rng.integers(0, len(data)))
            data[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"fuzz-{case}{written[kind].suffix}"
        path.write_bytes(bytes(data))
        try:
            with open_slide(path) as slide:
                for level in range(len(slide.info.levels)):
                    assert slide.read_region(0, 0, 64, 64, level=level).shape == (64, 64, 3)
                slide.thumbnail(64)
            outcomes.append("read")
        except SlideError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            outcomes.append("refused")
    assert outcomes.count("refused") > 20


def test_single_level_tiff_too_large_has_no_pyramid(tmp_path):
    side = int(images.DEFAULT_MAX_PIXELS**0.5) + 2
    glass = ds.RegionSource(side, side, lambda x, y, w, h: np.full((h, w, 3), 255, np.uint8))
    path = ds.write_plain_tiff(tmp_path / "huge.tif", glass, tile=512)
    with pytest.raises(SlideError, match=r"huge\.tif: no pyramid; .*vips tiffsave .*--pyramid"):
        open_slide(path)


def test_bad_regions_and_closed_slides(written):
    slide = open_slide(written["aperio"])
    with pytest.raises(SlideError, match=r"s\.svs: region .* levels 0–2"):
        slide.read_region(0, 0, 10, 10, level=3)
    with pytest.raises(SlideError, match="1 to"):
        slide.read_region(0, 0, 0, 10)
    slide.close()
    slide.close()  # twice is fine
    with pytest.raises(SlideError, match="closed"):
        slide.read_region(0, 0, 10, 10)


def test_slide_suffixes_cover_the_vendor_formats():
    assert {".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".tif", ".tiff", ".dcm"} <= set(
        SLIDE_SUFFIXES
    )
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in SLIDE_SUFFIXES)


# --- real tissue ------------------------------------------------------------------------------


def test_monuseg_mosaic_as_jpeg_svs_matches_up_to_jpeg_loss(monuseg, tmp_path):
    mosaic = ds.monuseg_mosaic(monuseg, rows=2, cols=2, margin=128)
    path = ds.write_aperio_tiff(tmp_path / "monuseg.svs", mosaic.rgb, compression="jpeg")
    with open_slide(path) as slide:
        assert slide.info.format == "aperio" and slide.info.pixel_size == 0.25
        _, x, y, w, h = mosaic.tiles[3]
        region = slide.read_region(x, y, w, h)
        assert np.abs(region.astype(int) - mosaic.rgb[y : y + h, x : x + w]).mean() < 4
        thumb, _ = slide.thumbnail(512)
        assert thumb.shape == (512, 512, 3)


def test_monuseg_mosaic_places_tiles_and_unique_labels(monuseg):
    mosaic = ds.monuseg_mosaic(monuseg, rows=1, cols=2, margin=50, crop=300, with_labels=True)
    assert mosaic.rgb.shape == (400, 700, 3) and mosaic.labels.shape == (400, 700)
    assert (mosaic.rgb[:50] == 255).all() and (mosaic.labels[:50] == 0).all()
    (name_a, xa, ya, wa, ha), (_, xb, *_) = mosaic.tiles
    assert (xa, ya, wa, ha, xb) == (50, 50, 300, 300, 350)
    tile = cv2.imread(str(monuseg / "train" / "images" / f"{name_a}.tif"))[..., ::-1]
    np.testing.assert_array_equal(mosaic.rgb[50:350, 50:350], tile[:300, :300])
    left, right = mosaic.labels[:, :350], mosaic.labels[:, 350:]
    ids_left, ids_right = set(np.unique(left)) - {0}, set(np.unique(right)) - {0}
    assert ids_left and ids_right and not ids_left & ids_right
    assert max(ids_left | ids_right) == len(ids_left | ids_right)  # 1..n, no gaps
