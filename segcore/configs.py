"""JSON (de)serialisation of the project's frozen config dataclasses, written once.

Every configuration that is saved beside a model or a run — :class:`~segcore.data.preprocessing.
PreprocessConfig`, :class:`~segcore.network.config.ModelConfig`, :class:`~segcore.training.config.
TrainConfig`, :class:`~segcore.training.config.AugmentConfig`, the model card
(:mod:`segcore.bundles.card`) — inherits :class:`JsonConfig`, so they all read and write JSON the
same way and report every problem as :class:`~segcore.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import numbers
import os
import sys
import types
import typing
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


def _resolved_types(cls: type) -> dict[str, Any]:
    """The annotation of each field of dataclass ``cls`` as a type (``from __future__ import
    annotations`` leaves them as strings); a field whose annotation cannot be resolved (a name
    imported for type checkers only) is left out, so it is not checked here."""
    cached = cls.__dict__.get("_field_types_cache")
    if cached is not None:
        return cached
    resolved: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        namespace = dict(vars(sys.modules[klass.__module__]))
        for name, annotation in inspect.get_annotations(klass).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace, dict(vars(klass)))
                except Exception:  # unresolvable: not checked
                    resolved.pop(name, None)
                    continue
            resolved[name] = annotation
    fields = {f.name for f in dataclasses.fields(cls)}
    resolved = {name: kind for name, kind in resolved.items() if name in fields}
    cls._field_types_cache = resolved  # type: ignore[attr-defined]
    return resolved


def _expected(kind: Any) -> tuple[str, typing.Callable[[Any], bool]] | None:
    """What a JSON value of annotation ``kind`` must be: its description ("an integer") and a
    test; None when anything goes (``Any``, or an annotation this check does not know)."""
    if kind is Any:
        return None
    if kind is None or kind is type(None):
        return "null", lambda value: value is None
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        arms = [_expected(arm) for arm in typing.get_args(kind)]
        if any(arm is None for arm in arms):
            return None
        checks = [arm[1] for arm in arms if arm is not None]
        words = [arm[0] for arm in arms if arm is not None]
        return " or ".join(words), lambda value: any(check(value) for check in checks)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        kinds = {type(choice) for choice in choices}
        if kinds == {str}:  # the value itself is checked by the class, with its own message
            return "a string", lambda value: isinstance(value, str)
        return " or ".join(repr(c) for c in choices), lambda value: value in choices
    if origin in (list, tuple) or kind in (list, tuple):
        args = [arg for arg in typing.get_args(kind) if arg is not Ellipsis]
        item = _expected(args[0]) if len(set(map(repr, args))) == 1 else None
        if item is None:
            return "a list", lambda value: isinstance(value, list | tuple)
        word, check = item
        return (
            f"a list of {word.removeprefix('an ').removeprefix('a ')}s",
            lambda value: isinstance(value, list | tuple) and all(check(v) for v in value),
        )
    if origin is dict or kind is dict:
        return "an object", lambda value: isinstance(value, dict)
    if kind is bool:
        return "true or false", _is_bool
    if kind is int:
        return "an integer", lambda value: _is_number(value, numbers.Integral)
    if kind is float:
        return "a number", lambda value: _is_number(value, numbers.Real)
    if kind is str:
        return "a string", lambda value: isinstance(value, str)
    if isinstance(kind, type) and issubclass(kind, JsonConfig):  # nested: itself or its dict
        return "an object", lambda value: isinstance(value, kind | dict)
    return None


def _is_bool(value: Any) -> bool:
    """``value`` is a bool, Python's or NumPy's (which is neither a bool nor an Integral)."""
    kind = type(value)
    numpy_bool = kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")
    return isinstance(value, bool) or numpy_bool


def _is_number(value: Any, kind: type) -> bool:
    """``value`` is a ``kind`` (ints count as reals), never a bool (JSON's true is no 1)."""
    return isinstance(value, kind) and not _is_bool(value)


def check_field_types(cls: type, data: dict[str, Any]) -> None:
    """Checks that each value of ``data`` has the type of ``cls``'s field of that name.

    The annotations are read as JSON types: ``int`` an integer (not ``true``/``false``),
    ``float`` any number (ints included), ``bool`` true or false, ``str`` a string,
    ``list``/``tuple`` a list (of the item type when one is given), ``dict`` an object,
    ``X | None`` also null, a nested config also its object; ranges and choices are left to the
    class's own checks. Keys that are no field are ignored (the caller handles them).

    Raises:
        ConfigError: naming the field, e.g. ``TrainConfig.epochs must be an integer, got 'many'``.
    """
    kinds = _resolved_types(cls)
    for name, value in data.items():
        if name not in kinds:
            continue
        expected = _expected(kinds[name])
        if expected is not None and not expected[1](value):
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise ConfigError(f"{cls.__name__}.{name} must be {expected[0]}, got {shown}")


class JsonConfig:
    """Mixin for frozen dataclasses whose fields are JSON values.

    Subclasses validate their values in ``__post_init__`` (raising :class:`ConfigError`); this
    class adds the conversions. ``from_dict`` refuses unknown keys: a config written by a newer
    version with a field this version does not know must not be half-applied. It also checks
    each value against its field's annotation first (:func:`check_field_types`), so a value of
    the wrong type is reported with the field's name, not as whatever a comparison raises.
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
        check_field_types(cls, data)
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
