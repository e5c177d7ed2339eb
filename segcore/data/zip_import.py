"""A dataset folder made from a zip: checked, unpacked into a hidden staging folder, opened, and
only then renamed into place.

:func:`import_dataset_zip` is how a browser user without shell access adds a dataset (the Train
page's "Add a dataset folder from a zip", :mod:`appkit.dataset_upload`). What it guarantees:

* **Limits before anything is written** (:class:`ZipLimits`): the zip's own size
  (:data:`MAX_ZIP_BYTES`), its number of entries (:data:`MAX_ENTRIES`; read from the end of the
  archive before Python builds its list of entries), the uncompressed total its headers declare
  (:data:`MAX_TOTAL_BYTES`), and the compression ratio, of each member and of the whole
  (:data:`MAX_RATIO`, for anything above :data:`RATIO_FLOOR`): a zip bomb is refused from its
  headers. Headers can lie, so extraction is a capped stream as well: a member that unpacks to
  more than it declared, or a total above the limit, stops the import.
* **Names.** The folder name is a plain name (:func:`check_folder_name`). Member names are
  relative: an absolute name, a drive letter (``C:``), ``..``, a control character, a symbolic
  link or any other special file refuses the whole zip; backslashes count as folder separators.
  ``__MACOSX/`` and dot files (any part starting with ``.``) are skipped, ``./`` parts dropped.
  When every member lies in one top-level folder that is not itself part of a layout
  (``images``, ``masks``, ``train``, ``val``, ``test``), that folder is stripped: ``my-set.zip``
  holding ``my-set/images/…`` and ``my-set/masks/…`` makes the same dataset as one holding
  ``images/…`` and ``masks/…``.
* **Nothing outside the new folder; never half a dataset.** The members are written, with
  exclusive creation and no symlink followed, into ``.zip-import-<name>-<random>`` beside the
  target, which :func:`segcore.data.datasets.open_dataset` must open as a ``pairs`` or
  ``presplit`` dataset (every image with its mask, headers readable; a ``dataset.json`` valid);
  only then is it renamed to ``<root>/<name>`` in one step. Any failure removes the staging
  folder. An existing target is refused, never overwritten.

Every refusal is a :class:`~segcore.errors.DatasetError` whose message starts with the zip's name
and says what is wrong; member names in messages are the zip's own, never the staging path.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from segcore.data.datasets import dataset_pixel_size, open_dataset
from segcore.data.images import IMAGE_SUFFIXES
from segcore.data.layouts import detect_layout
from segcore.errors import DatasetError

log = logging.getLogger(__name__)

MiB = 2**20

MAX_ZIP_BYTES = 200 * MiB
"""Largest zip accepted: the app's upload limit (``server.maxUploadSize = 200``)."""

MAX_TOTAL_BYTES = 1024 * MiB
"""Largest uncompressed total: what the headers declare and what extraction may write."""

MAX_ENTRIES = 20_000
"""Most entries (files and folders, skipped ones included) a zip may hold: 10,000 image/mask
pairs and their folders."""

MAX_RATIO = 100
"""Highest compression ratio (uncompressed ÷ compressed) of a member, or of the whole zip, above
:data:`RATIO_FLOOR`. PNG and JPEG hardly compress further; a zip bomb compresses 1000:1."""

RATIO_FLOOR = 16 * MiB
"""A member (or a zip) that unpacks to at most this much is never refused for its ratio: an
all-background uncompressed TIFF mask compresses extremely well and is harmless."""

STAGING_PREFIX = ".zip-import-"
"""The hidden staging folders' names start with this (beside the target)."""

STALE_SECONDS = 3600
"""Staging folders older than this (a server killed mid-import) are removed by the next import
into the same folder."""

LAYOUT_FOLDERS = ("images", "masks", "train", "val", "test")
"""Folder names that belong to a layout: a single top-level folder called so is kept."""

