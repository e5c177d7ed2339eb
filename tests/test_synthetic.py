"""Tests for the synthetic H&E set: the tile generator and the dataset writer.

The generator is segcore.data.synthetic (with segcore.data.synthetic_nuclei), the writer
segcore.data.synthetic_set.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2hed

from segcore import cli
from segcore.data.images import read_image, read_mask
from segcore.data.synthetic import MIN_SIZE, generate_tile
from segcore.data.synthetic_set import README_MARKER, generate_dataset, tile_name
from segcore.errors import ConfigError


def _files(folder):
    """Returns ``{relative path: bytes}`` of the PNG files under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def tiles():
    """Eight 128×128 tiles of seed 3, generated once for the content checks."""
    return [generate_tile([3, i], 128) for i in range(8)]


# --------------------------------------------------------------------------------------------
# generate_tile
# --------------------------------------------------------------------------------------------


def test_tile_shapes_and_dtypes():
    image, mask = generate_tile(0, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}


def test_tile_is_deterministic_and_accepts_a_generator():
    a_image, a_mask = generate_tile([5, 2], 64)
    b_image, b_mask = generate_tile(np.random.default_rng([5, 2]), 64)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_image, _ = generate_tile([6, 2], 64)
    assert not np.array_equal(a_image, c_image)


def test_nuclei_fraction_is_plausible(tiles):
    fractions = np.array([mask.mean() for _, mask in tiles])
    assert (fractions > 0).all(), "every tile has nuclei"
    assert 0.05 <= fractions.mean() <= 0.6
    assert fractions.max() > 2 * fractions.min(), "density varies from tile to tile"


def test_nuclei_are_darker_and_more_hematoxylin_than_background(tiles):
    for image, mask in tiles:
        inside, outside = mask.astype(bool), ~mask.astype(bool)
        gray = image.mean(axis=2)
        assert gray[inside].mean() < gray[outside].mean() - 40
        hematoxylin = rgb2hed(image)[..., 0]
        assert hematoxylin[inside].mean() > hematoxylin[outside].mean() + 0.02


def test_mask_is_aligned_with_the_image(tiles):
    # Shifting the mask by a few pixels must lose contrast: the edges match the painted nuclei.
    image, mask = max(tiles, key=lambda t: t[1].mean())
    hematoxylin = rgb2hed(image)[..., 0]

    def contrast(m):
        return hematoxylin[m.astype(bool)].mean() - hematoxylin[~m.astype(bool)].mean()

    assert contrast(mask) > 1.2 * contrast(np.roll(mask, (4, 4), axis=(0, 1)))


def test_tiles_have_several_nuclei_of_varied_size(tiles):
    all_sizes = []
    for _, mask in tiles:
        labels, count = ndimage.label(mask)
        assert count >= 2
        all_sizes.extend(np.bincount(labels.ravel())[1:])
    all_sizes = np.array(all_sizes)
    assert len(all_sizes) >= 30
    assert np.percentile(all_sizes, 90) > 3 * np.percentile(all_sizes, 10)


def test_tile_has_non_uniform_background(tiles):
    image, mask = tiles[0]
    background = image[~mask.astype(bool)].astype(float)
    assert background.std(axis=0).min() > 5, "stroma is textured, not flat"
    red, green, blue = background.mean(axis=0)
    assert red > green and blue > green, "eosin-pink background"


@pytest.mark.parametrize("size", [31, 0, -5, 64.0, "64", True])
def test_tile_rejects_bad_size(size):
    with pytest.raises(ConfigError, match="size"):
        generate_tile(0, size)


# --------------------------------------------------------------------------------------------
# generate_dataset
# --------------------------------------------------------------------------------------------


def test_dataset_layout_and_readme(tmp_path):
    out = generate_dataset(tmp_path / "set", count=4, size=MIN_SIZE * 2, seed=7)
    assert out == tmp_path / "set"
    names = [tile_name(i) for i in range(4)]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    for name in names:
        image = read_image(out / "images" / name)
        mask = read_mask(out / "masks" / name)
        assert image.shape == (64, 64, 3)
        assert mask.shape == (64, 64)
        stored = np.unique(np.asarray(read_image(out / "masks" / name))[..., 0])
        assert set(stored) <= {0, 255}
        expected_image, expected_mask = generate_tile([7, names.index(name)], 64)
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(mask, expected_mask)
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert README_MARKER in readme
    assert "seed: 7" in readme and "count: 4" in readme and "64×64" in readme
    assert "python -m segcore synth --out" in readme and "--count 4 --size 64 --seed 7" in readme


def test_dataset_is_deterministic_across_counts_and_processes(tmp_path):
    a = _files(generate_dataset(tmp_path / "a", count=3, size=48, seed=11, workers=1))
    b = _files(generate_dataset(tmp_path / "b", count=5, size=48, seed=11, workers=2))
    assert a and all(b[name] == data for name, data in a.items())
    c = _files(generate_dataset(tmp_path / "c", count=3, size=48, seed=12, workers=1))
    assert all(c[name] != data for name, data in a.items() if name.startswith("images"))


def test_dataset_reuses_a_previous_synthetic_folder(tmp_path):
    out = generate_dataset(tmp_path / "set", count=4, size=MIN_SIZE, seed=1)
    generate_dataset(out, count=2, size=MIN_SIZE, seed=1)
    assert sorted(p.name for p in (out / "images").iterdir()) == [tile_name(0), tile_name(1)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [tile_name(0), tile_name(1)]
    assert "count: 2" in (out / "README.md").read_text(encoding="utf-8")


def test_dataset_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(tmp_path, count=1, size=MIN_SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_dataset_refuses_a_synthetic_folder_with_extra_files(tmp_path):
    out = generate_dataset(tmp_path / "set", count=1, size=MIN_SIZE)
    (out / "images" / "real_slide.png").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(out, count=1, size=MIN_SIZE)
    assert (out / "images" / "real_slide.png").exists()


def test_dataset_refuses_a_file(tmp_path):
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        generate_dataset(target, count=1, size=MIN_SIZE)


def test_empty_existing_folder_is_accepted(tmp_path):
    generate_dataset(tmp_path, count=1, size=MIN_SIZE)
    assert (tmp_path / "images" / tile_name(0)).is_file()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count": 0}, "count must be at least 1"),
        ({"count": 2.5}, "count must be an integer"),
        ({"size": 16}, "size must be at least 32"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"workers": 0}, "workers must be at least 1"),
    ],
)
def test_dataset_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate_dataset(tmp_path / "set", **{"count": 1, "size": MIN_SIZE, **kwargs})
    assert not (tmp_path / "set").exists()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_synth_writes_the_dataset(tmp_path):
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--count", "3", "--size", "64", "--seed", "1"]
    assert cli.main(argv) == 0
    images = sorted((out / "images").iterdir())
    masks = sorted((out / "masks").iterdir())
    assert len(images) == 3 and len(masks) == 3
    assert [p.name for p in images] == [p.name for p in masks]
    for image_path, mask_path in zip(images, masks, strict=True):
        assert read_image(image_path).shape == (64, 64, 3)
        assert read_mask(mask_path).any()
    assert (out / "README.md").is_file()


@pytest.mark.parametrize(
    "extra", [["--count", "0"], ["--size", "8"], ["--seed", "-3"]], ids=["count", "size", "seed"]
)
def test_cli_synth_bad_arguments_exit_2(tmp_path, capsys, extra):
    argv = ["synth", "--out", str(tmp_path / "cli"), "--count", "1", "--size", "32", *extra]
    assert cli.main(argv) == 2
    assert "error:" in capsys.readouterr().err
