"""segcore.data.samples: the synthetic source equals the written synthetic set, split for split."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data import samples
from segcore.data.datasets import open_dataset
from segcore.data.images import read_image, read_mask, read_mask_array
from segcore.data.synthetic_set import generate_dataset
from segcore.errors import DatasetError
from tests.conftest import make_pairs_dataset


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small synthetic set written to disk the way `python -m segcore synth` writes it."""
    return generate_dataset(tmp_path_factory.mktemp("synth"), count=40, size=48, seed=3, workers=1)


def test_generated_splits_match_open_dataset_on_written_files(written):
    generated = samples.synthetic_splits(count=40, size=48, seed=3)
    on_disk = open_dataset(written)
    for name in ("train", "val", "test"):
        assert list(generated.split(name).ids) == list(on_disk.split(name).ids), name
    assert len(generated.test) == round(40 * 0.09)
    assert generated.carved == on_disk.carved


def test_generated_tiles_equal_the_written_files(written):
    generated = samples.synthetic_splits(count=40, size=48, seed=3).test
    for index in range(len(generated)):
        image, mask = generated.load(index)
        name = generated.ids[index] + ".png"
        np.testing.assert_array_equal(image, read_image(written / "images" / name))
        np.testing.assert_array_equal(mask, read_mask(written / "masks" / name))


def test_load_returns_writable_copies():
    test = samples.synthetic_splits(count=40, size=48).test
    image, mask = test.load(0)
    image[:] = 0
    again, _ = test.load(0)
    assert again.any()
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_subset_keeps_tile_numbers():
    test = samples.synthetic_splits(count=40, size=48).test
    sub = test.subset([1])
    assert sub.ids == [test.ids[1]]
    np.testing.assert_array_equal(sub.load(0)[0], test.load(1)[0])


def test_open_source_synthetic_and_folder(tmp_path):
    assert len(samples.open_source("synthetic").test) == round(760 * 0.09)
    folder = make_pairs_dataset(tmp_path / "pairs", n=12)
    splits = samples.open_source(str(folder))
    assert sum(len(splits.split(n)) for n in ("train", "val", "test")) == 12


def test_open_source_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match="no_such_folder"):
        samples.open_source(str(tmp_path / "no_such_folder"))


def test_random_picks():
    picks = samples.random_picks(68, 3, rng=1)
    assert len(set(picks)) == 3 and all(0 <= p < 68 for p in picks) and picks == sorted(picks)
    assert samples.random_picks(2, 3, rng=1) == [0, 1]
    assert samples.random_picks(68, 3, rng=1) == picks  # seeded: repeatable
    with pytest.raises(ValueError):
        samples.random_picks(-1)


def test_built_in_samples_are_real_tissue_with_labels_licence_and_pixel_size():
    from segcore.data.datasets import dataset_pixel_size

    assert samples.default_source() == samples.BUILT_IN
    splits = samples.open_source(samples.BUILT_IN)
    assert splits.root == samples.BUILT_IN_DIR
    assert len(splits.test) >= 5 and not len(splits.train) and not len(splits.val)
    assert dataset_pixel_size(samples.BUILT_IN_DIR) == 0.25
    image, mask = splits.test.load(0)
    assert image.shape == (512, 512, 3) and mask.shape == (512, 512)
    assert 0.05 < mask.mean() < 0.6  # crowded tissue, not an empty crop
    raw = read_mask_array(samples.BUILT_IN_DIR / "test" / "masks" / f"{splits.test.ids[0]}.png")
    assert raw.dtype == np.uint16 and len(np.unique(raw)) == raw.max() + 1 > 50  # nuclei 1..N
    readme = (samples.BUILT_IN_DIR / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in readme and "Kumar" in readme
    size = sum(p.stat().st_size for p in samples.BUILT_IN_DIR.rglob("*") if p.is_file())
    assert size <= 10 * 2**20
    assert "built-in" in samples.describe_source("samples")


def test_default_source_falls_back_to_synthetic_without_samples(monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "BUILT_IN_DIR", tmp_path / "absent")
    assert samples.default_source() == samples.SYNTHETIC
