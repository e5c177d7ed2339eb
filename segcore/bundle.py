"""Model bundles: a trained model together with everything needed to serve it.

A bundle is a folder with exactly two files::

    my-model/
        model.keras   # the Keras model (architecture + weights), saved WITHOUT optimizer state
        card.json     # a ModelCard: preprocessing, threshold, provenance, metrics, sha256

``card.json`` is a JSON object with the fields of :class:`ModelCard` (see its docstring).
Its ``model_sha256`` is the SHA-256 of ``model.keras``; :func:`load_bundle` checks it before
loading, so a truncated, corrupted or swapped model file is refused instead of silently
giving wrong masks. Keys this version does not know are kept (:attr:`ModelCard.extra`) and
written back, so cards written by newer versions still load.

Saving is atomic (:func:`save_bundle`): everything is written into a hidden temporary sibling
folder which is then renamed into place, so a reader sees the old bundle or the complete new
one, never half of one. Hidden folders (names starting with ``.``) are never listed as bundles.

Importing this module (or :mod:`segcore.hub`) does not import TensorFlow; loading and saving
models and :attr:`ModelCard.model_config` do.

Bundles are referred to by a *ref* (:func:`resolve_bundle_ref`):

* a folder path (``Path`` or string with a path separator): ``"runs/exp1/bundle"``;
* a bare name: a folder under ``weights/`` of the repository (or ``weights_dir``),
  e.g. :data:`DEFAULT_BUNDLE`;
* ``"hf://org/name@revision"``: a Hugging Face Hub model repository, downloaded into the
  normal Hugging Face cache by :func:`segcore.hub.download_bundle`.

Example:
    >>> card = ModelCard(name="monuseg-v1", architecture=ModelConfig().to_dict(),
    ...                  preprocess=PreprocessConfig().to_dict(), threshold=0.45)
    >>> save_bundle(model, "weights/monuseg-v1", card)
    >>> bundle = load_bundle("monuseg-v1")
    >>> bundle.threshold, bundle.preprocess
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcore.atomic import write_json_atomic
from segcore.errors import BundleError, ConfigError
from segcore.preprocessing import PreprocessConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from segcore.model_config import ModelConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
"""Name of the Keras model file inside a bundle folder."""

CARD_FILE = "card.json"
"""Name of the model card file inside a bundle folder."""

BUNDLE_FILES = (MODEL_FILE, CARD_FILE)
"""The files that make a folder a bundle."""

CARD_FORMAT_VERSION = 1
"""Version of the ``card.json`` layout written by this module."""

DEFAULT_BUNDLE = "default"
"""Name of the bundle the app uses when none is chosen: ``weights/default/``."""

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""Where bare bundle names are looked up: the repository's ``weights/`` folder."""

