"""Bundle folders on disk: saving atomically, reading and verifying cards, listing.

A bundle is a folder with exactly two files::

    my-model/
        model.keras   # the Keras model (architecture + weights), saved WITHOUT optimizer state
        card.json     # the ModelCard (segcore.bundles.card): preprocessing, threshold, figures

The card's ``model_sha256`` is the SHA-256 of ``model.keras``; :func:`verify_bundle` (and so
:func:`segcore.bundles.loading.load_bundle`) checks it before loading, so a truncated,
corrupted or swapped model file is refused instead of silently giving wrong masks.

Saving is atomic (:func:`save_bundle`): everything is written into a hidden temporary sibling
folder which is then renamed into place, so a reader sees the old bundle or the complete new
one, never half of one. Hidden folders (names starting with ``.``) are never listed as bundles.

Importing this module does not import TensorFlow; saving a model does.

Example:
    >>> card = ModelCard(name="monuseg-v1", architecture=ModelConfig().to_dict(),
    ...                  preprocess=PreprocessConfig().to_dict(), threshold=0.45)
    >>> save_bundle(model, "weights/monuseg-v1", card)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from segcore.atomic import write_json_atomic, write_text_atomic
from segcore.bundles.card import CARD_FILE, ModelCard
from segcore.errors import BundleError, ConfigError
from segcore.paths import REPO_ROOT

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
"""The model's file name inside a bundle folder."""

BUNDLE_FILES = (MODEL_FILE, CARD_FILE)
"""The files of a bundle."""

RUNTIME_CACHE_DIR = ".runtimes"
"""The folder inside a bundle where converted models (OpenVINO IR) and their accuracy-gate
records are cached (:mod:`segcore.bundles.runtime_cache`); never part of the bundle itself."""

PREPARED_DIR = "prepared"
"""The folder inside a bundle that holds a fast runtime prepared where the bundle was made, with
Keras's gate masks (:mod:`segcore.bundles.prepared`; recorded in the card's ``prepared``)."""

