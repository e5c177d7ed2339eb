"""Replay: a share of a fine-tuning's crops drawn from another dataset's training tiles.

A short fine-tune on one lab's tiles moves the network towards that lab (its stain, and its
annotators' outline convention) and away from the lab it was made on. Mixing a share of the
starting model's own training tiles into every epoch (``TrainConfig.replay_data``,
``replay_fraction``) keeps both in view. :func:`resolve_replay` finds those tiles (and
:func:`check_start_carve` keeps a fine-tuning on the start's own data from validating on
them):

* a dataset folder: its training samples, carved as the run carves its own (a missing folder
  is an error, as for ``data``);
* ``"init_from"`` (:data:`~segcore.training.config.REPLAY_START`): the training data recorded
  in the starting bundle's card (``training.data``, else ``dataset.data``; relative paths are
  against :data:`segcore.paths.REPO_ROOT`, as in recipes), carved as that run carved it (so
  its validation tiles stay out; :func:`start_carving`). A model's training tiles are often
  not on the machine that fine-tunes it: then the run trains on its own tiles alone, on the
  crops they would have had (``crops_per_epoch × (1 − replay_fraction)``, so the lab's tiles
  weigh as much as with replay and the run is shorter), and its log and card say why
  (``training.replay``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segcore.data.datasets import SampleSet, dataset_pixel_size, open_dataset
from segcore.errors import ConfigError, SegcoreError
from segcore.training.config import REPLAY_START, TrainConfig
from segcore.training.recipes import resolve_recipe_path

log = logging.getLogger(__name__)

PIXEL_SIZE_TOLERANCE = 0.1
"""Relative difference of declared pixel sizes above which replay tiles are refused."""


@dataclass(frozen=True)
class Replay:
    """The tiles a run replays and what its card records of them.

    Attributes:
        samples: the replayed training samples, or None (no replay).
        fraction: share of every epoch's crops drawn from ``samples`` (0 without them).
        record: ``training.replay`` of the card: ``{"data", "images", "fraction"}``, or
            ``{"skipped": reason, "crops_per_epoch": n}``, or empty when the run asked for no
            replay.
        crops_per_epoch: the crops per epoch the run draws: the config's, or, when its replay
            tiles are absent, the share its own tiles would have had.
    """

    samples: SampleSet | None = None
    fraction: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)
    crops_per_epoch: int | None = None


def _start_card(config: TrainConfig):
    """The card of the bundle ``config`` starts from (``init_from``).

    Raises:
        BundleError: it cannot be read.
    """
    from segcore.bundles.refs import resolve_bundle_ref
    from segcore.bundles.store import read_card

    return read_card(resolve_bundle_ref(config.init_from))


def _start_tiles(config: TrainConfig) -> tuple[str | None, str | None, dict[str, Any]]:
    """Where the starting bundle's (``config.init_from``) training tiles are on this machine:
    ``(folder, None, carving)``, or ``(None, why not, carving)``. The folder is the card's
    ``training.data`` (else ``dataset.data``) resolved as a recipe path; ``carving`` is how its
    run carved val and test out of it (``val_fraction``, ``test_fraction``, ``seed``, as far as
    recorded).

    Raises:
        BundleError: the starting bundle's card cannot be read.
    """
    card = _start_card(config)
    training = card.training or {}
    recorded = training.get("data") or (card.dataset or {}).get("data")
    carving = start_carving(card)
    if not recorded:
        return None, f"the card of {config.init_from} records no training data", carving
    folder = resolve_recipe_path(str(recorded))
    if not Path(folder).is_dir():
        why = f"the training data of {config.init_from} ({recorded}) is not on this machine"
        return None, why, carving
    return folder, None, carving


def start_carving(card) -> dict[str, Any]:
    """How the run that made ``card`` carved val and test out of its data: ``val_fraction``,
    ``test_fraction`` and ``seed``, as far as recorded. The seed is the dataset's
    (``dataset.seed``, the carve itself) before the training record's, which an older
    experiment script used for its crops alone."""
    training = card.training or {}
    carving = {k: training[k] for k in ("val_fraction", "test_fraction", "seed") if k in training}
    seed = (card.dataset or {}).get("seed")
    return carving if seed is None else {**carving, "seed": seed}


def check_start_carve(config: TrainConfig, splits) -> None:
    """Refuses a fine-tuning on its starting bundle's own data carved another way.

    A dataset with no val (or test) split of its own has one carved by the run's ``seed``; a
    fine-tuning that carves the same data with another seed validates on tiles its start
    was trained on (and trains on the start's validation tiles), so its validation figures
    and its choice of epoch would flatter both. Nothing is checked without ``init_from``,
    when nothing is carved, or on other data (same resolved folder, or same folder name and
    split sizes).

    Raises:
        ConfigError: naming the start, the data and the seed to use.
        BundleError: the starting bundle's card cannot be read.
    """
    if not config.init_from or not splits.carved:
        return
    card = _start_card(config)
    dataset = card.dataset or {}
    if not dataset.get("carved") or "root" not in dataset:
        return
    theirs = Path(resolve_recipe_path(str(dataset["root"])))
    same = theirs.resolve() == Path(splits.root).resolve() or (
        theirs.name == Path(splits.root).name and dataset.get("sizes") == splits.summary()["sizes"]
    )
    seed = start_carving(card).get("seed")
    if same and seed is not None and seed != config.seed:
        raise ConfigError(
            f"init_from {config.init_from!r} was trained on {dataset['root']} with its "
            f"{'/'.join(dataset['carved'])} split carved by seed {seed}; this run carves "
            f"{splits.root} with seed {config.seed}, so it would validate on tiles that model "
            f'was trained on: set "seed": {seed}'
        )


def _own_share(config: TrainConfig) -> int | None:
    """The crops per epoch of the run's own tiles: ``crops_per_epoch × (1 − replay_fraction)``
    (None stays None: one crop per tile's worth)."""
    crops = config.crops_per_epoch
    return None if crops is None else max(1, round(crops * (1 - config.replay_fraction)))


def planned_crops(config: TrainConfig) -> int | None:
    """The crops per epoch ``config`` will draw, known before the run (for time estimates):
    ``crops_per_epoch``, or the run's own share when it asks for the starting bundle's tiles
    and this machine does not have them (as :func:`resolve_replay` will find). Reads the
    starting card only; a card that cannot be read counts as tiles present (the run will say)."""
    if config.replay_data != REPLAY_START or config.replay_fraction <= 0 or not config.init_from:
        return config.crops_per_epoch
    try:
        folder, _, _ = _start_tiles(config)
    except SegcoreError:
        return config.crops_per_epoch
    return config.crops_per_epoch if folder else _own_share(config)


def resolve_replay(config: TrainConfig, own_root: str | Path | None) -> Replay:
    """The replay tiles of ``config`` (see the module docstring).

    Args:
        config: the run's config (``replay_data``, ``replay_fraction``, ``init_from``).
        own_root: the run's dataset folder, whose declared pixel size the replay tiles must
            share (None: the synthetic set, not checked).

    Raises:
        ConfigError: ``"init_from"`` without a starting bundle, or tiles of another declared
            pixel size.
        DatasetError: a named folder is missing or holds no training samples.
    """
    if not config.replay_data or config.replay_fraction <= 0:
        return Replay(crops_per_epoch=config.crops_per_epoch)
    if config.replay_data == REPLAY_START:
        if not config.init_from:
            raise ConfigError('replay_data "init_from" needs a starting bundle (init_from)')
        folder, reason, carving = _start_tiles(config)
        if folder is None:
            crops = _own_share(config)
            log.warning(
                "no replay: %s; training on the run's own tiles alone (%s crops per epoch)",
                reason,
                crops or "one per tile",
            )
            return Replay(
                record={"skipped": reason, "crops_per_epoch": crops}, crops_per_epoch=crops
            )
    else:
        folder, carving = config.replay_data, {}
    carving = {
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "seed": config.seed,
        **carving,
    }
    splits = open_dataset(folder, **carving)
    if not len(splits.train):
        raise ConfigError(f"replay_data {folder}: no training samples")
    theirs = dataset_pixel_size(splits.root)
    ours = dataset_pixel_size(own_root) if own_root is not None else None
    if theirs and ours and not math.isclose(theirs, ours, rel_tol=PIXEL_SIZE_TOLERANCE):
        raise ConfigError(
            f"replay_data {folder}: its tiles are at {theirs:g} µm/px but the run's data is at "
            f"{ours:g} µm/px; replay tiles of the same scale"
        )
    log.info(
        "replaying %d training tiles of %s in %.0f %% of each epoch's crops",
        len(splits.train),
        folder,
        100 * config.replay_fraction,
    )
    record = {"data": str(folder), "images": len(splits.train), "fraction": config.replay_fraction}
    return Replay(splits.train, config.replay_fraction, record, config.crops_per_epoch)