ACCEPTED_LAYOUTS = ("pairs", "presplit")
"""The layouts a zip may hold (:mod:`segcore.data.layouts`)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = MiB
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


@dataclass(frozen=True)
class ZipLimits:
    """What a zip may hold; see the module's docstring.

    Attributes:
        max_zip_bytes: largest zip, defaults to :data:`MAX_ZIP_BYTES`.
        max_total_bytes: largest uncompressed total, defaults to :data:`MAX_TOTAL_BYTES`.
        max_entries: most entries, defaults to :data:`MAX_ENTRIES`.
        max_ratio: highest compression ratio above ``ratio_floor``, defaults to
            :data:`MAX_RATIO`.
        ratio_floor: sizes up to this are never refused for their ratio, defaults to
            :data:`RATIO_FLOOR`.
    """

    max_zip_bytes: int = MAX_ZIP_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_entries: int = MAX_ENTRIES
    max_ratio: float = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR


@dataclass(frozen=True)
class ImportedDataset:
    """A dataset folder made by :func:`import_dataset_zip`.

    Attributes:
        folder: the new folder (``root/name``).
        layout: ``"pairs"`` or ``"presplit"``.
        images: image files in its ``images/`` folders.
        masks: mask files in its ``masks/`` folders.
        sizes: samples per split as :func:`~segcore.data.datasets.open_dataset` makes them.
        stripped: the zip's single top-level folder that was stripped, or None.
        skipped: entries not extracted (``__MACOSX/``, dot files).
        warnings: what opening the dataset logged as warnings, per file, named relative to the
            folder.
    """

    folder: Path
    layout: str
    images: int
    masks: int
    sizes: dict[str, int] = field(default_factory=dict)
    stripped: str | None = None
    skipped: int = 0
    warnings: tuple[str, ...] = ()


def check_folder_name(name: str) -> str:
    """``name`` stripped of surrounding spaces, if it is a plain folder name: 1–64 ASCII letters,
    digits, ``.``, ``_`` and ``-``, starting with a letter or digit.

    Raises:
        DatasetError: anything else (a path, ``..``, spaces, a hidden name).
    """
    text = str(name).strip()
    if not _NAME.fullmatch(text):
        raise DatasetError(
            f"{text!r} is not a plain folder name: use 1 to 64 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (no '/', no spaces), e.g. my-dataset"
        )
    return text


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # the path inside the dataset, top-level folder stripped


def import_dataset_zip(
    data: bytes | str | os.PathLike | BinaryIO,
    name: str,
    root: str | os.PathLike,
    *,
    zip_name: str | None = None,
    limits: ZipLimits | None = None,
) -> ImportedDataset:
    """Makes the dataset folder ``root/name`` from a zip of images and masks.

    Args:
        data: the zip: its bytes, its path, or a binary file open for reading (e.g. an upload).
        name: the new folder's name, a plain name (:func:`check_folder_name`).
        root: the folder to create it in (created if missing). The app passes the ``uploads/``
            folder of its ``data`` root (:mod:`appkit.dataset_upload`).
        zip_name: how messages name the zip, defaults to the file's name (or ``"the zip"``).
        limits: the limits, defaults to :class:`ZipLimits`'s.

    Returns:
        The new folder and what it holds.

    Raises:
        DatasetError: the name is not plain or taken; the zip is too large, not a zip, a likely
            zip bomb, holds unsafe names, links, encrypted or corrupt members, no images, or no
            dataset that opens (images without masks, …). Nothing is left behind then.
    """
    limits = limits or ZipLimits()
    label = zip_name or _default_label(data)
    name = _checked_name(name, label)
    root = Path(root)
    with contextlib.ExitStack() as stack:
        handle, size = _open_input(data, label, stack)
        if size > limits.max_zip_bytes:
            raise DatasetError(
                f"{label}: the zip is {_mb(size)}, above the {_mb(limits.max_zip_bytes)} limit"
            )
        _check_entry_count(handle, size, label, limits)
        try:
            archive = stack.enter_context(zipfile.ZipFile(handle))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{label}: not a zip file ({exc})") from exc
        members, skipped, stripped = _plan(archive, size, label, limits)
        target = root / name
        _refuse_existing(target, name, root, label)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"{label}: cannot create {root} ({exc.strerror or exc})") from exc
        _check_free_space(root, sum(m.info.file_size for m in members), label)
        _remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=root))
        try:
            os.chmod(staging, 0o755)  # mkdtemp makes 0700; a dataset reads like any folder
            _extract(archive, members, staging, label, limits)
            result = _validate(staging, label)
            _refuse_existing(target, name, root, label)
            try:
                os.rename(staging, target)
            except OSError as exc:  # taken meanwhile (a non-empty folder), or the disk said no
                if target.exists():
                    raise _exists_error(name, root, label) from exc
                raise DatasetError(f"{label}: cannot create {target} ({exc})") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    images, masks = _count_files(target)
    log.info("dataset %s made from %s (%s, %d images)", target, label, result[0], images)
    return ImportedDataset(
        folder=target,
        layout=result[0],
        images=images,
        masks=masks,
        sizes=result[1],
        stripped=stripped,
        skipped=skipped,
        warnings=result[2],
    )


# --- input ------------------------------------------------------------------------------------
def _default_label(data) -> str:
    if isinstance(data, str | os.PathLike):
        return Path(data).name
    named = getattr(data, "name", None)
    return Path(named).name if isinstance(named, str) and named else "the zip"


def _checked_name(name: str, label: str) -> str:
    try:
        return check_folder_name(name)
    except DatasetError as exc:
        raise DatasetError(f"{label}: {exc}") from None


def _open_input(data, label: str, stack: contextlib.ExitStack) -> tuple[BinaryIO, int]:
    """A seekable binary handle on the zip, and its size."""
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(data)), len(data)
    if isinstance(data, str | os.PathLike):
        try:
            handle = stack.enter_context(open(data, "rb"))  # noqa: SIM115 - closed by the stack
            return handle, os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise DatasetError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    if not (hasattr(data, "read") and hasattr(data, "seek")):
        raise DatasetError(f"{label}: not a zip file (expected bytes, a path or an open file)")
    size = data.seek(0, os.SEEK_END)
    data.seek(0)
    return data, size


def _check_entry_count(handle: BinaryIO, size: int, label: str, limits: ZipLimits) -> None:
    """Refuses a zip whose end record declares too many entries or too large a central
    directory, before :mod:`zipfile` builds one object per entry. A zip without an end record
    is left to :mod:`zipfile` to refuse."""
    tail_size = min(size, _EOCD.size + 65_535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    handle.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return
    _, _, _, _, entries, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= _ZIP64_LOCATOR.size:
        signature, _, offset, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
        if signature == b"PK\x06\x07" and 0 <= offset <= size - _ZIP64_EOCD.size:
            handle.seek(offset)
            record = handle.read(_ZIP64_EOCD.size)
            handle.seek(0)
            if record[:4] == b"PK\x06\x06":
                entries, cd_size = _ZIP64_EOCD.unpack(record)[7:9]
    if entries > limits.max_entries:
        raise DatasetError(
            f"{label}: {entries:,} entries, above the limit of {limits.max_entries:,}"
        )
    if cd_size > limits.max_entries * 1024:  # an end record that understates the entries
        raise DatasetError(
            f"{label}: its list of entries takes {_mb(cd_size)}, more than "
            f"{limits.max_entries:,} entries need"
        )


# --- checking every header before writing -----------------------------------------------------
def _member_parts(info: zipfile.ZipInfo, label: str) -> tuple[str, ...]:
    """The member's path as parts; refuses unsafe names and anything but files and folders."""
    raw = info.filename
    shown = raw.encode("unicode_escape").decode("ascii")
    problem = ""
    text = raw.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        problem = "a control character in the name"
    elif text.startswith("/"):
        problem = "an absolute name"
    elif _DRIVE.match(text):
        problem = "a drive letter"
    elif ".." in parts:
        problem = "'..' in the name"
    if problem:
        raise DatasetError(
            f"{label}: unsafe member name {shown!r} ({problem}); member names must be "
            "relative, without '..' or a drive letter. Nothing was written."
        )
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise DatasetError(
            f"{label}: {shown!r} is a symbolic link; links are not unpacked. Zip the files "
            "themselves. Nothing was written."
        )
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetError(
            f"{label}: {shown!r} is not a regular file or folder. Nothing was written."
        )
    return tuple(parts)


