"""Dataset layouts, pairing, validation errors and deterministic splits."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data.datasets import ArraySampleSet, load_samples, open_dataset, split_indices
from segcore.data.layouts import detect_layout
from segcore.errors import DatasetError
from tests.conftest import make_pairs_dataset, write_png


def test_pairs_layout_default_split(tmp_path):
    make_pairs_dataset(tmp_path, n=20)
    splits = open_dataset(tmp_path, seed=3)
    assert splits.layout == "pairs"
    sizes = {name: len(splits.split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 2, "test": 2}
    all_ids = set(splits.train) | set(splits.val) | set(splits.test)
    assert len(all_ids) == 20  # disjoint and complete
    again = open_dataset(tmp_path, seed=3)
    assert list(again.test) == list(splits.test)
    assert list(open_dataset(tmp_path, seed=4).test) != list(splits.test)
    assert splits.summary()["carved"] == ["val", "test"]


def test_reference_split_sizes():
    # The reference PanNuke-derived set: 761 tiles split 603/91/67; ours is within a few tiles.
    train, test, val = split_indices(761, [0.0, 0.09, 0.12], seed=0)
    assert (len(train), len(val), len(test)) == (602, 91, 68)
    assert sorted(train + val + test) == list(range(761))


def test_mask_suffix_pairs(tmp_path):
    make_pairs_dataset(tmp_path, n=3, mask_suffix="_mask")
    splits = open_dataset(tmp_path, val_fraction=0, test_fraction=0)
    assert list(splits.train) == ["img_000", "img_001", "img_002"]
    image, mask = splits.train.load(0)
    assert image.shape == (48, 48, 3) and set(np.unique(mask)) <= {0, 1}


def test_every_problem_is_listed(tmp_path):
    make_pairs_dataset(tmp_path, n=4)
    (tmp_path / "masks" / "img_000.png").unlink()  # image without mask
    write_png(tmp_path / "masks" / "stray.png", np.zeros((48, 48), np.uint8))  # orphan
    (tmp_path / "images" / "img_001.png").write_bytes(b"not a png")  # unreadable
    write_png(tmp_path / "masks" / "img_002.png", np.zeros((40, 48), np.uint8))  # size mismatch
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    problems = dict(excinfo.value.problems)
    message = str(excinfo.value)
    assert "4 problem(s)" in message
    assert "no mask" in problems[str(tmp_path / "images" / "img_000.png")]
    assert "orphan mask" in problems[str(tmp_path / "masks" / "stray.png")]
    assert "not a readable image" in problems[str(tmp_path / "images" / "img_001.png")]
    assert (
        "mask is 48×40 but its image is 48×48" in problems[str(tmp_path / "masks" / "img_002.png")]
    )
    for path in problems:
        assert path in message


def test_duplicate_stems_reported(tmp_path):
    make_pairs_dataset(tmp_path, n=1)
    write_png(tmp_path / "images" / "img_000.tif", np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(DatasetError, match="duplicate image stem"):
        open_dataset(tmp_path)


def test_presplit_layout_carves_val_from_train(tmp_path):
    make_pairs_dataset(tmp_path / "train", n=10)
    make_pairs_dataset(tmp_path / "test", n=3, seed=1)
    splits = open_dataset(tmp_path)
    assert splits.layout == "presplit"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 1, 3)
    assert splits.carved == ("val",)
    assert not set(splits.train) & set(splits.val)


def test_presplit_with_all_splits_given(tmp_path):
    for name, n in (("train", 4), ("val", 2), ("test", 2)):
        make_pairs_dataset(tmp_path / name, n=n)
    splits = open_dataset(tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)
    assert splits.carved == ()


def test_presplit_with_a_test_split_only_is_an_evaluation_set(tmp_path):
    make_pairs_dataset(tmp_path / "test", n=3)
    splits = open_dataset(tmp_path)
    assert splits.layout == "presplit"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (0, 0, 3)


def test_presplit_with_empty_split_folders_is_refused(tmp_path):
    (tmp_path / "test" / "images").mkdir(parents=True)
    (tmp_path / "test" / "masks").mkdir()
    with pytest.raises(DatasetError, match="no samples found"):
        open_dataset(tmp_path)


def test_presplit_problems_across_splits(tmp_path):
    make_pairs_dataset(tmp_path / "train", n=2)
    make_pairs_dataset(tmp_path / "test", n=2)
    (tmp_path / "train" / "masks" / "img_000.png").unlink()
    (tmp_path / "test" / "masks" / "img_001.png").unlink()
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert len(excinfo.value.problems) == 2


def write_pannuke(folder, n=5, size=32):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (n, size, size, 3))  # PanNuke stores float64 0-255
    masks = np.zeros((n, size, size, 6))
    masks[..., 5] = 1  # background channel
    masks[:, 2:6, 2:6, 0] = 3  # a neoplastic nucleus (instance id 3)
    masks[:, 10:12, 10:14, 4] = 9  # an epithelial one
    masks[:, 2:6, 2:6, 5] = 0
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    return images, masks


def test_pannuke_fold_layout(tmp_path):
    images, _ = write_pannuke(tmp_path / "Fold 1" / "images" / "fold1", n=12)
    (tmp_path / "Fold 1" / "images" / "fold1" / "masks.npy").rename(tmp_path / "masks.npy")
    splits = open_dataset(tmp_path, seed=0)
    assert splits.layout == "pannuke"
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12
    image, mask = splits.train.load(0)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    row = splits.train.indices[0]
    np.testing.assert_array_equal(image, np.round(images[row]).astype(np.uint8))
    assert mask.sum() == 16 + 8  # background channel ignored
    assert mask[3, 3] == 1 and mask[0, 0] == 0


def test_pannuke_bad_shapes(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((2, 8, 8, 3)))
    np.save(tmp_path / "masks.npy", np.zeros((3, 8, 8, 6)))
    with pytest.raises(DatasetError, match="does not match"):
        ArraySampleSet(tmp_path / "images.npy", tmp_path / "masks.npy")


def test_unknown_layout_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        detect_layout(tmp_path / "nowhere")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="no supported dataset layout"):
        open_dataset(tmp_path / "stuff")


def test_load_samples_lists_every_failure(tmp_path):
    make_pairs_dataset(tmp_path, n=3)
    splits = open_dataset(tmp_path, val_fraction=0, test_fraction=0)
    # Corrupt two files after opening (header check passed, decoding fails later).
    for name in ("img_000.png", "img_002.png"):
        path = tmp_path / "images" / name
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError) as excinfo:
        load_samples(splits.train)
    assert len(excinfo.value.problems) == 2


def test_monuseg_real_layout(monuseg):
    splits = open_dataset(monuseg)
    assert splits.layout == "presplit"
    assert len(splits.test) == 14 and len(splits.train) + len(splits.val) == 30
    assert splits.carved == ("val",)
    image, mask = splits.test.load(0)
    assert image.shape == (1000, 1000, 3) and mask.shape == (1000, 1000)
    assert 0.05 < mask.mean() < 0.6
