"""The model card (``card.json``): what a model is, how to serve it, how good it is, its origin.

One schema, :class:`ModelCard`, written by training (:mod:`segcore.training.trainer`) and by
``segcore evaluate --update-card`` alike and read by the app's Models page. Its quality figures
are :class:`SplitFigures`, one per split a model was evaluated on (and, once evaluations at
other pixel sizes exist, per pixel size), kept in :attr:`ModelCard.metrics`.

Cards of format 1 (written before this schema) are migrated when read: their flat
``metrics.validation`` and nested ``metrics.test`` become :class:`SplitFigures`, the duplicate
top-level ``backbone_weights`` goes into ``architecture``.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import platform
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segcore.configs import JsonConfig, check_field_types, jsonable
from segcore.data.images import PIXEL_SIZE_RANGE, in_pixel_size_range
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import ConfigError
from segcore.inference.instances import InstanceConfig
from segcore.metrics.counts import METRIC_NAMES
from segcore.timestamps import utc_now
from segcore.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from segcore.evaluation.evaluate import EvaluationResult
    from segcore.network.config import ModelConfig

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
"""The card's file name inside a bundle folder."""

CARD_FORMAT_VERSION = 2
"""Layout version of the cards this version writes (1: metrics as free-form dicts)."""

VALIDATION = "validation"
"""The :attr:`ModelCard.metrics` key of the figures the threshold was chosen on."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def software_versions() -> dict[str, str]:
    """Returns the versions of Python and the packages a bundle depends on.

    Versions come from the installed package metadata, so calling this does not import
    TensorFlow. Packages that are not installed are reported as ``"not installed"``.

    Returns:
        ``{"python", "tensorflow", "keras", "numpy", "segcore"}`` → version strings.
    """
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["segcore"] = __version__
    return versions


def _check_figures(name: str, values: Any) -> dict[str, float]:
    if not isinstance(values, dict) or set(values) != set(METRIC_NAMES):
        raise ConfigError(f"SplitFigures.{name} must map exactly {list(METRIC_NAMES)} to numbers")
    checked = {}
    for key in METRIC_NAMES:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"SplitFigures.{name}.{key} must be a number, got {value!r}")
        checked[key] = float(value)
    return checked


@dataclass(frozen=True)
class SplitFigures(JsonConfig):
    """Quality of a model on one split of a dataset, at one threshold.

    Args:
        split: str. The split, e.g. ``"validation"`` or ``"test"``.
        threshold: float. The probability threshold the figures were computed at.
        images: int. Number of images evaluated (full size).
        pooled: dict. ``dice``, ``jaccard``, ``precision``, ``recall`` from the pixel counts
            summed over all images.
        mean: dict. The same four metrics computed per image and averaged.
        data: str. The dataset (folder or ``"synthetic"``), defaults to ``""`` (unknown).
        pixel_size: float | None. µm per pixel the images were evaluated at; ``None`` (the
            default) means their native resolution.
        best_threshold: float | None. The threshold of best pooled Dice on this split
            (informational: thresholds are chosen on validation data only), defaults to None.
        command: str. The command line that produced the figures, defaults to ``""``.
        evaluated: str. ISO 8601 UTC time of the evaluation, defaults to now.

    Raises:
        ConfigError: a value is missing or invalid.
    """

    split: str
    threshold: float
    images: int
    pooled: dict[str, float]
    mean: dict[str, float]
    data: str = ""
    pixel_size: float | None = None
    best_threshold: float | None = None
    command: str = ""
    evaluated: str = field(default_factory=utc_now)

    def __post_init__(self):
        if not isinstance(self.split, str) or not self.split:
            raise ConfigError("SplitFigures.split must be a non-empty string")
        for name in ("threshold", "best_threshold"):
            value = getattr(self, name)
            if value is None and name == "best_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"SplitFigures.{name} must be a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"SplitFigures.{name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.images, bool) or not isinstance(self.images, int) or self.images < 0:
            raise ConfigError(f"SplitFigures.images must be a count, got {self.images!r}")
        object.__setattr__(self, "pooled", _check_figures("pooled", self.pooled))
        object.__setattr__(self, "mean", _check_figures("mean", self.mean))
        if self.pixel_size is not None and not (
            isinstance(self.pixel_size, int | float) and self.pixel_size > 0
        ):
            raise ConfigError(f"SplitFigures.pixel_size must be > 0, got {self.pixel_size!r}")

    @property
    def key(self) -> str:
        """The key in :attr:`ModelCard.metrics`: the split, plus ``@<µm>um`` off-native."""
        return self.split if self.pixel_size is None else f"{self.split}@{self.pixel_size:g}um"

    @classmethod
    def from_evaluation(
        cls,
        result: EvaluationResult,
        *,
        split: str,
        threshold: float | None = None,
        data: str = "",
        pixel_size: float | None = None,
        command: str = "",
    ) -> SplitFigures:
        """The figures of an :class:`~segcore.evaluation.evaluate.EvaluationResult`.

        Args:
            result: the evaluation.
            split: the split it covered.
            threshold: where to read the figures; ``None`` (the default) takes the result's
                own threshold, another value is read off the result's sweep and must lie on
                its grid (e.g. a best threshold chosen from that sweep).
            data: the dataset.
            pixel_size: µm per pixel of the evaluation, ``None`` for native.
            command: the command line.
        """
        if threshold is None or threshold == result.threshold:
            threshold = result.threshold
            pooled = {key: float(result.pooled[key]) for key in METRIC_NAMES}
            mean = {key: float(result.mean[key]) for key in METRIC_NAMES}
        else:
            index = result.sweep.index_of(threshold)
            pooled = {key: float(result.sweep.pooled.get(key)[index]) for key in METRIC_NAMES}
            mean = {key: float(result.sweep.per_image_mean.get(key)[index]) for key in METRIC_NAMES}
        return cls(
            split=split,
            threshold=float(threshold),
            images=result.n_images,
            pooled=pooled,
            mean=mean,
            data=str(data),
            pixel_size=pixel_size,
            best_threshold=float(result.best_threshold),
            command=command,
        )


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 card dict in the format-2 layout (see the module docstring)."""
    data = dict(data)
    architecture = dict(data.get("architecture") or {})
    if "backbone_weights" in data:
        architecture.setdefault("backbone_weights", data.pop("backbone_weights"))
    data["architecture"] = architecture
    old = data.get("metrics") or {}
    metrics: dict[str, Any] = {}
    training = dict(data.get("training") or {})
    for key, value in old.items() if isinstance(old, dict) else ():
        if key == "history_last":
            training["history_last"] = value
        elif isinstance(value, dict) and isinstance(value.get("pooled"), dict):  # evaluate's
            metrics[key] = {
                "split": key,
                "threshold": value.get("threshold", data.get("threshold", 0.5)),
                "images": value.get("images", 0),
                "pooled": {k: value["pooled"][k] for k in METRIC_NAMES},
                "mean": {k: value["mean"][k] for k in METRIC_NAMES},
                "data": value.get("data", ""),
                "best_threshold": value.get("best_threshold_on_this_split"),
                "command": value.get("command", ""),
                "evaluated": data.get("created", ""),
            }
        elif isinstance(value, dict) and "dice" in value:  # training's flat validation figures
            metrics[VALIDATION if key == "validation" else key] = {
                "split": VALIDATION if key == "validation" else key,
                "threshold": value.get("threshold", data.get("threshold", 0.5)),
                "images": value.get("images", 0),
                "pooled": {k: value[k] for k in METRIC_NAMES},
                "mean": {k: value[f"mean_{k}"] for k in METRIC_NAMES},
                "data": str((data.get("dataset") or {}).get("data", "")),
                "best_threshold": value.get("threshold"),
                "command": (data.get("training") or {}).get("command", ""),
                "evaluated": data.get("created", ""),
            }
    data["metrics"] = metrics
    if training:
        data["training"] = training
    data["format_version"] = CARD_FORMAT_VERSION
    return data


