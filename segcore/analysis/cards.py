"""A model card as the Models page shows it: readable tables instead of raw JSON.

:func:`card_facts` gives one ``(what, value)`` line per thing a newcomer asks about a model
(name, threshold, pixel size, training data, licence...), :func:`figure_rows` one row per set
the model was scored on, :func:`comparison_table` the card's before/after ``comparison`` of a
fine-tuned model (any dict of dicts) as rows. Values come out as text with fixed decimals, so
the page only lays them out.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segcore.bundles.card import ModelCard
from segcore.metrics.counts import METRIC_NAMES

__all__ = ["card_facts", "comparison_table", "figure_rows", "format_value"]

_MODEL_PIXEL_SIZE = 0.25
"""What an unknown pixel size is taken as (:attr:`ModelCard.pixel_size`)."""

_LABELS = {
    "dice": "Dice (pooled)",
    "pq": "PQ",
    "aji": "AJI",
    "f1": "Detection F1",
    "threshold": "Threshold",
    "best_threshold": "Best threshold on these images",
    "model": "Model",
    "ref": "Bundle",
    "images": "Images",
    "split": "Split",
    "data": "Data",
}
"""Readable names of the keys a card's ``comparison`` holds (others: ``snake_case`` →
"Snake case")."""


def format_value(value: Any, *, signed: bool = False, decimals: int = 3) -> str:
    """A card value as text: floats with ``decimals`` decimals (``signed``: with ``+``), whole
    numbers as they are, ``None`` as "–", booleans as yes/no, lists joined, dicts as ``k v``
    pairs."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:+d}" if signed else f"{value:d}"
    if isinstance(value, float):
        return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {format_value(item)}" for key, item in value.items())
    return str(value)


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " ").capitalize())


def _settings(values: Mapping[str, Any]) -> str:
    """``{"equalize": "clahe", "min_area_um2": 8.0}`` → ``equalize clahe · min area 8 µm²``."""
    parts = []
    for key, value in values.items():
        unit = ""
        for suffix, shown in (("_um2", " µm²"), ("_um", " µm"), ("_px", " px")):
            if key.endswith(suffix):
                key, unit = key[: -len(suffix)], shown
                break
        text = f"{value:g}" if isinstance(value, float) else format_value(value)
        parts.append(f"{key.replace('_', ' ')} {text}{unit}")
    return " · ".join(parts) or "defaults"


def _training_data(card: ModelCard) -> str:
    dataset = card.dataset
    where = dataset.get("name") or dataset.get("data") or dataset.get("root") or "not recorded"
    sizes = dataset.get("sizes")
    if isinstance(sizes, Mapping) and sizes:
        counts = ", ".join(f"{name} {count}" for name, count in sizes.items())
        return f"{where} ({counts} images)"
    return str(where)


