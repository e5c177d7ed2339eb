"""The Train page's form: presets, the config built from the form, the validation sources a
browser may use, the time estimate, and starting the run.

* **Presets.** :data:`ADAPT` is the short recipe that adapts a model to a lab's own tiles
  (``scripts/recipes/adapt.json``) and :data:`FINE_TUNE` the recipe that made the shipped
  default (``scripts/recipes/default.json``, :mod:`segcore.training.recipes`), each with the
  dataset, the epochs and the bundle to start from (:func:`start_choices`) from the form;
  :data:`FROM_SCRATCH` is the plain :class:`TrainConfig` with every field on the form
  (:func:`build_config`).
* **Validation sources** of a recipe are kept only where their folder exists inside the app's
  data roots (:mod:`segcore.data.roots`, the rule of every folder the browser reaches), is not
  the dataset trained on and does not share its name; each one left out gets a note
  (:func:`kept_sources`).
* **How long** (:func:`draft`): :mod:`segcore.training.estimates` at the speed measured on the
  newest completed run of this machine's runs folder.

Which run the page shows, when it redraws and how a run's status reads: :mod:`appkit.training_runs`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import streamlit as st

from appkit import access, training_runs
from segcore.analysis import catalog
from segcore.data import roots, samples
from segcore.errors import ConfigError, DatasetError, SegcoreError
from segcore.paths import REPO_ROOT
from segcore.training import estimates, recipes
from segcore.training.config import REPLAY_START, AugmentConfig, TrainConfig
from segcore.training.replay import planned_crops
from segcore.training.runs import RunDir

ADAPT = "Adapt a model to your tiles (short)"
"""The preset that fine-tunes a bundle on a lab's own tiles on a short schedule."""
FINE_TUNE = "Fine-tune (the default's full recipe)"
"""The preset that fine-tunes a bundle with the recipe that made the default."""
FROM_SCRATCH = "From scratch"
"""The preset of plain settings, every field on the form."""
PRESET_IDS = {ADAPT: "adapt", FINE_TUNE: "fine_tune", FROM_SCRATCH: "scratch"}
"""A short id per preset, for widget keys."""
RECIPE_PRESETS = {ADAPT: recipes.ADAPT_RECIPE, FINE_TUNE: recipes.DEFAULT_RECIPE}
"""The presets that are recipes, by the recipe's name."""

PRESET_KEY = "train_preset"
"""``st.session_state`` key of the preset radio."""


@dataclasses.dataclass(frozen=True)
class FormValues:
    """What the form holds. ``None`` fields are not on the form (the preset's value is kept).

    Attributes:
        data: the dataset as typed (``synthetic`` or a folder inside a data root).
        epochs: epochs to train.
        batch_size, image_size, lr, loss, augment: as :class:`TrainConfig`'s.
        crops: crops per epoch; 0 draws one per training image (``crops_per_epoch=None``).
        backbone: ``"none"`` or ``"imagenet"``.
        start_from: the bundle ref a recipe preset starts from (``None``: the recipe's).
    """

    data: str
    epochs: int
    batch_size: int | None = None
    image_size: int | None = None
    lr: float | None = None
    crops: int | None = None
    loss: str | None = None
    backbone: str | None = None
    augment: bool | None = None
    start_from: str | None = None


@dataclasses.dataclass(frozen=True)
class Draft:
    """The settings the form holds now: the config (None when invalid), why not, the notes on
    validation sources left out, and how long it will take."""

    config: TrainConfig | None
    error: str | None
    notes: list[str]
    estimate: str


# --- presets ----------------------------------------------------------------------------------
def presets() -> list[str]:
    """The presets on offer: :data:`ADAPT` and :data:`FINE_TUNE` (each when its recipe is
    there), then :data:`FROM_SCRATCH`."""
    there = set(recipes.list_recipes())
    return [p for p, name in RECIPE_PRESETS.items() if name in there] + [FROM_SCRATCH]


def preset_config(preset: str) -> TrainConfig:
    """The preset's settings before the form changes them.

    Raises:
        ConfigError: the recipe cannot be read.
    """
    if preset in RECIPE_PRESETS:
        return recipes.read_recipe(RECIPE_PRESETS[preset])
    return TrainConfig()


def start_choices() -> dict[str, str]:
    """The bundles a recipe preset may start from, ref → label: the active model first, then
    every other bundle of the catalog (``weights/`` and completed runs)."""
    active = catalog.active_ref()
    choices = {active: f"The active model ({catalog.describe_ref(active)})"}
    for entry in catalog.available_bundles():
        if not any(catalog.same_bundle(entry.ref, ref) for ref in choices):
            choices[entry.ref] = f"{entry.card.name} ({catalog.describe_ref(entry.ref)})"
    return choices


def _browser_folder(path: str) -> str | None:
    """The root-qualified name of ``path`` when it is a folder inside a data root, else None."""
    data_roots = access.data_roots()
    try:
        return roots.browser_name(roots.resolve_folder(str(path), data_roots), data_roots)
    except DatasetError:
        return None