@dataclass(frozen=True)
class ModelCard(JsonConfig):
    """What a trained model is, how to use it and where it came from (``card.json``).

    Args:
        name: str. Short name of the model, e.g. ``"monuseg-deeplabv3plus-v1"``.
        architecture: dict. :meth:`segcore.network.config.ModelConfig.to_dict` of the model
            (including its backbone initialisation); empty means the defaults. Informational:
            the architecture itself is stored in ``model.keras``.
        input_size: int. Side of the square tiles the model was trained on, defaults to 256.
            Inference tiles large images to this size.
        pixel_size: float | None. µm per pixel of the training images (MoNuSeg 40×: 0.25);
            images of another pixel size are resampled to it before prediction. ``None`` (the
            default, and every card written before the field) means unknown, taken as 0.25.
        preprocess: dict. :meth:`segcore.data.preprocessing.PreprocessConfig.to_dict` used in
            training, and therefore required at inference; empty means the defaults.
        threshold: float. Probability threshold that maximised the validation Dice, in
            ``[0, 1]``, defaults to 0.5.
        instances: dict. :meth:`segcore.inference.instances.InstanceConfig.to_dict`: how the
            mask becomes nuclei (minimum area, split depth), chosen on validation tiles by
            ``python -m segcore tune-instances``; empty means the defaults.
        dataset: dict. Free-form description of the training data: path or name, layout,
            split sizes, seed.
        training: dict. The training recipe (:class:`~segcore.training.config.TrainConfig`)
            and its outcome: epochs completed, best epoch, time in seconds, device, command.
        metrics: dict. :class:`SplitFigures` by :attr:`SplitFigures.key` (``"validation"``,
            ``"test"``, ...); set them with :meth:`with_figures`.
        comparison: dict. For a fine-tuned model, the model it started from and this one on
            the run's validation images (:func:`segcore.training.comparison.compare_models`:
            ``split``, ``images``, ``before`` and ``after`` with ``model``, ``threshold``,
            ``dice``, ``pq``); empty otherwise.
        prepared: dict. A fast runtime prepared where the bundle was made and shipped in its
            ``prepared/`` folder (:mod:`segcore.bundles.prepared`: ``runtime``, ``files`` with
            their SHA-256, the library ``versions`` it was made with, ``made_on``,
            ``created``); empty when the bundle ships none.
        versions: dict. Software versions at training time, defaults to
            :func:`software_versions` of the running interpreter.
        licence: str. Licence of the weights (mind the training data's licence), defaults to
            ``"unspecified"``.
        created: str. ISO 8601 UTC creation time, defaults to now.
        model_sha256: str. SHA-256 (hex) of ``model.keras``; filled by
            :func:`segcore.bundles.store.save_bundle`, defaults to ``""``.
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
    pixel_size: float | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    instances: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, SplitFigures] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=software_versions)
    licence: str = "unspecified"
    created: str = field(default_factory=utc_now)
    model_sha256: str = ""
    format_version: int = CARD_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("ModelCard.name must be a non-empty string")
        for name in (
            "architecture",
            "preprocess",
            "instances",
            "dataset",
            "training",
            "metrics",
            "comparison",
            "prepared",
        ):
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
        if self.pixel_size is not None and not (
            isinstance(self.pixel_size, int | float)
            and not isinstance(self.pixel_size, bool)
            and in_pixel_size_range(self.pixel_size)
        ):
            raise ConfigError(
                f"ModelCard.pixel_size must be in {PIXEL_SIZE_RANGE} or null, "
                f"got {self.pixel_size!r}"
            )
        metrics = {}
        for key, figures in self.metrics.items():
            if isinstance(figures, dict):
                figures = SplitFigures.from_dict(figures)
            if not isinstance(figures, SplitFigures) or figures.key != key:
                raise ConfigError(f"ModelCard.metrics[{key!r}] must be SplitFigures of that key")
            metrics[key] = figures
        object.__setattr__(self, "metrics", metrics)
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
    def instance_config(self) -> InstanceConfig:
        """The :class:`~segcore.inference.instances.InstanceConfig` that turns the mask into
        nuclei.

        Raises:
            ConfigError: ``instances`` has unknown keys or invalid values.
        """
        return InstanceConfig.from_dict(self.instances)

    @property
    def model_config(self) -> ModelConfig:
        """The :class:`ModelConfig` the model was built with.

        Raises:
            ConfigError: ``architecture`` has unknown keys or invalid values.
        """
        from segcore.network.config import ModelConfig

        return ModelConfig.from_dict(self.architecture)

    @property
    def backbone_weights(self) -> str | None:
        """The backbone initialisation the model was trained from (``None``: random)."""
        return self.architecture.get("backbone_weights")

    def figures(self, split: str, pixel_size: float | None = None) -> SplitFigures | None:
        """The recorded figures of ``split`` (at ``pixel_size``), or ``None``."""
        probe = f"{split}@{pixel_size:g}um" if pixel_size is not None else split
        return self.metrics.get(probe)

    def with_figures(self, figures: SplitFigures) -> ModelCard:
        """A copy of the card with ``figures`` recorded (replacing those of the same key)."""
        return dataclasses.replace(self, metrics={**self.metrics, figures.key: figures})

    def to_dict(self) -> dict[str, Any]:
        """Returns the card as a JSON-serialisable dict; ``extra`` keys are merged at the top.
        An empty ``comparison`` or ``prepared`` is left out (cards of models not fine-tuned, or
        shipping no runtime, stay as they were)."""
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("extra", "metrics")
            and not (f.name in ("comparison", "prepared") and not getattr(self, f.name))
        }
        data["metrics"] = {key: figures.to_dict() for key, figures in self.metrics.items()}
        data = jsonable(data)
        data.update(jsonable(self.extra))
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """Builds a card from :meth:`to_dict` output (e.g. a parsed ``card.json``).

        Unknown keys go to :attr:`extra` rather than failing, so cards written by newer
        versions load. Missing optional keys take their defaults, except ``versions``, which
        becomes ``{}`` (unknown) rather than this interpreter's versions. Format-1 cards are
        migrated (see the module docstring).

        Raises:
            ConfigError: ``data`` is not a dict, ``name`` is missing, or a field is invalid.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a model card must be a JSON object, got {type(data).__name__}")
        if "name" not in data:
            raise ConfigError("a model card needs a 'name'")
        check_field_types(cls, {"format_version": data.get("format_version", 1)})
        if data.get("format_version", 1) < 2:
            try:
                data = _migrate_v1(data)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ConfigError(f"a format-1 card with unreadable metrics ({exc!r})") from exc
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs.setdefault("versions", {})
        check_field_types(cls, kwargs)
        extra = {key: value for key, value in data.items() if key not in known}
        if "extra" in data and isinstance(data["extra"], dict):
            # a card serialised with asdict() instead of to_dict(): unpack rather than nest
            extra.pop("extra")
            extra.update(data["extra"])
        if extra:
            version = kwargs.get("format_version", CARD_FORMAT_VERSION)
            log.debug("card (format %s) has keys unknown here: %s", version, sorted(extra))
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:
            raise ConfigError(f"invalid model card: {exc}") from exc