def _training_run(training: Mapping[str, Any]) -> str | None:
    """Length, best point, time and device of the training, from what the card records."""
    parts = []
    for key, word in (("epochs_completed", "epochs"), ("epochs", "epochs"), ("steps", "steps")):
        if isinstance(training.get(key), int):
            parts.append(f"{training[key]:,d} {word}")
            break
    for key, word in (("best_epoch", "best epoch"), ("best_step", "best step")):
        if isinstance(training.get(key), int):
            parts.append(f"{word} {training[key]:,d}")
            break
    if training.get("final_weights") == "last" and isinstance(training.get("kept_epoch"), int):
        parts.append(f"kept the last epoch ({training['kept_epoch']:,d})")
    seconds = training.get("time_s")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        parts.append(f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s")
    if training.get("device"):
        parts.append(f"on {training['device']}")
    return " · ".join(parts) or None


def _threshold(card: ModelCard) -> str:
    """The threshold and what it was chosen on (a shared choice over sources when recorded)."""
    choice = card.training.get("threshold_choice")
    sources = choice.get("sources") if isinstance(choice, Mapping) else None
    if isinstance(sources, Mapping) and len(sources) > 1:
        rule = choice.get("rule")
        how = f", {rule} rule" if rule else ""
        return f"{card.threshold:.2f} (one for the validation parts of {len(sources)} sources{how})"
    return f"{card.threshold:.2f} (best pooled Dice on the validation images)"


def card_facts(card: ModelCard) -> list[tuple[str, str]]:
    """What the model is, one ``(what, value)`` line each: name, threshold, pixel size, input
    tiles, preprocessing, nucleus splitting, training data, training run, starting point,
    licence, creation, software and the weights' SHA-256 (lines the card has nothing for are
    left out)."""
    pixel_size = (
        f"{card.pixel_size:g} µm/px"
        if card.pixel_size is not None
        else f"not recorded (taken as {_MODEL_PIXEL_SIZE:g} µm/px)"
    )
    facts = [
        ("Name", card.name),
        ("Threshold", _threshold(card)),
        ("Pixel size", pixel_size),
        ("Input tiles", f"{card.input_size} × {card.input_size} px"),
        ("Preprocessing", _settings(card.preprocess)),
        ("Nucleus splitting", _settings(card.instances)),
        ("Training data", _training_data(card)),
    ]
    run = _training_run(card.training)
    if run:
        facts.append(("Training", run))
    start = card.training.get("init_from_card")
    if isinstance(start, Mapping) and start.get("name"):
        facts.append(("Fine-tuned from", str(start["name"])))
    elif card.training.get("init_from"):
        facts.append(("Fine-tuned from", str(card.training["init_from"])))
    facts.append(("Backbone initialisation", card.backbone_weights or "random"))
    runtime = card.prepared.get("runtime")
    if runtime:
        versions = " · ".join(f"{k} {v}" for k, v in card.prepared.get("versions", {}).items())
        made = f" ({versions})" if versions else ""
        facts.append(
            ("Shipped runtime", f"{runtime} in prepared/{made}: gated on first use, no TensorFlow")
        )
    facts.append(("Licence", card.licence))
    facts.append(("Created", card.created.replace("T", " ").replace("+00:00", " UTC")))
    if card.versions:
        facts.append(("Software", " · ".join(f"{k} {v}" for k, v in card.versions.items())))
    if card.model_sha256:
        facts.append(("model.keras SHA-256", f"{card.model_sha256[:16]}…"))
    return facts


def figure_rows(card: ModelCard) -> list[dict[str, str]]:
    """One row per set the card records figures for (validation, test, ... at each pixel
    size): the set, images, threshold, pooled Dice, Jaccard, precision and recall, the mean
    Dice per image, the set's own best threshold and the data; fixed decimals."""
    rows = []
    for key, figures in card.metrics.items():
        row = {
            "Set": key,
            "Images": f"{figures.images:d}",
            "Threshold": f"{figures.threshold:.2f}",
        }
        for name in METRIC_NAMES:
            row[name.capitalize()] = f"{figures.pooled[name]:.3f}"
        row["Mean Dice per image"] = f"{figures.mean['dice']:.3f}"
        best = figures.best_threshold
        row["Best threshold"] = "–" if best is None else f"{best:.2f}"
        row["Data"] = figures.data or "–"
        rows.append(row)
    return rows


def comparison_table(comparison: Any) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """A card's ``comparison`` as a table: one column per entry that is a dict (``before``,
    ``after``, ``gain``...), one row per key they hold, in order; the other entries
    (``split``, ``images``, ``data``...) as ``(what, value)`` lines.

    Returns:
        ``(rows, notes)``: each row is ``{"": label, "Before": value, ...}`` (columns named
        after the entries, capitalised; one named ``gain``, ``change`` or ``delta`` shows signed
        numbers); both empty when ``comparison`` is not a non-empty dict.
    """
    if not isinstance(comparison, Mapping):
        return [], []
    columns = {name: value for name, value in comparison.items() if isinstance(value, Mapping)}
    notes = [
        (_label(str(name)), format_value(value))
        for name, value in comparison.items()
        if not isinstance(value, Mapping)
    ]
    keys: list[str] = []
    for values in columns.values():
        keys += [key for key in values if key not in keys]
    rows = []
    for key in keys:
        row = {"": _label(str(key))}
        for name, values in columns.items():
            signed = str(name).lower() in ("gain", "change", "delta")
            decimals = 2 if "threshold" in str(key) else 3
            row[_label(str(name))] = (
                format_value(values[key], signed=signed, decimals=decimals) if key in values else ""
            )
        rows.append(row)
    return rows, notes