HF_SCHEME = "hf://"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def software_versions() -> dict[str, str]:
    """Returns the versions of Python and the packages a bundle depends on.

    Versions come from the installed package metadata, so calling this does not import
    TensorFlow. Packages that are not installed are reported as ``"not installed"``.

    Returns:
        ``{"python", "tensorflow", "keras", "numpy", "segcore"}`` → version strings.
    """
    from segcore import __version__

    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["segcore"] = __version__
    return versions


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is, how to use it and where it came from (``card.json``).

    Args:
        name: str. Short name of the model, e.g. ``"monuseg-deeplabv3plus-v1"``.
        architecture: dict. :meth:`segcore.model.ModelConfig.to_dict` of the model; empty means
            the defaults. Informational: the architecture itself is stored in ``model.keras``.
        input_size: int. Side of the square tiles the model was trained on, defaults to 256.
            Inference tiles large images to this size.
        preprocess: dict. :meth:`segcore.preprocessing.PreprocessConfig.to_dict` used in
            training, and therefore required at inference; empty means the defaults.
        threshold: float. Probability threshold that maximised the validation Dice, in
            ``[0, 1]``, defaults to 0.5.
        dataset: dict. Free-form description of the training data: path or name, layout,
            split sizes, seed.
        training: dict. Free-form training recipe: epochs, batch size, learning rate, loss,
            augmentation, command line, training time in seconds, device.
        backbone_weights: str | None. Backbone initialisation actually used (``"imagenet"``,
            a file name, or ``None`` for random), defaults to ``None``.
        metrics: dict. Evaluation figures, e.g. ``{"validation": {"dice": 0.81}, "test": {...}}``.
        versions: dict. Software versions at training time, defaults to
            :func:`software_versions` of the running interpreter.
        licence: str. Licence of the weights (mind the training data's licence), defaults to
            ``"unspecified"``.
        created: str. ISO 8601 UTC creation time, defaults to now.
        model_sha256: str. SHA-256 (hex) of ``model.keras``; filled by :func:`save_bundle`,
            defaults to ``""``.
        format_version: int. Layout version of the card, defaults to
            :data:`CARD_FORMAT_VERSION`.
        extra: dict. Keys of a loaded card that this version does not know; written back
            unchanged (at the top level) by :meth:`to_dict`.

    Raises:
        ConfigError: a field has the wrong type or an invalid value.
    """

    name: str
    architecture: dict[str, Any] = field(default_factory=dict)
    input_size: int = 256
    preprocess: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    dataset: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=software_versions)
    licence: str = "unspecified"
    created: str = field(default_factory=_utc_now)
    model_sha256: str = ""
    format_version: int = CARD_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("ModelCard.name must be a non-empty string")
        for name in ("architecture", "preprocess", "dataset", "training", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"ModelCard.{name} must be a JSON object (dict)")
        if not isinstance(self.versions, dict) or not isinstance(self.extra, dict):
            raise ConfigError("ModelCard.versions and ModelCard.extra must be dicts")
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int):
            raise ConfigError(f"ModelCard.input_size must be an int, got {self.input_size!r}")
        if self.input_size < 1:
            raise ConfigError(f"ModelCard.input_size must be positive, got {self.input_size}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise ConfigError(f"ModelCard.threshold must be a number, got {self.threshold!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"ModelCard.threshold must be in [0, 1], got {self.threshold}")
        object.__setattr__(self, "threshold", float(self.threshold))
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            raise ConfigError("ModelCard.backbone_weights must be a string or null")
        for name in ("licence", "created", "model_sha256"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"ModelCard.{name} must be a string")
        if self.model_sha256 and not _SHA256_RE.fullmatch(self.model_sha256):
            raise ConfigError(
                f"ModelCard.model_sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}"
            )
        clash = set(self.extra) & set(self.__dataclass_fields__)
        if clash:
            raise ConfigError(f"ModelCard.extra must not repeat card fields: {sorted(clash)}")

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The :class:`PreprocessConfig` to apply before the model.

        Raises:
            ConfigError: ``preprocess`` has unknown keys or invalid values.
        """
        return PreprocessConfig.from_dict(self.preprocess)

    @property
    def model_config(self) -> ModelConfig:
        """The :class:`ModelConfig` the model was built with.

        Raises:
            ConfigError: ``architecture`` has unknown keys or invalid values.
        """
        from segcore.model_config import ModelConfig

        return ModelConfig.from_dict(self.architecture)

    def to_dict(self) -> dict[str, Any]:
        """Returns the card as a JSON-serialisable dict; ``extra`` keys are merged at the top."""
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        data = json.loads(json.dumps(data))  # deep copy, and fails early on non-JSON values
        data.update(json.loads(json.dumps(self.extra)))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Builds a card from :meth:`to_dict` output (e.g. a parsed ``card.json``).

        Unknown keys go to :attr:`extra` rather than failing, so cards written by newer versions
        load. Missing optional keys take their defaults, except ``versions`` which becomes ``{}``
        (unknown) rather than this interpreter's versions.

        Raises:
            ConfigError: ``data`` is not a dict, ``name`` is missing, or a field is invalid.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a model card must be a JSON object, got {type(data).__name__}")
        if "name" not in data:
            raise ConfigError("a model card needs a 'name'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs.setdefault("versions", {})
        extra = {key: value for key, value in data.items() if key not in known}
        if "extra" in data and isinstance(data["extra"], dict):
            # a card serialised with asdict() instead of to_dict(): unpack rather than nest
            extra.pop("extra")
            extra.update(data["extra"])
        if extra:
            version = kwargs.get("format_version", CARD_FORMAT_VERSION)
            log.debug("card (format %s) has keys unknown here: %s", version, sorted(extra))
        return cls(**kwargs, extra=extra)

    def to_json(self) -> str:
        """Returns the card as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parses :meth:`to_json` output.

        Raises:
            ConfigError: malformed JSON or an invalid card.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"malformed JSON: {exc}") from exc
        return cls.from_dict(data)


@dataclass
class Bundle:
    """A loaded bundle: the model and its card.

    Args:
        path: Path. The bundle folder (for ``hf://`` refs, the snapshot folder in the
            Hugging Face cache).
        card: ModelCard. The parsed ``card.json``.
        model: keras.Model. The loaded model (uncompiled unless asked otherwise).
    """

    path: Path
    card: ModelCard
    model: keras.Model

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the model was trained with."""
        return self.card.preprocess_config

    @property
    def threshold(self) -> float:
        """The probability threshold chosen on validation data."""
        return self.card.threshold

    @property
    def input_size(self) -> int:
        """The training tile side in pixels."""
        return self.card.input_size


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the SHA-256 (lowercase hex) of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
            f"{MODEL_FILE} and {CARD_FILE}, written by segcore.bundle.save_bundle)"
        )
    try:
        card = ModelCard.from_json(path.read_text(encoding="utf-8"))
        card.preprocess_config  # noqa: B018 - validates the preprocessing
    except (OSError, UnicodeDecodeError, ConfigError, TypeError) as exc:
        raise BundleError(
            f"{path}: invalid model card ({exc}). Restore the file from where the bundle came "
            "from, or save the bundle again with segcore.bundle.save_bundle"
        ) from exc
    if not card.model_sha256:
        raise BundleError(
            f"{path}: model_sha256 is missing, so {MODEL_FILE} cannot be verified; "
            "save the bundle with segcore.bundle.save_bundle"
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
    """True if ``folder`` is empty or holds only bundle files (safe to delete on overwrite)."""
    allowed = {*BUNDLE_FILES, "README.md"}
    return all(entry.name in allowed and entry.is_file() for entry in folder.iterdir())


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
    saved file.

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
        card = dataclasses.replace(card, model_sha256=file_sha256(model_path))
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


def parse_hf_ref(ref: str) -> tuple[str, str]:
    """Splits ``"hf://org/name@revision"`` into ``("org/name", "revision")``.

    The revision is optional and defaults to ``"main"``, which is *unpinned*: the bundle
    changes when the repository does. Pin a commit hash for reproducible results.

    Raises:
        BundleError: not of the form ``hf://org/name[@revision]``.
    """
    if not ref.startswith(HF_SCHEME):
        raise BundleError(f"{ref!r} is not a Hugging Face ref (hf://org/name@revision)")
    repo_id, at, revision = ref[len(HF_SCHEME) :].partition("@")
    if not _REPO_ID_RE.fullmatch(repo_id) or (at and not revision):
        raise BundleError(
            f"{ref!r}: expected hf://org/name@revision, e.g. "
            "hf://my-org/nuclei-deeplabv3plus@0123456789abcdef0123456789abcdef01234567"
        )
    return repo_id, revision or "main"


def resolve_bundle_ref(
    ref: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None
) -> Path:
    """Turns a bundle ref into a local bundle folder (downloading ``hf://`` refs).

    Refs, checked in this order:

    * ``"hf://org/name@revision"``: downloaded with :func:`segcore.hub.download_bundle` into
      the Hugging Face cache (``HF_HUB_CACHE``/``HF_HOME``; offline with ``HF_HUB_OFFLINE=1``).
      ``@revision`` may be left out and then means ``main``, which is unpinned; pinning a
      commit hash is recommended.
    * a ``Path``, or a string containing a path separator or starting with ``~`` or ``.``: a
      folder path.
    * a bare name: ``weights_dir / name`` if that folder exists, otherwise ``./name``.

    Only the folder's existence is checked here; :func:`load_bundle` checks its contents.

    Args:
        ref: the ref.
        weights_dir: where bare names are looked up, defaults to :data:`DEFAULT_WEIGHTS_DIR`.

    Returns:
        The bundle folder.

    Raises:
        BundleError: the folder does not exist, or the download failed.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    if isinstance(ref, str) and ref.startswith(HF_SCHEME):
        from segcore.hub import download_bundle

        repo_id, revision = parse_hf_ref(ref)
        return download_bundle(repo_id, revision)
    text = os.fspath(ref)
    if not text:
        raise BundleError("empty bundle ref; give a folder, a name under weights/ or hf://...")
    is_name = (
        isinstance(ref, str)
        and "/" not in text
        and os.sep not in text
        and not text.startswith(("~", "."))
    )
    if is_name:
        candidates = [weights_dir / text, Path(text)]
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        available = ", ".join(path.name for path, _ in list_bundles(weights_dir)) or "none"
        raise BundleError(
            f"bundle {text!r} not found: looked for {candidates[0]} and {candidates[1].resolve()}. "
            f"Bundles in {weights_dir}: {available}. Train and save one with "
            "segcore.bundle.save_bundle, or give a folder path or hf://org/name@revision"
        )
    path = Path(text).expanduser()
    if not path.is_dir():
        raise BundleError(
            f"{path}: bundle folder not found; give a folder holding {MODEL_FILE} and {CARD_FILE}"
        )
    return path


def load_bundle(
    ref: str | os.PathLike,
    *,
    weights_dir: str | os.PathLike | None = None,
    compile: bool = False,
) -> Bundle:
    """Loads a bundle: resolves the ref, reads the card, verifies the hash, loads the model.

    The SHA-256 of ``model.keras`` is checked against the card *before* the file is opened.
    The model is loaded with ``keras.saving.load_model(..., safe_mode=True)`` after importing
    :mod:`segcore.layers` and :mod:`segcore.keras_metrics`, which register the custom objects.

    Args:
        ref: a folder path, a name under ``weights_dir``, or ``"hf://org/name@revision"``
            (see :func:`resolve_bundle_ref`; without ``@revision`` the ``main`` branch is used,
            which is unpinned, so pin a commit hash where results must be reproducible).
        weights_dir: where bare names are looked up, defaults to :data:`DEFAULT_WEIGHTS_DIR`.
        compile: passed to ``load_model``. Bundles are saved without optimizer and compile
            configuration, so the model is uncompiled either way; call ``model.compile`` to
            fine-tune it.

    Returns:
        The :class:`Bundle`.

    Raises:
        BundleError: the ref does not resolve, a file is missing, the card is invalid, the
            hash differs, or Keras cannot load the model.
    """
    path = resolve_bundle_ref(ref, weights_dir=weights_dir)
    card = verify_bundle(path, read_card(path))

    import keras

    import segcore.keras_metrics
    import segcore.layers  # noqa: F401 - registers the custom layers

    model_path = path / MODEL_FILE
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=compile)
    except Exception as exc:
        raise BundleError(
            f"{model_path}: Keras could not load the model ({exc.__class__.__name__}: "
            f"{str(exc)[:300]}). The bundle may need a newer segcore "
            f"(it was saved with {card.versions or 'unknown versions'})"
        ) from exc
    log.info("loaded bundle %s from %s", card.name, path)
    return Bundle(path=path, card=card, model=model)


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
