"""tf.data pipelines: shapes, determinism, alignment of image and mask under augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data.datasets import open_dataset
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.training.config import AugmentConfig
from segcore.training.pipeline import make_eval_dataset, make_training_dataset
from tests.conftest import write_png

RAW = PreprocessConfig(equalize="none", blur_kernel=0)
GEOMETRY_ONLY = AugmentConfig(
    scale_min=1.0, scale_max=1.0, brightness=0, contrast=0, saturation=0, hue=0
)


@pytest.fixture
def aligned_dataset(tmp_path):
    """Images whose red channel encodes the mask exactly (bright = nucleus)."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(80, 96), (64, 64), (40, 50)]):
        mask = (rng.random((h // 8, w // 8)) > 0.5).repeat(8, 0).repeat(8, 1)
        mask = np.pad(mask, ((0, h - mask.shape[0]), (0, w - mask.shape[1])))
        image = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
        image[..., 0] = np.where(mask, 230, 20)
        write_png(tmp_path / "images" / f"s{i}.png", image)
        write_png(tmp_path / "masks" / f"s{i}.png", mask.astype(np.uint8) * 255)
    return open_dataset(tmp_path, val_fraction=0, test_fraction=0).train


def batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_training_batches_shapes_and_epoch_length(aligned_dataset):
    data = make_training_dataset(aligned_dataset, RAW, image_size=32, batch_size=4, seed=1)
    # Crops to cover each image once: 3×3 + 2×2 + 2×2.
    assert data.crops_per_epoch == 17 and data.steps_per_epoch == 5
    epoch = batches(data.dataset)
    assert len(epoch) == 5 and sum(len(x) for x, _ in epoch) == 17
    x, y = epoch[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (4, 32, 32, 1) and set(np.unique(y)) <= {0.0, 1.0}
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_geometric_augmentation_keeps_mask_aligned(aligned_dataset):
    data = make_training_dataset(
        aligned_dataset,
        RAW,
        image_size=32,
        batch_size=8,
        augment=GEOMETRY_ONLY,
        crops_per_epoch=24,
        seed=2,
    )
    for x, y in batches(data.dataset):
        np.testing.assert_array_equal(x[..., 0] > 0.5, y[..., 0] > 0.5)


def test_full_augmentation_keeps_mask_mostly_aligned(aligned_dataset):
    data = make_training_dataset(
        aligned_dataset, RAW, image_size=32, batch_size=8, crops_per_epoch=24, seed=3
    )
    agreement = [np.mean((x[..., 0] > 0.5) == (y[..., 0] > 0.5)) for x, y in batches(data.dataset)]
    assert min(agreement) > 0.9  # only resampled edges may disagree


def test_same_seed_same_data_and_epochs_differ(aligned_dataset):
    def run(seed, first_epoch=0):
        data = make_training_dataset(
            aligned_dataset, RAW, image_size=32, batch_size=4, seed=seed, first_epoch=first_epoch
        )
        return [batches(data.dataset) for _ in range(2)]

    a, b = run(5), run(5)
    for epoch_a, epoch_b in zip(a, b, strict=True):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0][0], a[1][0][0])  # epoch 1 differs from epoch 0
    resumed = run(5, first_epoch=1)  # a resumed run's first pass equals epoch 1
    np.testing.assert_array_equal(resumed[0][0][0], a[1][0][0])
    assert not np.array_equal(run(6)[0][0][0], a[0][0][0])


def uniform_set(root, value: int, n: int = 2, size: int = 48):
    """``n`` image/mask pairs of one flat colour (green channel ``value``), no nuclei."""
    for i in range(n):
        write_png(root / "images" / f"u{i}.png", np.full((size, size, 3), value, np.uint8))
        write_png(root / "masks" / f"u{i}.png", np.zeros((size, size), np.uint8))
    return open_dataset(root, val_fraction=0, test_fraction=0).train


@pytest.mark.parametrize("raw", [False, True])
def test_replay_draws_its_share_of_crops_from_the_other_set(tmp_path, raw):
    own, other = uniform_set(tmp_path / "own", 40), uniform_set(tmp_path / "other", 200, n=3)
    augment = AugmentConfig(
        flips=False,
        rot90=False,
        scale_min=1,
        scale_max=1,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        raw_crops=raw,
    )

    def crops(**replay):
        data = make_training_dataset(
            own,
            RAW,
            image_size=32,
            batch_size=50,
            augment=augment,
            crops_per_epoch=400,
            seed=3,
            **replay,
        )
        return np.concatenate([x for x, _ in batches(data.dataset)])

    alone = crops()
    assert data_from(alone, 200) == 0
    mixed = crops(replay=other, replay_fraction=0.3)
    assert len(mixed) == 400  # the epoch keeps its length; replayed crops replace own ones
    assert 0.22 < data_from(mixed, 200) / 400 < 0.38  # binomial(400, 0.3): ±4 sd
    assert data_from(mixed, 200) + data_from(mixed, 40) == 400
    # No share (or no tiles) draws exactly the crops of a run without replay.
    np.testing.assert_array_equal(crops(replay=other, replay_fraction=0.0), alone)


def data_from(crops: np.ndarray, value: int) -> int:
    """How many crops are the flat colour ``value`` (green channel)."""
    return int(np.sum(np.abs(crops[..., 1].mean(axis=(1, 2)) * 255 - value) < 2))


def test_preprocessing_is_applied(aligned_dataset):
    plain = make_eval_dataset(aligned_dataset, RAW, image_size=32)
    equalised = make_eval_dataset(aligned_dataset, PreprocessConfig(), image_size=32)
    x_plain, x_eq = next(iter(plain))[0].numpy(), next(iter(equalised))[0].numpy()
    assert not np.allclose(x_plain, x_eq)


def test_eval_tiles_cover_every_image(aligned_dataset):
    tiles = batches(make_eval_dataset(aligned_dataset, RAW, image_size=32, batch_size=5))
    assert sum(len(x) for x, _ in tiles) == 17
    x = np.concatenate([b[0] for b in tiles])
    y = np.concatenate([b[1] for b in tiles])
    np.testing.assert_array_equal(x[..., 0] > 0.5, y[..., 0] > 0.5)


def test_invalid_arguments(aligned_dataset):
    with pytest.raises(ConfigError):
        make_training_dataset(aligned_dataset, RAW, image_size=30)
    with pytest.raises(ConfigError):
        make_training_dataset(aligned_dataset.subset([]), RAW)
    with pytest.raises(ConfigError):
        AugmentConfig(scale_min=2.0, scale_max=1.0)


def test_real_monuseg_crops(monuseg):
    splits = open_dataset(monuseg)
    data = make_training_dataset(
        splits.val.subset([0]), PreprocessConfig(), image_size=256, batch_size=4, crops_per_epoch=4
    )
    x, y = next(iter(data.dataset))
    assert x.shape == (4, 256, 256, 3) and y.shape == (4, 256, 256, 1)
    assert 0.02 < float(y.numpy().mean()) < 0.7


def test_hed_transform_matches_skimage():
    from skimage.color import hed2rgb, rgb2hed

    from segcore.training.pipeline import hed_transform

    rng = np.random.default_rng(5)
    image = rng.uniform(0.05, 1.0, (16, 16, 3))
    scale, shift = np.array([1.2, 0.8, 1.0]), np.array([0.03, -0.02, 0.0])
    expected = np.clip(hed2rgb(rgb2hed(image) * scale + shift), 0, 1)
    got = hed_transform(image.astype(np.float32), scale.astype(np.float32), shift.astype("f4"))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)


def test_stain_jitter_changes_colours_only_and_is_seeded(aligned_dataset):
    stain = AugmentConfig(**{**GEOMETRY_ONLY.to_dict(), "hed_probability": 1.0})

    def epoch(augment, seed):
        data = make_training_dataset(
            aligned_dataset, RAW, image_size=32, batch_size=8, augment=augment, seed=seed
        )
        return batches(data.dataset)

    plain, jittered, again = epoch(GEOMETRY_ONLY, 3), epoch(stain, 3), epoch(stain, 3)
    for (x0, y0), (x1, y1), (x2, _) in zip(plain, jittered, again, strict=True):
        np.testing.assert_array_equal(y0, y1)  # same crops and geometry, same masks
        np.testing.assert_array_equal(x1, x2)  # seeded
        assert np.abs(x1 - x0).mean() > 0.01  # the stain moved
        assert x1.min() >= 0.0 and x1.max() <= 1.0
    with pytest.raises(ConfigError):
        AugmentConfig(hed_probability=1.5)


def test_train_config_records_every_augmentation_field():
    from segcore.training.config import TrainConfig

    config = TrainConfig(augmentation={"hed_probability": 0.85, "scale_min": 0.5})
    assert config.augmentation == {
        **AugmentConfig().to_dict(),
        "hed_probability": 0.85,
        "scale_min": 0.5,
    }
    assert config.augment_config().hed_probability == 0.85
    assert TrainConfig(augment=False).augment_config() is None
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="AugmentConfig"):
        TrainConfig(augmentation={"hed_scale": 2.0})