def _recipe_name(path: str) -> str:
    """How a note names a recipe's folder: relative to the repository as the recipe writes it
    (``../shared/data/tnbc``) when it is beside the repository, else by its name alone."""
    relative = os.path.relpath(path, REPO_ROOT)
    return Path(path).name if relative.startswith(f"..{os.sep}..") else relative


def dataset_default(preset: str) -> tuple[str, str | None]:
    """The dataset box's first value for ``preset`` and a note when the recipe's own dataset
    is not one the browser may open (a recipe that names none leaves the box empty)."""
    if preset not in RECIPE_PRESETS:
        return samples.SYNTHETIC, None
    data = preset_config(preset).data
    if not data:
        return "", None
    if data.lower() in (samples.SYNTHETIC, samples.BUILT_IN):
        return data, None
    name = _browser_folder(data)
    if name is not None:
        return name, None
    return "", (
        f"The recipe trains on {_recipe_name(data)}, which is not inside the app's data roots "
        f"({roots.describe_roots(access.data_roots())}): give the folder of your own annotated "
        "tiles."
    )


def recipe_summary(config: TrainConfig) -> str:
    """One line of markdown saying what a recipe does besides the dataset, the epochs and the
    bundle it starts from (the form's boxes say those)."""
    crops = config.crops_per_epoch or "one per training image"
    parts = [f"trains {crops} crops of {config.image_size}² per epoch, batch {config.batch_size}"]
    parts.append(f"learning rate {config.lr:g} ({config.lr_schedule}), loss {config.loss}")
    augment = config.augment_config()
    if augment is not None:
        parts.append(_augment_summary(augment))
    if config.freeze_batchnorm:
        parts.append("batch normalisation kept as the starting model has it")
    if config.replay_data and config.replay_fraction:
        tiles = (
            "the starting model's own training tiles (when this machine has them)"
            if config.replay_data == REPLAY_START
            else Path(config.replay_data).name
        )
        parts.append(f"{config.replay_fraction:.0%} of the crops from {tiles}")
    what = "best epoch" if config.threshold_rule == "start" else "best epoch and threshold"
    if config.validation_sources:
        names = ", ".join(Path(p).name for p in config.validation_sources)
        parts.append(
            f"{what} chosen on the validation parts of {names} "
            f"({config.source_rule} of their Dice; never trained on)"
        )
    else:
        parts.append(f"{what} chosen on the dataset's own validation tiles")
    if config.threshold_rule == "start":
        parts.append("the starting model's threshold kept")
    if config.start_blend:
        parts.append(
            f"the kept weights blended with the starting model's ({config.start_blend:.0%} of "
            "them), which transfers better to other labs"
        )
    if config.prepare_runtime:
        parts.append("the new model prepared for the fast CPU runtime at the end")
    return "The recipe " + "; ".join(parts) + "."


def _augment_summary(augment: AugmentConfig) -> str:
    words = []
    if augment.raw_crops:
        words.append(f"raw-context crops ({augment.context:g}×)")
    if augment.hed_probability:
        words.append(
            f"HED stain jitter (p {augment.hed_probability:g}, ±{augment.hed_scale:g} scale, "
            f"±{augment.hed_shift:g} shift)"
        )
    words.append(f"scale {augment.scale_min:g}–{augment.scale_max:g}")
    return "augmentation: " + ", ".join(words)


# --- the config from the form -----------------------------------------------------------------
def build_config(preset: str, values: FormValues, *, need_data: bool = True) -> TrainConfig:
    """The :class:`TrainConfig` of ``preset`` with the form's ``values``.

    Args:
        preset: :data:`ADAPT`, :data:`FINE_TUNE` or :data:`FROM_SCRATCH`.
        values: the form's values.
        need_data: refuse a fine-tune without a dataset (False keeps the recipe's, for
            showing what the form holds before a dataset is typed).

    Raises:
        ConfigError: an invalid value, or no dataset given to fine-tune on.
    """
    data = values.data.strip()
    if preset in RECIPE_PRESETS:
        recipe = preset_config(preset)
        if not data and not need_data:
            data = recipe.data
        elif not data:
            raise ConfigError(
                "Give the dataset to fine-tune on: a folder inside one of the data roots "
                f"({roots.describe_roots(access.data_roots())})."
            )
        return dataclasses.replace(
            recipe,
            data=data,
            epochs=int(values.epochs),
            init_from=values.start_from or recipe.init_from,
        )
    defaults = TrainConfig()

    def value(name, form_value):
        return getattr(defaults, name) if form_value is None else form_value

    backbone = value("backbone_weights", values.backbone)
    return TrainConfig(
        data=data or samples.SYNTHETIC,
        epochs=int(values.epochs),
        batch_size=int(value("batch_size", values.batch_size)),
        image_size=int(value("image_size", values.image_size)),
        lr=float(value("lr", values.lr)),
        loss=value("loss", values.loss),
        augment=bool(value("augment", values.augment)),
        crops_per_epoch=int(values.crops or 0) or None,
        backbone_weights=None if backbone in (None, "none") else backbone,
    )


