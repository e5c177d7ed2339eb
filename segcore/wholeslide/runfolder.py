"""What a run folder holds and whether a run may continue in it: ``run.json``.

``run.json`` records what decides a run's results: the slide's identity (name, size,
modification time and the SHA-256 of its first and last MiB — hashing a 5 GB slide whole
would take a minute), the model (name, SHA-256 of its weights, the runtime that runs it), the
settings that shape the results (:data:`~segcore.wholeslide.config.RESULT_FIELDS` and the
model's resolved threshold, instance settings, pixel size, input size and preprocessing)
and the grid. A run started on a folder whose ``run.json`` differs in any of these is refused,
naming what differs; one that matches resumes from the finished chunks, or returns the
summary when ``summary.json`` is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import SlideError
from segcore.slides.grid import SlideGrid
from segcore.timestamps import utc_now
from segcore.wholeslide import outputs
from segcore.wholeslide.config import SlideRunConfig

log = logging.getLogger(__name__)

__all__ = [
    "RUN_FORMAT",
    "finished_chunks",
    "open_run_folder",
    "run_record",
    "slide_identity",
    "visible_cells",
]

RUN_FORMAT = 1
"""Layout version of ``run.json`` and the part files."""

IDENTITY_KEYS = ("format", "slide", "model", "config", "settings", "grid")
"""The keys of ``run.json`` a resumed run must match."""

_MIB = 1 << 20


def slide_identity(path: Path) -> dict[str, Any]:
    """``{"name", "size", "mtime", "sha256_ends"}`` of a slide file (see the module doc)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_MIB))
        if stat.st_size > _MIB:
            handle.seek(max(_MIB, stat.st_size - _MIB))
            digest.update(handle.read(_MIB))
    return {
        "name": path.name,
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "sha256_ends": digest.hexdigest(),
    }


def run_record(
    slide_path: Path,
    bundle: Any,
    config: SlideRunConfig,
    settings: dict[str, Any],
    runtime: str,
    grid: SlideGrid,
) -> dict[str, Any]:
    """The contents of ``run.json`` for this run (JSON values only)."""
    card = bundle.card
    record = {
        "format": RUN_FORMAT,
        "slide": {**slide_identity(slide_path), "path": str(slide_path.resolve())},
        "model": {"name": card.name, "sha256": card.model_sha256 or None, "runtime": runtime},
        "config": config.result_dict(),
        "settings": settings,
        "grid": grid.to_dict(),
        "created": utc_now(),
    }
    return json.loads(json.dumps(record))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix[:-1]} {_short(old)} → {_short(new)}"]


def _compare(out_dir: Path, existing: dict[str, Any], record: dict[str, Any]) -> None:
    old = {key: existing.get(key) for key in IDENTITY_KEYS}
    new = {key: record[key] for key in IDENTITY_KEYS}
    # The path may change (a moved folder); the file's identity is what counts.
    for side in (old, new):
        if isinstance(side.get("slide"), dict):
            side["slide"] = {k: v for k, v in side["slide"].items() if k != "path"}
    differences = _differences(old, new)
    if differences:
        shown = "; ".join(differences[:3]) + (" ..." if len(differences) > 3 else "")
        raise SlideError(
            f"{out_dir} holds another run (of {existing.get('slide', {}).get('name', '?')} with "
            f"model {existing.get('model', {}).get('name', '?')}); this one differs: {shown}. "
            "Choose another output folder, or delete this one to start over"
        )


def open_run_folder(
    out_dir: Path, record: dict[str, Any], *, clean: bool = True
) -> dict[str, Any] | None:
    """Prepares ``out_dir`` for the run ``record``.

    ``clean`` removes the temporary files a killed run left; a call that shares the folder
    with other workers writing their chunks at the same time passes False.

    Returns:
        The finished run's summary when ``out_dir`` holds this run complete, else None (a new
        folder gets ``run.json``; a matching one keeps its finished chunks).

    Raises:
        SlideError: ``out_dir`` holds another run (naming it and what differs), its
            ``run.json`` is unreadable, or the disk is full.
    """
    run_file = out_dir / outputs.RUN_FILE
    if not run_file.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs.write_json(run_file, record)
        return None
    try:
        existing = json.loads(run_file.read_text(encoding="utf-8"))
        if not isinstance(existing, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise SlideError(
            f"{run_file}: unreadable ({exc}); choose another output folder, or delete this one "
            "to start over"
        ) from exc
    _compare(out_dir, existing, record)
    if clean:
        outputs.remove_stale_temporaries(out_dir)
    summary_file = out_dir / outputs.SUMMARY_FILE
    if summary_file.exists():
        missing = [name for name in outputs.OUTPUT_FILES if not (out_dir / name).exists()]
        if not missing:
            shutil.rmtree(out_dir / outputs.PARTS_DIR, ignore_errors=True)  # if left by a kill
            return json.loads(summary_file.read_text(encoding="utf-8"))
        log.warning("%s: %s missing; computing the run again", out_dir, ", ".join(missing))
        summary_file.unlink()
    return None


def finished_chunks(out_dir: Path, count: int) -> dict[int, int]:
    """The chunks whose part file is there: chunk → its number of nuclei.

    An unreadable part file (a damaged disk) is deleted, with a warning, and computed again.
    """
    done = {}
    for chunk in range(count):
        path = outputs.part_path(out_dir, chunk)
        if not path.exists():
            continue
        try:
            done[chunk] = int(outputs.read_part_header(path)["nuclei"])
        except (SlideError, ValueError, TypeError) as exc:
            log.warning("%s; computing it again", exc)
            path.unlink(missing_ok=True)
    return done


def visible_cells(
    tissue: Any, region: tuple[int, int, int, int], slide_size: tuple[int, int]
) -> np.ndarray:
    """The tissue-mask cells counted as the run's tissue: the tissue cells whose centre lies
    in the region, the region taken as unbounded on the sides where it reaches the slide's
    edge (so the whole slide counts every tissue cell, also the last, partial ones).

    Args:
        tissue: the :class:`~segcore.slides.tissue.TissueMask`.
        region: level-0 ``(x, y, w, h)``.
        slide_size: level-0 ``(width, height)``.

    Returns:
        bool, the mask's shape.
    """
    mask = np.asarray(tissue.mask, bool)
    ds = float(tissue.downsample)
    x, y, w, h = region
    inside = []
    for start, size, limit, count in (
        (y, h, slide_size[1], mask.shape[0]),
        (x, w, slide_size[0], mask.shape[1]),
    ):
        centres = (np.arange(count) + 0.5) * ds
        low = -np.inf if start <= 0 else start
        high = np.inf if start + size >= limit else start + size
        inside.append((centres >= low) & (centres < high))
    return mask & inside[0][:, None] & inside[1][None, :]
