"""Which model bundles this installation has, and which one the app uses (the *active* model).

The catalogue is every bundle under ``weights/`` (committed or downloaded) plus the final
bundle of every finished training run (``runs/<run-id>/bundle``). The active model is a bundle
ref (see :func:`segcore.bundles.refs.resolve_bundle_ref`) stored in
``<runs_dir>/active-model.json``,
so every browser session of one app process — and the next start of the app — uses the same
model until someone switches it. Without that file, or when its ref no longer resolves, the
active model is :data:`DEFAULT_REF` (the committed ``weights/default``).

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from segcore.atomic import write_text_atomic
from segcore.bundles.card import ModelCard
from segcore.bundles.refs import HF_SCHEME, resolve_bundle_ref
from segcore.bundles.store import DEFAULT_WEIGHTS_DIR, list_bundles, read_card, verify_bundle
from segcore.errors import BundleError
from segcore.paths import REPO_ROOT
from segcore.training.runs import default_runs_dir, list_runs

__all__ = [
    "ACTIVE_FILE",
    "DEFAULT_REF",
    "CatalogEntry",
    "active_ref",
    "available_bundles",
    "describe_ref",
    "display_path",
    "same_bundle",
    "set_active_ref",
]

log = logging.getLogger(__name__)

DEFAULT_REF = "default"
"""The bundle used when none was chosen: ``weights/default``."""

ACTIVE_FILE = "active-model.json"
"""File name, inside the runs folder, that records the active model's ref."""


@dataclass(frozen=True)
class CatalogEntry:
    """One bundle the app can switch to.

    Attributes:
        ref: what to pass to :func:`segcore.bundles.loading.load_bundle` (a name under ``weights/``,
            or the folder's absolute path for run bundles).
        path: the bundle folder.
        card: its parsed card.
        source: ``"weights"`` or ``"run"``.
    """

    ref: str
    path: Path
    card: ModelCard
    source: str


def available_bundles(
    *,
    weights_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    problems: list[tuple[Path, str]] | None = None,
) -> list[CatalogEntry]:
    """Every valid bundle in ``weights/`` and in finished runs, ``weights/`` first.

    Args:
        weights_dir: defaults to :data:`segcore.bundles.store.DEFAULT_WEIGHTS_DIR`.
        runs_dir: defaults to :func:`segcore.training.runs.default_runs_dir`.
        problems: receives ``(folder, message)`` for every invalid bundle found.

    Returns:
        :class:`CatalogEntry` objects; hashes are not checked here (loading checks them).
    """
    weights = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    runs = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    entries = [
        CatalogEntry(ref=path.name, path=path, card=card, source="weights")
        for path, card in list_bundles(weights, problems=problems)
    ]
    for run in reversed(list_runs(runs)):  # newest run first
        entries += [
            CatalogEntry(ref=str(path), path=path, card=card, source="run")
            for path, card in list_bundles(run.path, problems=problems)
            if path == run.bundle_dir
        ]
    return entries


def _active_path(runs_dir: str | os.PathLike | None) -> Path:
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / ACTIVE_FILE


def active_ref(
    *, runs_dir: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> str:
    """The active model's ref: the recorded one if it still resolves, else :data:`DEFAULT_REF`.

    An ``hf://`` ref is trusted without a network check (it resolves from the Hub cache when
    loaded); a local ref whose folder has gone falls back to the default with a warning.
    """
    path = _active_path(runs_dir)
    try:
        ref = json.loads(path.read_text())["ref"]
    except FileNotFoundError:
        return DEFAULT_REF
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); using the default model", path, exc)
        return DEFAULT_REF
    if not isinstance(ref, str) or not ref:
        return DEFAULT_REF
    if ref.startswith(HF_SCHEME):
        return ref
    try:
        resolve_bundle_ref(ref, weights_dir=weights_dir)
    except BundleError as exc:
        log.warning("active model %r is gone (%s); using the default model", ref, exc)
        return DEFAULT_REF
    return ref


def set_active_ref(
    ref: str,
    *,
    runs_dir: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    load: bool = True,
) -> ModelCard:
    """Makes ``ref`` the active model, after checking that it is a valid bundle; nothing is
    recorded unless every check passes, and a failure leaves the active model as it was.

    The checks: the ref resolves, the card is valid, the SHA-256 of ``model.keras`` matches the
    card (:func:`segcore.bundles.store.verify_bundle`), and — with ``load`` — Keras loads the
    model (:func:`segcore.bundles.loading.load_bundle`). Only then is
    ``<runs_dir>/active-model.json`` written (atomically).

    Args:
        ref: a bundle ref (a name under ``weights/``, a folder, or ``hf://org/name@rev``,
            which is downloaded here if not cached).
        load: also load the model with Keras (imports TensorFlow); ``False`` when the caller has
            just loaded it itself (the app, whose cache holds the loaded bundle).

    Returns:
        The bundle's card.

    Raises:
        BundleError: the ref does not resolve, its card is invalid, ``model.keras`` fails its
            SHA-256 or cannot be loaded, or the choice cannot be recorded (a read-only or full
            runs folder: the message names the file and says the active model is unchanged).
    """
    folder = resolve_bundle_ref(ref, weights_dir=weights_dir)
    card = verify_bundle(folder, read_card(folder))
    if load:
        from segcore.bundles.loading import load_bundle

        load_bundle(folder)
    path = _active_path(runs_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"ref": str(ref)}, indent=2) + "\n")
    except OSError as exc:
        unchanged = describe_ref(active_ref(runs_dir=runs_dir, weights_dir=weights_dir))
        raise BundleError(
            f"{path}: the choice of model cannot be recorded ({exc.strerror or exc}); the active "
            f"model stays {unchanged}. Whoever runs the server can make the runs folder "
            "writable (or point SEGCORE_RUNS_DIR at a writable one)."
        ) from exc
    log.info("active model is now %s (%s)", ref, card.name)
    return card


def describe_ref(ref: str) -> str:
    """A short label for a ref: the folder name for paths, the ref itself otherwise."""
    if ref.startswith(HF_SCHEME) or os.sep not in ref:
        return ref
    path = Path(ref)
    return f"{path.parent.name}/{path.name}" if path.name == "bundle" else path.name


def same_bundle(ref_a: str, ref_b: str, *, weights_dir: str | os.PathLike | None = None) -> bool:
    """Whether two refs name the same bundle (same ``hf://`` ref, or the same local folder)."""
    if ref_a == ref_b:
        return True
    if ref_a.startswith(HF_SCHEME) or ref_b.startswith(HF_SCHEME):
        return False
    try:
        folder_a = resolve_bundle_ref(ref_a, weights_dir=weights_dir).resolve()
        folder_b = resolve_bundle_ref(ref_b, weights_dir=weights_dir).resolve()
    except BundleError:
        return False
    return folder_a == folder_b


def display_path(path: str | os.PathLike) -> str:
    """How the app names a bundle folder to browser users: relative to the repository when it
    is inside it (``weights/default``, ``runs/<id>/bundle``), else only its last two parts —
    never the server's absolute path."""
    path = Path(path)
    try:
        return path.resolve().relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return "/".join(path.parts[-2:])
