"""The training recipe: :class:`TrainConfig` (saved as a run's ``config.json``) and the
augmentation of training crops, :class:`AugmentConfig`. No TensorFlow import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from segcore.configs import JsonConfig
from segcore.data.preprocessing import PreprocessConfig
from segcore.data.synthetic_set import SYNTHETIC, SYNTHETIC_COUNT
from segcore.errors import ConfigError, DatasetError
from segcore.evaluation.sources import SOURCE_RULES
from segcore.network.config import ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from segcore.data.datasets import DatasetSplits

LossName = Literal["bce", "bce+dice"]


@dataclass(frozen=True)
class AugmentConfig(JsonConfig):
    """Random augmentation applied to training crops (all "mild" by default).

    Args:
        flips: random horizontal and vertical flips, defaults to True.
        rot90: random multiples of 90° rotation, defaults to True.
        scale_min: smallest scale factor of the crop (the crop side is ``size / scale`` before
            being resized to ``size``), defaults to 0.8.
        scale_max: largest scale factor, defaults to 1.25.
        brightness: maximum absolute brightness shift on the ``[0, 1]`` scale, defaults to 0.05.
        contrast: maximum relative contrast change, defaults to 0.1.
        saturation: maximum relative saturation change, defaults to 0.1.
        hue: maximum hue shift (fraction of the colour circle), defaults to 0.02.
        hed_probability: share of crops whose stain is jittered in HED space (Tellez et al.
            2019): the crop's optical densities in ``skimage.color.rgb2hed``'s hematoxylin,
            eosin and DAB channels are each multiplied by U(1 − ``hed_scale``, 1 +
            ``hed_scale``) and shifted by U(−``hed_shift``, ``hed_shift``), then turned back
            into RGB; defaults to 0 (off). The v3 default was fine-tuned with 0.85, 0.25, 0.04
            and scale 0.5–1.45 (``docs/quality.md``).
        hed_scale: see ``hed_probability``, defaults to 0.25.
        hed_shift: see ``hed_probability``, defaults to 0.04.
        raw_crops: cut each crop from the *raw* image rather than the preprocessed one: a
            square context of ``context`` times the crop's side is cut, its stain jittered
            (``hed_*``), resampled by the crop's scale, equalised and smoothed with the run's
            preprocessing as inference does a whole image, and the crop cut from its middle
            region (the recipe of the v3/v4 defaults); defaults to False (the whole image is
            preprocessed once and the stain of the preprocessed crop is jittered).
        context: see ``raw_crops``, at least 1, defaults to 2.
    """

    flips: bool = True
    rot90: bool = True
    scale_min: float = 0.8
    scale_max: float = 1.25
    brightness: float = 0.05
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    hed_probability: float = 0.0
    hed_scale: float = 0.25
    hed_shift: float = 0.04
    raw_crops: bool = False
    context: float = 2.0

    def __post_init__(self):
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError("AugmentConfig needs 0 < scale_min <= scale_max")
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise ConfigError("AugmentConfig colour jitter amounts must be >= 0 (hue <= 0.5)")
        if not 0 <= self.hed_probability <= 1:
            raise ConfigError("AugmentConfig.hed_probability must be in [0, 1]")
        if not (0 <= self.hed_scale < 1 and self.hed_shift >= 0):
            raise ConfigError("AugmentConfig needs 0 <= hed_scale < 1 and hed_shift >= 0")
        if not self.context >= 1:
            raise ConfigError("AugmentConfig.context must be at least 1")


FINAL_WEIGHTS = ("best", "last")
"""``TrainConfig.final_weights`` values."""

THRESHOLD_RULES = ("validation", "start")
"""``TrainConfig.threshold_rule`` values."""

REPLAY_START = "init_from"
"""``TrainConfig.replay_data`` keyword: the starting bundle's own training data
(:mod:`segcore.training.replay`)."""


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that defines a training run (saved as the run's ``config.json``).

    Args:
        data: a dataset folder of any layout :func:`segcore.data.datasets.open_dataset` reads, or
            ``"synthetic"`` for the embedded synthetic set (generated on first use).
        epochs: number of epochs, defaults to 40.
        batch_size: crops per batch, defaults to 8.
        image_size: side of the square training crops, a multiple of 16, defaults to 256.
        lr: initial learning rate of Adam, defaults to 1e-3.
        lr_schedule: ``"cosine"`` (decay to ``lr * 0.01`` over the run) or ``"constant"``.
        loss: ``"bce"`` (binary cross-entropy, the default) or ``"bce+dice"``.
        augment: random flips, 90° rotations, scale and colour jitter, defaults to True.
        augmentation: an :class:`AugmentConfig` as a dict (used when ``augment``), defaults to
            ``AugmentConfig()``; e.g. ``{"hed_probability": 0.85, "scale_min": 0.5}`` for stain
            and scale jitter (missing keys take their defaults).
        backbone_weights: ``"imagenet"``, ``None`` (random) or a ResNet50 ``.h5`` path.
        crops_per_epoch: random crops per epoch; ``None`` covers every training image once.
        seed: seed of splits, crops, augmentation and weight initialisation.
        val_fraction: share of samples carved into val when the dataset has no val split.
        test_fraction: share carved into test when the dataset has no test split.
        synthetic_count: tiles of the synthetic set (``data="synthetic"``).
        preprocess: a :class:`~segcore.data.preprocessing.PreprocessConfig` as a dict.
        model: a :class:`~segcore.network.model.ModelConfig` as a dict (``backbone_weights`` here is
            ignored; the field above is used).
        preview_tiles: validation tiles shown in ``previews/epoch_NNN.png``.
        validation_sources: dataset folders of other labs whose ``val`` part (fixed by their
            ``split.json``) is scored with the run's own validation split after every epoch
            (:mod:`segcore.evaluation.sources`); when given, the best epoch and the bundle's
            threshold are those of the best ``source_rule`` over the sources' pooled Dice
            instead of the run's validation tiles alone. Their images are never trained on.
        source_rule: ``"mean"`` (best mean of per-source pooled Dice, the default) or
            ``"worst"`` (best worst-source pooled Dice).
        final_weights: which weights the bundle keeps: ``"best"`` (the default: the epoch of
            best validation Dice) or ``"last"`` (the end of the schedule, whose learning rate
            has decayed; for a fine-tuning whose handful of validation tiles would pick an epoch
            by chance — the best epoch is still recorded).
        threshold_rule: how the bundle's threshold is chosen: ``"validation"`` (the default:
            best pooled Dice on the run's validation images, or ``source_rule`` over
            ``validation_sources``) or ``"start"`` (a fine-tuning keeps its starting bundle's
            threshold, chosen on more images than a lab's handful of validation tiles; the
            validation figures are then those at that threshold; needs ``init_from``).
        init_from: a bundle ref (see :func:`segcore.bundles.loading.load_bundle`) whose weights
            start the model instead of ``backbone_weights`` (fine-tuning); its architecture must be
            this config's ``model``. ``None`` (the default) starts from ``backbone_weights``.
        freeze_batchnorm: keep every BatchNormalization layer in inference mode (its moving
            mean and variance, and its scale and offset, stay as they start), as Keras's
            transfer-learning guide advises for fine-tuning on few images: a short run on one
            lab's tiles then cannot shift the statistics every other stain is normalised by.
            Defaults to False.
        replay_data: a dataset folder whose training samples make ``replay_fraction`` of every
            epoch's crops (prepared and augmented as the run's own), so a fine-tune on one
            lab's tiles keeps seeing the lab the model was made on; ``"init_from"`` takes the
            training data recorded in the starting bundle's card when this machine has it
            (:mod:`segcore.training.replay`). ``None`` (the default): no replay.
        replay_fraction: share of each epoch's crops drawn from ``replay_data``, in ``[0, 1)``,
            defaults to 0.
        start_blend: the starting bundle's share in the kept weights, in ``[0, 1)``: the
            bundle keeps ``start_blend * start + (1 - start_blend) * trained`` (weight-space
            ensembling, WiSE-FT; :mod:`segcore.training.blending`), which keeps more of the
            start's transfer to other labs; with ``validation_sources`` every epoch is scored
            blended. Defaults to 0 (the trained weights as they are); needs ``init_from``.
        prepare_runtime: at the end, convert the new bundle to the fast CPU runtimes and run
            their accuracy gate (``python -m segcore runtimes --prepare``: under a minute on
            2 cores), so the app predicts with it at once after "Use this model" instead of
            converting then. Defaults to False; the repository's recipes turn it on.
        name: the bundle's name.
        licence: licence recorded in the bundle's card (that of the training data).
        run_dir: where the run lives; ``None`` makes ``runs/<new run id>``.
    """

    data: str = SYNTHETIC
    epochs: int = 40
    batch_size: int = 8
    image_size: int = 256
    lr: float = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    loss: LossName = "bce"
    augment: bool = True
    augmentation: dict = field(default_factory=lambda: AugmentConfig().to_dict())
    backbone_weights: str | None = None
    crops_per_epoch: int | None = None
    seed: int = 0
    val_fraction: float = 0.12
    test_fraction: float = 0.09
    synthetic_count: int = SYNTHETIC_COUNT
    preprocess: dict = field(default_factory=lambda: PreprocessConfig().to_dict())
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())
    preview_tiles: int = 4
    validation_sources: list = field(default_factory=list)
    source_rule: str = "mean"
    final_weights: str = "best"
    threshold_rule: str = "validation"
    init_from: str | None = None
    freeze_batchnorm: bool = False
    replay_data: str | None = None
    replay_fraction: float = 0.0
    start_blend: float = 0.0
    prepare_runtime: bool = False
    name: str = "segcore-deeplabv3plus"
    licence: str = "unspecified"
    run_dir: str | None = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if self.image_size < 32 or self.image_size % 16:
            raise ConfigError(f"image_size must be a multiple of 16 (≥ 32), got {self.image_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.loss not in ("bce", "bce+dice"):
            raise ConfigError(f"loss must be 'bce' or 'bce+dice', got {self.loss!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if self.crops_per_epoch is not None and self.crops_per_epoch < 1:
            raise ConfigError("crops_per_epoch must be at least 1 (or null)")
        if self.final_weights not in FINAL_WEIGHTS:
            raise ConfigError(
                f"final_weights must be one of {FINAL_WEIGHTS}, got {self.final_weights!r}"
            )
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(
                f"threshold_rule must be one of {THRESHOLD_RULES}, got {self.threshold_rule!r}"
            )
        if self.threshold_rule == "start" and not self.init_from:
            raise ConfigError('threshold_rule "start" needs a starting bundle (init_from)')
        if not 0 <= self.replay_fraction < 1:
            raise ConfigError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if not 0 <= self.start_blend < 1:
            raise ConfigError(f"start_blend must be in [0, 1), got {self.start_blend}")
        if self.start_blend > 0 and not self.init_from:
            raise ConfigError("start_blend needs a starting bundle (init_from)")
        if self.replay_fraction > 0 and not self.replay_data:
            raise ConfigError("replay_fraction needs replay_data (a dataset folder or init_from)")
        if self.source_rule not in SOURCE_RULES:
            raise ConfigError(
                f"source_rule must be one of {SOURCE_RULES}, got {self.source_rule!r}"
            )
        if not isinstance(self.validation_sources, list) or not all(
            isinstance(path, str) for path in self.validation_sources
        ):
            raise ConfigError("validation_sources must be a list of dataset folders")
        if isinstance(self.backbone_weights, str) and self.backbone_weights.lower() == "none":
            object.__setattr__(self, "backbone_weights", None)
        # Validate the nested configs now, not an hour into the run; record every
        # augmentation field (a partial dict takes the defaults for the rest).
        self.preprocess_config()
        self.model_config()
        augmentation = AugmentConfig.from_dict(self.augmentation).to_dict()
        object.__setattr__(self, "augmentation", augmentation)

    def open_folder(self) -> DatasetSplits:
        """Opens ``data`` as a dataset folder (not the synthetic set) and checks that it holds
        training samples: done before a run's folder is made (``train``, the background
        launcher), so a missing or empty dataset is refused without leaving a run behind.

        Returns:
            The dataset's splits (``val_fraction``, ``test_fraction`` and ``seed`` applied).

        Raises:
            DatasetError: no folder is named, the folder is missing, matches no layout, has
                unreadable files, or holds no training samples (e.g. a folder whose
                ``split.json`` fixes only val and test parts: it is for evaluation only).
        """
        from segcore.data.datasets import open_dataset

        if not str(self.data).strip():
            raise DatasetError(
                "this training names no dataset (a recipe such as scripts/recipes/adapt.json "
                "leaves it to you): give the folder of your annotated tiles (--data DIR, or the "
                "Train page's dataset box)"
            )
        root = Path(self.data)
        splits = open_dataset(
            root, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed
        )
        if not len(splits.train):
            raise DatasetError(
                f"{root}: no training samples found (no train/ split; a folder whose split.json "
                "fixes only val and test parts is for evaluation only)"
            )
        return splits

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing as a :class:`PreprocessConfig`."""
        return PreprocessConfig.from_dict(self.preprocess)

    def augment_config(self) -> AugmentConfig | None:
        """The augmentation of training crops (``augmentation``) when ``augment``, else None."""
        return AugmentConfig.from_dict(self.augmentation) if self.augment else None

    def model_config(self) -> ModelConfig:
        """The architecture as a :class:`ModelConfig`, with this run's backbone weights."""
        return ModelConfig.from_dict({**self.model, "backbone_weights": self.backbone_weights})
