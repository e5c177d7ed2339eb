"""JSON (de)serialisation of the project's frozen config dataclasses, written once.

Every configuration that is saved beside a model or a run — :class:`~segcore.data.preprocessing.
PreprocessConfig`, :class:`~segcore.network.config.ModelConfig`, :class:`~segcore.training.config.
TrainConfig`, :class:`~segcore.training.config.AugmentConfig`, the model card
(:mod:`segcore.bundles.card`) — inherits :class:`JsonConfig`, so they all read and write JSON the
same way and report every problem as :class:`~segcore.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Self

from segcore.errors import ConfigError


def jsonable(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively (the form JSON gives back)."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


class JsonConfig:
    """Mixin for frozen dataclasses whose fields are JSON values.

    Subclasses validate their values in ``__post_init__`` (raising :class:`ConfigError`); this
    class adds the conversions. ``from_dict`` refuses unknown keys: a config written by a newer
    version with a field this version does not know must not be half-applied.
    """

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dict (tuples as lists)."""
        return jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Builds an instance from :meth:`to_dict` output.

        Raises:
            ConfigError: ``data`` is not a dict, has unknown keys, or a value is invalid.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    def to_json(self) -> str:
        """Returns the instance as indented JSON text (ending with a newline)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parses :meth:`to_json` output.

        Raises:
            ConfigError: malformed JSON, or as for :meth:`from_dict`.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: malformed JSON ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Self:
        """Reads a JSON file written with :meth:`to_json`.

        Raises:
            ConfigError: the file is missing or unreadable, or as for :meth:`from_json`; the
                message names the file.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON config ({exc})") from exc
        try:
            return cls.from_json(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
