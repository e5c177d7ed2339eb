"""Training recipes: :class:`~segcore.training.config.TrainConfig` files kept in the repository.

A recipe is a ``TrainConfig`` as JSON in :data:`RECIPES_DIR` (``scripts/recipes/``), named by
its file's stem: ``scripts/recipes/default.json`` is :data:`DEFAULT_RECIPE`, the recipe that
makes the shipped default (``python -m segcore train --config scripts/recipes/default.json``);
``scripts/recipes/adapt.json`` is :data:`ADAPT_RECIPE`, the same augmentation on a short
schedule that adapts a bundle to a lab's own tiles (its ``data`` is empty: the user gives it,
``--data DIR`` or the Train page). The Train page offers both as presets.

Paths in a recipe (``data``, ``validation_sources``, a ``backbone_weights`` file) are written
relative to the repository root (``../shared/data/monuseg``), so a recipe means the same
wherever it is run from: :func:`read_recipe` resolves them against
:data:`segcore.paths.REPO_ROOT`. The keywords ``synthetic`` and ``samples`` and bundle refs
(``init_from``) are left as they are.

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from segcore.errors import ConfigError
from segcore.paths import REPO_ROOT
from segcore.training.config import REPLAY_START, TrainConfig

RECIPES_DIR = REPO_ROOT / "scripts" / "recipes"
"""The folder of the repository's recipes (``<name>.json``)."""

RECIPES_ENV = "SEGCORE_RECIPES_DIR"
"""Environment variable naming another recipes folder (a lab's own presets, or the tests'
tiny ones); :func:`recipes_dir` reads it."""


def recipes_dir() -> Path:
    """Where named recipes are read from: ``$SEGCORE_RECIPES_DIR`` when set, else
    :data:`RECIPES_DIR`."""
    value = os.environ.get(RECIPES_ENV, "").strip()
    return Path(value).expanduser() if value else RECIPES_DIR


DEFAULT_RECIPE = "default"
"""The recipe that makes the shipped default bundle."""

ADAPT_RECIPE = "adapt"
"""The recipe that adapts a bundle (``init_from``) to a lab's own tiles on a short schedule."""

_KEYWORDS = ("synthetic", "samples")  # data sources that are not folders


def list_recipes(folder: str | os.PathLike | None = None) -> list[str]:
    """The recipes in ``folder`` (default :func:`recipes_dir`) by name, :data:`DEFAULT_RECIPE`
    first, the others sorted; hidden files are skipped. An absent folder has none."""
    root = Path(folder) if folder is not None else recipes_dir()
    if not root.is_dir():
        return []
    names = sorted(
        p.stem for p in root.glob("*.json") if p.is_file() and not p.name.startswith(".")
    )
    return sorted(names, key=lambda name: name != DEFAULT_RECIPE)


def recipe_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The file of the recipe called ``name`` in ``folder`` (default :func:`recipes_dir`).

    Raises:
        ConfigError: ``name`` is not a plain name (a separator, ``..``, hidden) or there is no
            such recipe (naming those there are).
    """
    root = Path(folder) if folder is not None else recipes_dir()
    if not name or name.startswith(".") or Path(name).name != name:
        raise ConfigError(f"a recipe is named by a plain name, got {name!r}")
    path = root / f"{name}.json"
    if not path.is_file():
        known = ", ".join(list_recipes(root)) or "none"
        raise ConfigError(f"no recipe {name!r} in {root} (recipes there: {known})")
    return path


def resolve_recipe_path(value: str, base: str | os.PathLike = REPO_ROOT) -> str:
    """A path written in a recipe, made absolute against ``base`` (the repository root);
    an absolute one, the keywords ``synthetic`` / ``samples`` and an empty one (a recipe that
    leaves the dataset to its user, as ``adapt`` does) are returned as they are."""
    text = str(value).strip()
    if not text or text.lower() in _KEYWORDS:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base) / path
    return os.path.normpath(path)


def _replay_path(value: str | None, base: str | os.PathLike) -> str | None:
    """``replay_data`` resolved as a recipe path, its ``init_from`` keyword kept."""
    if not value or value == REPLAY_START:
        return value
    return resolve_recipe_path(value, base)


def resolve_paths(config: TrainConfig, base: str | os.PathLike = REPO_ROOT) -> TrainConfig:
    """``config`` with ``data``, ``validation_sources``, ``replay_data`` and a
    ``backbone_weights`` file resolved against ``base`` (:func:`resolve_recipe_path`)."""
    weights = config.backbone_weights
    if weights and weights.lower() != "imagenet":
        weights = resolve_recipe_path(weights, base)
    return dataclasses.replace(
        config,
        data=resolve_recipe_path(config.data, base),
        validation_sources=[resolve_recipe_path(p, base) for p in config.validation_sources],
        backbone_weights=weights,
        replay_data=_replay_path(config.replay_data, base),
    )


def read_recipe(
    name_or_path: str | os.PathLike = DEFAULT_RECIPE, folder: str | os.PathLike | None = None
) -> TrainConfig:
    """Reads a recipe as a :class:`TrainConfig`, its paths resolved against the repository root.

    Args:
        name_or_path: a recipe's name in ``folder`` (``"default"``) or a ``.json`` file.
        folder: where named recipes are, defaults to :func:`recipes_dir`.

    Raises:
        ConfigError: no such recipe, a file that is not JSON, or not a valid ``TrainConfig``
            (the message names the file).
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith(".json") else recipe_path(text, folder)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such recipe file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable recipe ({exc})") from exc
    try:
        config = TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return resolve_paths(config)