def _skipped(parts: tuple[str, ...]) -> bool:
    return not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _plan(
    archive: zipfile.ZipFile, size: int, label: str, limits: ZipLimits
) -> tuple[list[_Member], int, str | None]:
    """The members to write (files only, paths inside the dataset), how many entries are
    skipped, and the top-level folder stripped; refuses the zip on any header problem."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise DatasetError(
            f"{label}: {len(infos):,} entries, above the limit of {limits.max_entries:,}"
        )
    kept: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    skipped = 0
    for info in infos:
        parts = _member_parts(info, label)
        if _skipped(parts):
            skipped += 1
        elif not info.is_dir():
            kept.append((info, parts))
    declared = sum(info.file_size for info, _ in kept)
    packed = sum(info.compress_size for info, _ in kept)
    if declared > limits.max_total_bytes:
        raise DatasetError(
            f"{label}: would unpack to {_mb(declared)}, above the "
            f"{_mb(limits.max_total_bytes)} limit. Nothing was written."
        )
    if packed > size:
        raise DatasetError(
            f"{label}: its members claim more compressed bytes than the zip holds "
            "(overlapping entries: a likely zip bomb). Nothing was written."
        )
    for info, _ in kept:
        _check_ratio(info.file_size, info.compress_size, f"{info.filename!r}", label, limits)
    _check_ratio(declared, packed, "the zip", label, limits)
    for info, _ in kept:
        if info.flag_bits & 0x1:
            raise DatasetError(
                f"{label}: {info.filename!r} is encrypted; upload a zip without a password"
            )
    seen: dict[tuple[str, ...], str] = {}
    for info, parts in kept:
        if parts in seen:
            raise DatasetError(
                f"{label}: {info.filename!r} and {seen[parts]!r} unpack to the same file"
            )
        seen[parts] = info.filename
    if not any(
        Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and parts[-2:-1] != ("masks",)
        for _, parts in kept
    ):
        raise DatasetError(
            f"{label}: holds no images ({', '.join(IMAGE_SUFFIXES)}) outside masks/ folders. "
            "Expected images/ and masks/ folders (or train/, val/, test/ folders holding them)."
        )
    tops = {parts[0] for _, parts in kept}
    stripped = None
    if len(tops) == 1 and all(len(parts) > 1 for _, parts in kept):
        (top,) = tops
        if top.lower() not in LAYOUT_FOLDERS:
            stripped = top
    depth = 1 if stripped else 0
    return [_Member(info, parts[depth:]) for info, parts in kept], skipped, stripped


def _check_ratio(unpacked: int, packed: int, what: str, label: str, limits: ZipLimits) -> None:
    if unpacked > limits.ratio_floor and unpacked > limits.max_ratio * max(packed, 1):
        raise DatasetError(
            f"{label}: {what} unpacks to {_mb(unpacked)} from {_mb(packed)} (more than "
            f"{limits.max_ratio:g}:1): refused as a likely zip bomb. Nothing was written."
        )


def _refuse_existing(target: Path, name: str, root: Path, label: str) -> None:
    if target.exists() or target.is_symlink():
        raise _exists_error(name, root, label)


def _exists_error(name: str, root: Path, label: str) -> DatasetError:
    return DatasetError(
        f"{label}: a folder called {name} already exists in {root}; choose another name "
        "(nothing is overwritten)"
    )


def _check_free_space(root: Path, needed: int, label: str) -> None:
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return
    if needed + 64 * MiB > free:
        raise DatasetError(
            f"{label}: needs {_mb(needed)} but the server has {_mb(free)} free there"
        )


def _remove_stale_staging(root: Path) -> None:
    """Removes staging folders a killed server left behind (older than :data:`STALE_SECONDS`)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if not entry.name.startswith(STAGING_PREFIX):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
                ):
                    log.warning("removing a stale import folder %s", entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)


