"""The files of a whole-slide run folder, each written atomically (temp file + rename).

``run.json`` (what the run is: slide, model, settings, grid) is written first;
``parts/chunk-00012.jsonl.gz`` holds the nuclei of one chunk of tiles (a header line, then
one line per nucleus); once every chunk is done the parts are merged, in chunk order, into

* ``nuclei.geojson.gz`` — a GeoJSON ``FeatureCollection`` of QuPath detections, the feature
  form of :func:`segcore.analysis.exports.instances_geojson` (``objectType: "detection"``,
  classification ``Nucleus``, ``measurements``) in level-0 pixel coordinates, one feature per
  line, gzip-compressed (QuPath ≥ 0.4 reads ``.geojson.gz``);
* ``nuclei.csv`` — one row per nucleus, the same values as each feature's measurements:
  ``id`` (1..N in tile order), ``centroid_x``, ``centroid_y`` (level-0 px), the
  :func:`~segcore.analysis.nuclei.nuclei_table` measurements in µm, ``tile`` (grid index);
* ``density.npy``, ``density.png`` — the nuclei-density heat map
  (:mod:`segcore.wholeslide.density`);
* ``summary.json`` — written last: its presence means the run is complete. ``state``
  (``"completed"``), ``nuclei``, ``tissue_mm2`` (tissue-mask cells in the region),
  ``density_per_mm2`` (nuclei / tissue area; None without tissue), ``seconds`` (wall time of
  the call that completed the run), ``tiles``, ``tiles_computed`` (by that call; fewer when
  it resumed), ``resumed``, ``megapixels`` (level-0 megapixels of the tiles' cores: the
  tissue area processed), ``tissue_megapixels``, ``edge_nuclei`` (nuclei cut by their box's
  edge: a halo too small for them), ``runtime`` (the model's ``name``), ``model``,
  ``model_sha256``, ``slide`` (name, size, mtime, ``sha256_ends``, path and the
  :class:`~segcore.slides.reader.SlideInfo`), ``grid``, ``config``, ``settings`` (the
  threshold, instance settings, pixel size, input size and preprocessing used),
  ``density`` (cell size, shape, the PNG's colour scale and smoothing), ``outputs``,
  ``timings`` (seconds per stage of that call — ``read_s``, ``wait_read_s``, ``model_s``,
  ``nuclei_s``, ``wait_nuclei_s``, ``write_s``, ``merge_s`` — per tile, and megapixels of
  core per second end to end and for the model alone), ``finished``, ``versions``.

The merge streams: a chunk's nuclei at a time go from its part to the GeoJSON and the CSV,
and their centroids to the density counts (one integer per mask cell). Gzip headers carry no time or
file name, so the same parts give the same bytes. A full disk while writing any of these is
a :class:`~segcore.errors.SlideError` naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from segcore.analysis.exports import NUCLEUS_CLASS
from segcore.analysis.overlays import PALETTE
from segcore.atomic import is_disk_full, open_atomic
from segcore.errors import SlideError
from segcore.wholeslide.tiles import MEASUREMENT_COLUMNS, TileNuclei

__all__ = [
    "CSV_COLUMNS",
    "OUTPUT_FILES",
    "EncodedTile",
    "atomic_output",
    "encode_tile",
    "merge_parts",
    "part_path",
    "read_part_header",
    "write_json",
    "write_part",
]

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
PARTS_DIR = "parts"
GEOJSON_FILE = "nuclei.geojson.gz"
CSV_FILE = "nuclei.csv"
DENSITY_NPY = "density.npy"
DENSITY_PNG = "density.png"
OUTPUT_FILES = (GEOJSON_FILE, CSV_FILE, DENSITY_NPY, DENSITY_PNG)
"""The merged outputs (besides ``summary.json``)."""

CSV_COLUMNS = ("id", "centroid_x", "centroid_y", *MEASUREMENT_COLUMNS, "tile")
"""Columns of ``nuclei.csv``, also each GeoJSON feature's measurement names."""

PART_LEVEL = 1
"""gzip level of part files (temporary: fast)."""