def _training_folder(data: str) -> Path | None:
    """The dataset's folder when it lies inside a data root (None for synthetic or refused)."""
    try:
        return samples.source_folder(data.strip() or samples.SYNTHETIC, access.data_roots())
    except DatasetError:
        return None


def kept_sources(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with only the validation sources a browser's run may read, and one note per
    reason some were left out: missing, outside the data roots, the dataset trained on itself,
    or of the same name as another (the sources are named by their folder's name).

    The kept sources are the real folders (symlinks resolved), as the dataset is.
    """
    if not config.validation_sources:
        return config, []
    own = _training_folder(config.data)
    names = {own.name if own is not None else Path(config.data).name}
    data_roots = access.data_roots()
    kept: list[str] = []
    left_out: dict[str, list[str]] = {}
    for path in config.validation_sources:
        why = None
        if not Path(path).is_dir():
            why = "missing"
        else:
            try:
                real = roots.resolve_folder(str(path), data_roots)
            except DatasetError:
                why = f"not inside the app's data roots ({roots.describe_roots(data_roots)})"
            else:
                if own is not None and real == own:
                    why = "the dataset trained on"
                elif real.name in names:
                    why = "the folder name of the dataset or of another source"
        if why is None:
            kept.append(str(real))
            names.add(real.name)
        else:
            left_out.setdefault(why, []).append(_recipe_name(path))
    notes = [
        f"Validation source{'s' if len(paths) > 1 else ''} left out: {', '.join(paths)} — {why}."
        for why, paths in left_out.items()
    ]
    if notes and not kept:
        notes.append(
            "No validation source is left: the best epoch and the threshold are chosen on the "
            "dataset's own validation images."
        )
    return dataclasses.replace(config, validation_sources=kept), notes


@st.cache_data(ttl=60, show_spinner=False)
def _dataset_facts(folder: str, image_size: int, val: float, test: float, seed: int):
    """``(training images, crops of one epoch or None)`` of a dataset folder (cached 60 s)."""
    from segcore.data.datasets import open_dataset

    splits = open_dataset(folder, val_fraction=val, test_fraction=test, seed=seed, check=False)
    return len(splits.train), estimates.epoch_crops(splits.train, image_size)


def dataset_facts(config: TrainConfig) -> tuple[int | None, int | None]:
    """``(training images, crops of one epoch)`` of ``config``'s dataset, each None when not
    known (a folder outside the data roots, or one that does not open)."""
    if config.data.strip().lower() == samples.SYNTHETIC:
        train = samples.synthetic_splits(count=config.synthetic_count, split_seed=config.seed).train
        return len(train), len(train) * estimates.tiles_per_image((256, 256), config.image_size)
    folder = _training_folder(config.data)
    if folder is None:
        return None, None
    try:
        return _dataset_facts(
            str(folder), config.image_size, config.val_fraction, config.test_fraction, config.seed
        )
    except (SegcoreError, OSError, ValueError):
        return None, None


def estimate_text(config: TrainConfig, runs_dir=None) -> str:
    """How long ``config`` will take on this machine (:mod:`segcore.training.estimates`)."""
    augment = config.augment_config()
    speed = estimates.measured_speed(runs_dir, raw_crops=bool(augment and augment.raw_crops))
    crops = planned_crops(config)  # fewer when the replay tiles are not on this machine
    if crops is None and speed is not None:
        crops = dataset_facts(config)[1]
    return estimates.estimate(config, speed, crops).text


def draft(preset: str, values: FormValues) -> Draft:
    """The config the form holds now, checked: its error, its notes and its estimate."""
    try:
        config = build_config(preset, values, need_data=False)
    except SegcoreError as exc:
        return Draft(None, access.browser_message(exc), [], "")
    config, notes = kept_sources(config)
    return Draft(config, None, notes, estimate_text(config))


def start(preset: str, values: FormValues) -> RunDir:
    """Starts the training the form holds (validation sources kept to the data roots) and
    makes this session watch it.

    Raises:
        ViewerModeError: viewer mode is on.
        ConfigError: invalid settings.
        DatasetError: the dataset is outside the data roots (the generic refusal) or holds no
            training images.
        TrainingBusyError: another training holds the device.
    """
    access.require_editor("Training")
    config, _ = kept_sources(build_config(preset, values))
    folder = samples.source_folder(config.data.strip() or samples.SYNTHETIC, access.data_roots())
    if folder is not None and dataset_facts(config)[0] == 0:
        raise DatasetError(
            f"{access.browser_message(str(folder))}: no training images (a folder whose "
            "split.json fixes val and test parts is for evaluation only)"
        )
    run = access.start_training(config)
    training_runs.watch(run.path)
    return run