# --- extracting -------------------------------------------------------------------------------
class _Budget:
    """The bytes extraction may still write (:attr:`ZipLimits.max_total_bytes`)."""

    def __init__(self, total: int):
        self.left = total


def _extract(
    archive: zipfile.ZipFile, members: list[_Member], staging: Path, label: str, limits: ZipLimits
) -> None:
    budget = _Budget(limits.max_total_bytes)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)
    base = os.path.realpath(staging)
    for member in members:
        shown = member.info.filename
        path = staging.joinpath(*member.parts)
        if os.path.commonpath([base, os.path.realpath(path.parent)]) != base:
            raise DatasetError(f"{label}: {shown!r} would be written outside the new folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        except FileExistsError as exc:
            raise DatasetError(
                f"{label}: {shown!r} clashes with another member of the same name "
                "(or one differing only in case)"
            ) from exc
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise DatasetError(
                f"{label}: {shown!r} clashes with a folder or file of the same name"
            ) from exc
        except OSError as exc:
            raise DatasetError(
                f"{label}: {shown!r} cannot be written ({exc.strerror or exc})"
            ) from exc
        with os.fdopen(fd, "wb") as out:
            try:
                with archive.open(member.info) as source:
                    _copy_capped(source, out, member.info.file_size, budget, shown, label, limits)
            except DatasetError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
                raise DatasetError(f"{label}: {shown!r} is corrupt ({exc})") from exc
            except NotImplementedError as exc:
                raise DatasetError(
                    f"{label}: {shown!r} uses a compression this server cannot unpack ({exc}); "
                    "zip it with the usual Deflate compression"
                ) from exc


def _copy_capped(
    source: BinaryIO,
    out: BinaryIO,
    declared: int,
    budget: _Budget,
    shown: str,
    label: str,
    limits: ZipLimits,
) -> int:
    """Copies ``source`` to ``out`` in chunks, refusing a member that yields more than its
    ``declared`` size or more than the ``budget`` left; returns the bytes copied."""
    copied = 0
    while True:
        chunk = source.read(_CHUNK)
        if not chunk:
            return copied
        copied += len(chunk)
        budget.left -= len(chunk)
        if copied > declared:
            raise DatasetError(
                f"{label}: {shown!r} unpacks to more than the {declared:,} bytes its header "
                "declares: refused as a likely zip bomb"
            )
        if budget.left < 0:
            raise DatasetError(
                f"{label}: unpacks to more than the {_mb(limits.max_total_bytes)} limit: "
                "refused as a likely zip bomb"
            )
        try:
            out.write(chunk)
        except OSError as exc:  # a full disk, a quota: not the zip's fault
            raise DatasetError(
                f"{label}: {shown!r} cannot be written ({exc.strerror or exc})"
            ) from exc


# --- validating -------------------------------------------------------------------------------
class _Collect(logging.Handler):
    """Keeps the warnings logged about files in one folder (from any thread)."""

    def __init__(self, folder: Path):
        super().__init__(logging.WARNING)
        self.folder = str(folder)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            text = record.getMessage()
            if self.folder in text:
                self.messages.append(text)


def _validate(staging: Path, label: str) -> tuple[str, dict[str, int], tuple[str, ...]]:
    """Opens the unpacked folder as a dataset: its layout, sizes per split and warnings."""

    def rename(text: str) -> str:
        text = text.replace(f"{staging}{os.sep}", "").replace(f"{staging}/", "")
        return text.replace(str(staging), label)

    try:
        layout = detect_layout(staging)
    except DatasetError:
        raise DatasetError(_layout_problem(staging, label)) from None
    if layout not in ACCEPTED_LAYOUTS:
        raise DatasetError(
            f"{label}: holds a {layout} dataset; a zip must hold images/ and masks/ folders "
            "(or train/, val/, test/ folders holding them)"
        )
    collect = _Collect(staging)
    logger = logging.getLogger("segcore")
    logger.addHandler(collect)
    try:
        splits = open_dataset(staging)
        dataset_pixel_size(staging)
    except DatasetError as exc:
        problems = [(rename(path), rename(problem)) for path, problem in exc.problems]
        head = rename(str(exc).split("\n", 1)[0])
        if problems:
            head = f"{label}: the dataset does not open: {len(problems)} problem(s):"
        elif not head.startswith(f"{label}"):
            head = f"{label}: {head}"
        raise DatasetError(head, problems) from None
    finally:
        logger.removeHandler(collect)
    sizes = {name: len(splits.split(name)) for name in ("train", "val", "test")}
    return layout, sizes, tuple(rename(m) for m in collect.messages)


def _layout_problem(staging: Path, label: str) -> str:
    """Why an unpacked zip has no layout: images without masks, or folders of no layout."""
    lonely = [
        folder
        for folder in (staging, *(staging / s for s in ("train", "val", "test")))
        if (folder / "images").is_dir() and not (folder / "masks").is_dir()
    ]
    if lonely:
        where = "/".join((*lonely[0].relative_to(staging).parts, "images"))
        return (
            f"{label}: images without annotations: {where}/ has no masks/ folder beside it. "
            "Add masks/ with one mask per image, of the same stem: a PNG label image or "
            "QuPath GeoJSON (masks/<stem>.geojson)."
        )
    top = sorted(p.name + ("/" if p.is_dir() else "") for p in staging.iterdir())
    shown = ", ".join(top[:8]) + (f" and {len(top) - 8} more" if len(top) > 8 else "")
    return (
        f"{label}: no dataset layout found. Expected images/ and masks/ folders (or train/, "
        f"val/, test/ folders holding them); the zip holds {shown}"
    )


def _count_files(folder: Path) -> tuple[int, int]:
    """Image files in the dataset's ``images/`` folders and files in its ``masks/`` folders."""

    def files(where: Path) -> Iterator[Path]:
        if where.is_dir():
            yield from (p for p in where.iterdir() if p.is_file() and p.name[:1] != ".")

    images = masks = 0
    for base in (folder, *(folder / s for s in ("train", "val", "test"))):
        images += sum(p.suffix.lower() in IMAGE_SUFFIXES for p in files(base / "images"))
        masks += sum(1 for _ in files(base / "masks"))
    return images, masks


def _mb(size: int) -> str:
    return f"{size / MiB:,.1f} MB" if size >= MiB / 10 else f"{size / 1024:,.1f} KB"