OUTPUT_LEVEL = 6
"""gzip level of ``nuclei.geojson.gz``."""


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: Path, *, gzip_level: int | None = None) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once completely written and synced
    (:func:`segcore.atomic.open_atomic`), optionally gzip-compressed.

    Args:
        path: the final path; its folder must exist.
        gzip_level: compress with gzip at this level (no time or name in the header).

    Yields:
        The file to write to.

    Raises:
        SlideError: the disk is full (``disk full while writing <path>``) or another
            :class:`OSError` (``cannot write <path>: <why>``); the temporary file is removed,
            as on any other error.
    """
    try:
        with open_atomic(path) as raw:
            if gzip_level is None:
                yield raw
            else:
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=gzip_level, mtime=0
                ) as packed:
                    yield packed  # type: ignore[misc]
    except OSError as exc:  # open_atomic removed the temporary file
        if is_disk_full(exc):
            raise SlideError(f"disk full while writing {path}") from exc
        raise SlideError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_json(path: Path, data: Any) -> None:
    """Writes indented JSON atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as handle:
        handle.write((json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def remove_stale_temporaries(out_dir: Path) -> None:
    """Removes the temporary files a killed run of this module left (never other files)."""
    names = (RUN_FILE, SUMMARY_FILE, *OUTPUT_FILES)
    for name in names:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    for stale in (out_dir / PARTS_DIR).glob(".chunk-*.tmp"):
        stale.unlink(missing_ok=True)


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------------------------
# Part files
# --------------------------------------------------------------------------------------------


def part_path(out_dir: Path, chunk: int) -> Path:
    """``out_dir/parts/chunk-00012.jsonl.gz``."""
    return out_dir / PARTS_DIR / f"chunk-{chunk:05d}.jsonl.gz"


@dataclass(frozen=True)
class EncodedTile:
    """One tile's nuclei as the lines of a part file (compact: a chunk's tiles wait in memory
    in this form, about 300 bytes per nucleus instead of several kB of Python objects).

    Args:
        index: the tile's grid index.
        nuclei: number of nuclei.
        edge_nuclei: how many of them the box's edge cut.
        lines: one JSON line per nucleus, UTF-8, each ending with a newline.
    """

    index: int
    nuclei: int
    edge_nuclei: int
    lines: bytes


def encode_tile(tile: TileNuclei) -> EncodedTile:
    """A tile's nuclei as part-file lines: each record with the tile's index as ``"tile"``."""
    text = "".join(_compact({"tile": tile.index, **record}) + "\n" for record in tile.records)
    return EncodedTile(tile.index, len(tile.records), tile.edge_nuclei, text.encode("utf-8"))


def write_part(path: Path, chunk: int, tiles: list[EncodedTile], seconds: float) -> None:
    """Writes one chunk's nuclei: a header line, then one line per nucleus in tile order.

    The header is ``{"chunk", "nuclei", "edge_nuclei", "seconds", "tiles": [{"index",
    "nuclei", "edge_nuclei"}, ...]}``; each nucleus line is its record
    (:class:`~segcore.wholeslide.tiles.TileNuclei`) with its tile's index as ``"tile"``.
    """
    header = {
        "chunk": chunk,
        "nuclei": sum(tile.nuclei for tile in tiles),
        "edge_nuclei": sum(tile.edge_nuclei for tile in tiles),
        "seconds": round(seconds, 3),
        "tiles": [
            {"index": t.index, "nuclei": t.nuclei, "edge_nuclei": t.edge_nuclei} for t in tiles
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, gzip_level=PART_LEVEL) as handle:
        handle.write((_compact(header) + "\n").encode("utf-8"))
        for tile in tiles:
            handle.write(tile.lines)


def _corrupt(path: Path, exc: BaseException) -> SlideError:
    return SlideError(
        f"{path}: unreadable part file ({exc.__class__.__name__}: {exc}); delete it and resume "
        "to compute its tiles again"
    )


def read_part_header(path: Path) -> dict[str, Any]:
    """The header line of a part file.

    Raises:
        SlideError: the file is not a readable part file (naming it).
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header = json.loads(handle.readline())
        if not isinstance(header, dict) or "nuclei" not in header:
            raise ValueError("no header line")
    except (OSError, EOFError, ValueError) as exc:
        raise _corrupt(path, exc) from exc
    return header


def iter_part_records(path: Path) -> Iterator[dict[str, Any]]:
    """The nucleus records of a part file, in order (the header skipped).

    Raises:
        SlideError: the file is not a readable part file, or holds fewer nuclei than its
            header says.
    """
    count = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            expected = json.loads(handle.readline())["nuclei"]
            for line in handle:
                count += 1
                yield json.loads(line)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(path, exc) from exc
    if count != expected:
        raise _corrupt(path, ValueError(f"{count} nuclei where the header says {expected}"))


# --------------------------------------------------------------------------------------------
# The merge
# --------------------------------------------------------------------------------------------


def _geometry(rings: list) -> dict[str, Any]:
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": [rings[0]]}
    return {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]}


def _csv_lines(rows: list) -> bytes:
    """CSV lines (CRLF endings, as :meth:`~segcore.analysis.nuclei.NucleusTable.to_csv`)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _row(nucleus: int, record: dict[str, Any]) -> dict[str, Any]:
    """The nucleus's measurements as written to the CSV and the GeoJSON."""
    return {
        "id": nucleus,
        "centroid_x": record["x"],
        "centroid_y": record["y"],
        **record["m"],
        "tile": record["tile"],
    }


def merge_parts(
    out_dir: Path, parts: list[Path], centroids: Callable[[list, list], None] | None = None
) -> int:
    """Streams the parts, in the given order, into ``nuclei.geojson.gz`` and ``nuclei.csv``.

    Ids are 1..N in part order, so they are the same however the run was interrupted.

    Args:
        out_dir: the run folder.
        parts: the part files, in chunk order.
        centroids: called with each part's centroids, ``(xs, ys)`` in level-0 pixels (e.g.
            :meth:`~segcore.wholeslide.density.DensityCounter.add`).

    Returns:
        The number of nuclei.

    Raises:
        SlideError: a part is unreadable, or the disk is full (naming the file).
    """
    classification = {"name": NUCLEUS_CLASS, "color": list(PALETTE["prediction"].rgb)}
    nucleus = 0
    with (
        atomic_output(out_dir / GEOJSON_FILE, gzip_level=OUTPUT_LEVEL) as geojson,
        atomic_output(out_dir / CSV_FILE) as table,
    ):
        table.write(_csv_lines([CSV_COLUMNS]))
        geojson.write(b'{"type":"FeatureCollection","features":[')
        separator = "\n"
        for path in parts:
            features, rows, xs, ys = [], [], [], []
            for record in iter_part_records(path):
                nucleus += 1
                row = _row(nucleus, record)
                rows.append([row.get(name, "") for name in CSV_COLUMNS])
                feature = {
                    "type": "Feature",
                    "id": str(nucleus),
                    "geometry": _geometry(record["rings"]),
                    "properties": {
                        "objectType": "detection",
                        "classification": classification,
                        "measurements": row,
                    },
                }
                features.append(separator + _compact(feature))
                separator = ",\n"
                xs.append(record["x"])
                ys.append(record["y"])
            geojson.write("".join(features).encode("utf-8"))
            table.write(_csv_lines(rows))
            if centroids is not None:
                centroids(xs, ys)
        geojson.write(b"\n]}\n")
    return nucleus