DEFAULT_WEIGHTS_DIR = REPO_ROOT / "weights"
"""The repository's bundle folder, where bare bundle names are looked up."""


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the SHA-256 (lowercase hex) of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_bundle(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds both bundle files (contents are checked when it is loaded)."""
    return all((Path(folder) / name).is_file() for name in BUNDLE_FILES)


def update_card(folder: str | os.PathLike, change: Callable[[ModelCard], ModelCard]) -> Path:
    """Rewrites a bundle's ``card.json`` (atomically) as ``change`` makes it from the current
    card; returns the card's path. The model file is not touched: ``model_sha256`` holds.

    Raises:
        BundleError: the card cannot be read (as :func:`read_card`).
    """
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, change(read_card(folder)).to_json())
    return path


def with_training_record(card: ModelCard, key: str, record: dict, **fields) -> ModelCard:
    """``card`` with ``record`` under ``training[key]`` and the other ``fields`` replaced (how
    a command that re-chooses a setting records what it chose and how)."""
    return dataclasses.replace(card, training={**card.training, key: record}, **fields)


def read_card(folder: str | os.PathLike) -> ModelCard:
    """Reads and validates ``card.json`` of a bundle folder.

    Besides parsing, checks that ``preprocess`` is a valid :class:`PreprocessConfig` (a model
    cannot be served with preprocessing this version does not understand) and that
    ``model_sha256`` is present.

    Args:
        folder: the bundle folder.

    Returns:
        The card.

    Raises:
        BundleError: the folder or ``card.json`` is missing, unreadable or invalid; the message
            names the file and the fix.
    """
    folder = Path(folder)
    path = folder / CARD_FILE
    if not folder.is_dir():
        raise BundleError(f"{folder}: bundle folder not found")
    if not path.is_file():
        raise BundleError(
            f"{path}: missing; {folder} is not a model bundle (a bundle folder holds "
            f"{MODEL_FILE} and {CARD_FILE}, written by segcore.bundles.store.save_bundle)"
        )
    try:
        card = ModelCard.from_json(path.read_text(encoding="utf-8"))
        card.preprocess_config  # noqa: B018 - validates the preprocessing
    except (OSError, UnicodeDecodeError, ConfigError, TypeError) as exc:
        raise BundleError(
            f"{path}: invalid model card ({exc}). Restore the file from where the bundle came "
            "from, or save the bundle again with segcore.bundles.store.save_bundle"
        ) from exc
    if not card.model_sha256:
        raise BundleError(
            f"{path}: model_sha256 is missing, so {MODEL_FILE} cannot be verified; "
            "save the bundle with segcore.bundles.store.save_bundle"
        )
    return card


def verify_bundle(folder: str | os.PathLike, card: ModelCard | None = None) -> ModelCard:
    """Checks that ``model.keras`` of a bundle has the SHA-256 recorded in its card.

    Args:
        folder: the bundle folder.
        card: its card, if already read; read with :func:`read_card` otherwise.

    Returns:
        The card.

    Raises:
        BundleError: a file is missing, the card is invalid, or the hash differs (the message
            names the file and both hashes).
    """
    folder = Path(folder)
    card = card if card is not None else read_card(folder)
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(
            f"{model_path}: missing; the bundle is incomplete. Copy or download the whole "
            "bundle folder again"
        )
    actual = file_sha256(model_path)
    if actual != card.model_sha256:
        raise BundleError(
            f"{model_path}: sha256 mismatch: expected {card.model_sha256} (from {CARD_FILE}), "
            f"got {actual}. The file is corrupted, truncated or was replaced; copy or download "
            "the bundle again"
        )
    return card


def _inference_model(model: keras.Model) -> keras.Model:
    """Returns a model with the same layers and weights but no optimizer or compile state.

    ``model.save(path, include_optimizer=False)`` does not help: Keras 3 ignores the flag for
    ``.keras`` files. A compiled functional model is re-wrapped in a new, uncompiled
    ``keras.Model`` over the same layers (no weights are copied); other models are cloned.
    """
    import keras

    if not getattr(model, "compiled", False) and getattr(model, "optimizer", None) is None:
        return model
    try:
        inputs, outputs = model.input, model.output
    except (AttributeError, ValueError):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    return keras.Model(inputs, outputs, name=model.name)


def _is_replaceable(folder: Path) -> bool:
    """True if ``folder`` is empty or holds only bundle files, the converted-model cache
    (:data:`RUNTIME_CACHE_DIR`) and a prepared runtime (:data:`PREPARED_DIR`), so it is safe
    to delete on overwrite."""
    allowed = {*BUNDLE_FILES, "README.md"}
    return all(
        (entry.name in allowed and entry.is_file())
        or (
            entry.name in (RUNTIME_CACHE_DIR, PREPARED_DIR)
            and entry.is_dir()
            and not entry.is_symlink()
        )
        for entry in folder.iterdir()
    )


def save_bundle(
    model: keras.Model,
    folder: str | os.PathLike,
    card: ModelCard,
    *,
    overwrite: bool = True,
) -> Path:
    """Saves a model and its card as a bundle folder, atomically.

    The model is saved without optimizer state (a compiled model is re-wrapped uncompiled),
    so the file holds only the architecture and weights (about 47 MB for the default
    DeepLabV3+ rather than about 142 MB with Adam's state). Keep optimizer state in training
    checkpoints instead. The card is written with ``model_sha256`` set to the hash of the
    saved file and no ``prepared`` runtime (one prepared for the card's former model would not
    be this one's).

    Both files are written into a hidden temporary sibling folder, which is then renamed to
    ``folder``. An existing bundle at ``folder`` is renamed away first, the new one moved in
    and the old one deleted; if moving in fails the old one is put back. Readers therefore see
    the old bundle or the new one, never a mix (between the two renames the folder is briefly
    absent).

    Args:
        model: the trained Keras model.
        folder: the bundle folder to create or replace.
        card: the card; its ``model_sha256`` is replaced by the saved file's hash.
        overwrite: replace an existing bundle at ``folder``, defaults to True.

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        BundleError: ``folder`` exists and ``overwrite`` is False, or it exists and holds
            files other than a bundle's (it is never deleted then), or saving failed.
    """
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise BundleError(f"{folder}: already exists; pass overwrite=True to replace it")
        if not folder.is_dir() or not _is_replaceable(folder):
            raise BundleError(
                f"{folder}: exists and is not a model bundle (it holds files other than "
                f"{MODEL_FILE}, {CARD_FILE}, README.md); refusing to replace it. "
                "Choose another folder"
            )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        model_path = staging / MODEL_FILE
        try:
            _inference_model(model).save(model_path)
        except Exception as exc:
            raise BundleError(
                f"{folder}: could not save the model ({exc.__class__.__name__}: {exc})"
            ) from exc
        # a new model file: a runtime prepared for another one is not carried over
        card = dataclasses.replace(card, model_sha256=file_sha256(model_path), prepared={})
        write_json_atomic(staging / CARD_FILE, card.to_dict())
        _move_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("saved bundle %s (%s, sha256 %s)", folder, card.name, card.model_sha256[:12])
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    if not folder.exists():
        os.rename(staging, folder)
        return
    old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
    old.rmdir()
    os.rename(folder, old)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def list_bundles(
    *folders: str | os.PathLike, problems: list[tuple[Path, str]] | None = None
) -> list[tuple[Path, ModelCard]]:
    """Finds the bundles directly inside the given folders.

    A sub-folder with a ``card.json`` is a bundle candidate. Valid ones (card readable, model
    file present) are returned; invalid ones are logged as warnings and, when ``problems`` is
    given, appended to it as ``(folder, message)``. Hidden folders (including the temporary
    folders of :func:`save_bundle`), sub-folders without ``card.json`` and folders that do not
    exist are skipped silently. Hashes are not checked here (that reads every model file);
    :func:`load_bundle` checks them.

    Args:
        *folders: folders to scan, defaults to :data:`DEFAULT_WEIGHTS_DIR`.
        problems: optional list that receives ``(folder, message)`` for invalid bundles.

    Returns:
        ``(folder, card)`` pairs, sorted by folder name within each scanned folder.
    """
    found = []
    for root in folders or (DEFAULT_WEIGHTS_DIR,):
        root = Path(root)
        if not root.is_dir():
            log.debug("list_bundles: %s does not exist", root)
            continue
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or not (child / CARD_FILE).is_file():
                continue
            try:
                card = read_card(child)
                if not (child / MODEL_FILE).is_file():
                    raise BundleError(f"{child / MODEL_FILE}: missing; the bundle is incomplete")
            except BundleError as exc:
                log.warning("skipping invalid bundle: %s", exc)
                if problems is not None:
                    problems.append((child, str(exc)))
                continue
            found.append((child, card))
    return found
