"""The inputs of a batch: slides, image files and folders of either.

* A folder contributes its files (not its sub-folders) whose suffix is a slide's or an
  image's, in name order; a file given by name is taken whatever its suffix.
* **Kind**: a slide-only suffix (``.svs``, ``.ndpi``, ``.mrxs``, ...) is a slide; ``.png``,
  ``.jpg``, ``.bmp`` an image; a ``.tif``/``.tiff`` is a slide when it opens as one with a
  pyramid (several levels) or is too large to decode whole, else an image.
* **Output folder**: ``OUT/<stem>/`` (``<stem>-2``, ``-3``, ... for a later input of the same
  name, in input order).
* **Finished**: the folder's ``summary.json`` says ``completed`` for this very input (its
  name, size, modification time and the SHA-256 of its first and last MiB,
  :func:`~segcore.wholeslide.runfolder.slide_identity`, under ``slide`` or ``input``) and
  this model (``model_sha256``, and the runtime when one is asked for by name), made with the
  threshold, pixel size and test-time flips this batch is given (``config``). Anything else
  is computed (a slide's run folder resumes from its finished chunks).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from segcore.errors import SegcoreError
from segcore.inference.runtimes.base import AUTO
from segcore.slides.reader import SLIDE_SUFFIXES
from segcore.wholeslide.config import SlideRunConfig
from segcore.wholeslide.outputs import SUMMARY_FILE
from segcore.wholeslide.runfolder import slide_identity

__all__ = ["IMAGE", "SLIDE", "BatchInput", "collect_inputs", "finished_summary", "input_kind"]

SLIDE = "slide"
IMAGE = "image"
MISSING = "missing"
"""The kinds of input (``missing``: neither a file nor a folder; reported as failed)."""

_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch.

    Args:
        path: the file (absolute: workers on other machines read it through a shared file
            system at the same path).
        given: the input as given (what the summary CSV names).
        kind: ``slide``, ``image`` or ``missing``.
        out_dir: its output folder.
    """

    path: Path
    given: str
    kind: str
    out_dir: Path


def input_kind(path: Path) -> str:
    """``slide`` or ``image`` for a file (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES and suffix not in _TIFF:
        return SLIDE
    if suffix not in _TIFF:
        return IMAGE
    from segcore.slides.reader import open_slide

    try:
        with open_slide(path) as slide:
            levels, info = len(slide.info.levels), slide.info
    except (SegcoreError, OSError):
        return IMAGE  # read_image says what is wrong with it
    return SLIDE if levels > 1 or info.width * info.height > DEFAULT_MAX_PIXELS else IMAGE


def _files(folder: Path) -> list[Path]:
    wanted = set(SLIDE_SUFFIXES) | set(IMAGE_SUFFIXES)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in wanted
    )


def collect_inputs(given: list[str | os.PathLike], out: Path) -> list[BatchInput]:
    """The batch's inputs, in order, each with its kind and output folder.

    Args:
        given: files and folders, as the user gave them.
        out: the batch's output folder.
    """
    found: list[tuple[Path, str]] = []
    for item in given:
        path = Path(item).expanduser()
        if path.is_dir():
            found += [(p.resolve(), str(p)) for p in _files(path)]
        else:
            found.append((path.resolve() if path.exists() else path, str(item)))
    taken: dict[str, int] = {}
    inputs = []
    for path, name in found:
        stem = path.name.split(".")[0] if path.name.lower().endswith(".ome.tiff") else path.stem
        key = stem.casefold()
        taken[key] = taken.get(key, 0) + 1
        folder = stem if taken[key] == 1 else f"{stem}-{taken[key]}"
        kind = input_kind(path) if path.is_file() else MISSING
        inputs.append(BatchInput(path=path, given=name, kind=kind, out_dir=out / folder))
    return inputs


GIVEN_SETTINGS = ("threshold", "pixel_size", "flips")
"""The batch's settings that shape an input's results, as given (None: the model's threshold;
the file's pixel size), recorded under ``config`` in every summary."""


def given_settings(config: SlideRunConfig) -> dict[str, Any]:
    """:data:`GIVEN_SETTINGS` of ``config`` (what an image's ``summary.json`` records under
    ``config``; a slide's records the whole config)."""
    return {name: getattr(config, name) for name in GIVEN_SETTINGS}


def finished_summary(
    item: BatchInput, model_sha256: str, runtime: str, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The summary of ``item``'s finished output for this model, made with these ``settings``
    (:func:`given_settings`), or None (see the module docstring; an image's summary from before
    the settings were recorded does not count)."""
    try:
        summary = json.loads((item.out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        identity = slide_identity(item.path)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("state") != "completed":
        return None
    source = summary.get("slide") or summary.get("input") or {}
    recorded = {k: v for k, v in source.items() if k in identity}
    same_runtime = runtime == AUTO or summary.get("runtime") == runtime
    if recorded != identity or (summary.get("model_sha256") or "") != model_sha256:
        return None
    given = summary.get("config")
    if not isinstance(given, dict):
        return None
    defaults = given_settings(SlideRunConfig())  # what an older summary left out
    if {k: given.get(k, defaults[k]) for k in GIVEN_SETTINGS} != settings:
        return None
    return summary if same_runtime else None
