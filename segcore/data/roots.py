"""The data roots: the only folders a browser user of the app may open datasets from.

The app's users type dataset folders into text boxes (the Predict and Evaluate pages' sample
source, the Train page's dataset). Those folders must lie inside a *data root*:

* ``samples`` — the repository's ``samples/`` (the built-in samples);
* ``data`` — the repository's ``data/`` (the synthetic set, your own datasets);
* every folder listed in the TOML file :data:`DEFAULT_ROOTS_FILE` (``data_roots.toml`` at the
  repository root, git-ignored; see ``data_roots.example.toml``) or in the file named by the
  environment variable :data:`DATA_ROOTS_FILE_ENV` (``SEGCORE_DATA_ROOTS_FILE``; a relative path
  is taken from the repository root). The file holds one table, ``[roots]``, of
  ``NAME = "PATH"``; a relative ``PATH`` is taken from the file's own folder. A missing default
  file is fine; a file that cannot be read or parsed, or holds anything else (no ``[roots]``
  table, a value that is not a string, a name with ``/``, ``\\`` or spaces), is ignored as a
  whole with one warning in the server log;
* every folder listed in the environment variable :data:`DATA_ROOTS_ENV`
  (``SEGCORE_DATA_ROOTS``), separated by :data:`os.pathsep` (``:`` on Linux and macOS). An entry
  is ``PATH`` (the root is named after the folder) or ``NAME=PATH``; a relative ``PATH`` is taken
  from the repository root. E.g. ``SEGCORE_DATA_ROOTS=monuseg=/srv/monuseg:/srv/pannuke``.

The roots are searched in that order: built-in, file, environment. When an environment entry
has the same name as a file root, the environment wins: the file's root is dropped. Any other
repeated name (e.g. a file root called ``data``) gets ``-2``, ``-3``… The file is read on every
call, so edits to it take effect without restarting the server. A root's folder need not exist
(for the file as for the variable): a missing one simply matches nothing.

:func:`resolve_folder` turns what the user typed — a path relative to a root, either
root-qualified (``data/my-set``, ``monuseg/test``) or plain (``my-set``, tried under each root
in turn), or an absolute path inside a root — into the real folder (symlinks resolved) and
refuses everything else (``..``, ``~``, absolute paths outside the roots, symlinks that lead out
of a root, missing folders) with one message, :func:`refusal_message`, that says nothing about
the server's file system: it is the same whether the folder exists or not and names no absolute
path. :func:`resolve_file` does the same for a file (a slide), with its own one message,
:func:`file_refusal_message`, and :func:`find_files` lists the files of given suffixes under
the roots (bounded), for a picker. :func:`browser_name` gives the root-qualified name to show,
and :func:`relativise` / :func:`browser_error` rewrite error messages so they name files
relative to their root.

The command line does not use this module: the person at the terminal owns the machine and may
open any folder.

This module imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from segcore.errors import DatasetError
from segcore.paths import REPO_ROOT

log = logging.getLogger(__name__)

DATA_ROOTS_ENV = "SEGCORE_DATA_ROOTS"
"""Environment variable listing extra data roots (``PATH`` or ``NAME=PATH``, ``os.pathsep``
between entries)."""

DATA_ROOTS_FILE_ENV = "SEGCORE_DATA_ROOTS_FILE"
"""Environment variable naming the data roots file, instead of :data:`DEFAULT_ROOTS_FILE`."""

DEFAULT_ROOTS_FILE = REPO_ROOT / "data_roots.toml"
"""The data roots file read when :data:`DATA_ROOTS_FILE_ENV` is unset (git-ignored; it need not
exist)."""

BUILT_IN_ROOTS = (("samples", REPO_ROOT / "samples"), ("data", REPO_ROOT / "data"))
"""The roots every deployment has: the repository's ``samples/`` and ``data/``."""


@dataclass(frozen=True)
class DataRoot:
    """One folder the app's browser users may open datasets from.

    Attributes:
        name: what the user types first to name the root (``data`` in ``data/my-set``).
        path: the folder, absolute with symlinks resolved.
    """

    name: str
    path: Path


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not re.search(r"[/\\\s]", name)


def _parse_entry(entry: str) -> tuple[str, Path] | None:
    name, sep, rest = entry.partition("=")
    if sep and _plain_name(name):
        entry = rest
    else:
        name = ""
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else REPO_ROOT / path
    path = path.resolve()
    name = name or path.name
    if not _plain_name(name):
        return None
    return name, path


def roots_file(environ: Mapping[str, str] | None = None) -> Path:
    """The data roots file: :data:`DATA_ROOTS_FILE_ENV` if set (relative to the repository
    root), else :data:`DEFAULT_ROOTS_FILE`."""
    environ = os.environ if environ is None else environ
    named = environ.get(DATA_ROOTS_FILE_ENV, "").strip()
    if not named:
        return DEFAULT_ROOTS_FILE
    path = Path(named).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _file_entries(file: Path, explicit: bool) -> list[tuple[str, Path]]:
    """The roots listed in ``file`` (``[roots]``: ``NAME = "PATH"``), or none — with one
    warning — when it cannot be read or is malformed. A missing file is silent unless named
    explicitly."""
    try:
        with file.open("rb") as handle:
            content = tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            log.warning("data roots file %s: not found; ignoring it", file)
        return []
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("data roots file %s: cannot be read (%s); ignoring it", file, exc)
        return []
    table = content.get("roots")
    problem = ""
    if not isinstance(table, dict):
        problem = "no [roots] table" if table is None else "'roots' is not a table"
    else:
        for name, value in table.items():
            if not _plain_name(name):
                problem = f"the root name {name!r} is not a plain name"
            elif not isinstance(value, str) or not value.strip():
                problem = f"the root {name!r} is not a non-empty string path"
            if problem:
                break
    if problem:
        log.warning("data roots file %s: %s; ignoring it", file, problem)
        return []
    entries = []
    for name, value in table.items():
        path = Path(value.strip()).expanduser()
        entries.append((name, (path if path.is_absolute() else file.parent / path).resolve()))
    return entries


def data_roots(environ: Mapping[str, str] | None = None) -> tuple[DataRoot, ...]:
    """The data roots: ``samples``, ``data``, those in the data roots file (:func:`roots_file`)
    and those listed in :data:`DATA_ROOTS_ENV`.

    Args:
        environ: the environment to read, defaults to ``os.environ`` (read on every call, as is
            the file).

    Returns:
        The roots in search order (built-in, file, environment), names unique: an environment
        entry replaces a file root of the same name; any other repeated name gets ``-2``,
        ``-3``…. An environment entry that gives no usable name (e.g. ``/``) is skipped with a
        warning in the server log; a malformed file is ignored with one.
    """
    environ = os.environ if environ is None else environ
    entries = [(name, path.resolve()) for name, path in BUILT_IN_ROOTS]
    env_entries = []
    for raw in environ.get(DATA_ROOTS_ENV, "").split(os.pathsep):
        if not raw.strip():
            continue
        parsed = _parse_entry(raw.strip())
        if parsed is None:
            log.warning("%s: ignoring the entry %r (no usable root name)", DATA_ROOTS_ENV, raw)
            continue
        env_entries.append(parsed)
    env_names = {name for name, _ in env_entries}
    file = roots_file(environ)
    explicit = bool(environ.get(DATA_ROOTS_FILE_ENV, "").strip())
    for name, path in _file_entries(file, explicit):
        if name in env_names:
            log.info("%s overrides the root %r of %s", DATA_ROOTS_ENV, name, file)
            continue
        entries.append((name, path))
    entries.extend(env_entries)
    roots: list[DataRoot] = []
    taken: set[str] = set()
    for name, path in entries:
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique)
        roots.append(DataRoot(unique, path))
    return tuple(roots)


def describe_roots(roots: Sequence[DataRoot] | None = None) -> str:
    """The roots' names for labels and messages, e.g. ``"samples/, data/ or monuseg/"``."""
    names = [f"{root.name}/" for root in (data_roots() if roots is None else roots)]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def refusal_message(roots: Sequence[DataRoot] | None = None) -> str:
    """The one message every refused folder gets (it names the roots, never a server path)."""
    return (
        "Not an available dataset folder. Give a folder inside one of the data roots "
        f"({describe_roots(roots)}) relative to it, e.g. data/my-dataset; paths outside "
        "the roots, '..' and '~' are not accepted."
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _candidates(text: str, roots: Sequence[DataRoot]) -> list[tuple[DataRoot, Path]]:
    """Where ``text`` could point, root by root (nothing for ``..``, ``~`` or odd input)."""
    if not text or "\x00" in text or text.startswith("~"):
        return []
    pure = PurePath(text)
    if ".." in pure.parts or ".." in text.replace("\\", "/").split("/"):
        return []
    if pure.is_absolute():
        return [(root, Path(text)) for root in roots]
    if text.startswith(("/", "\\")) or pure.drive:  # half-absolute forms: not ours to guess
        return []
    if not pure.parts:  # '.', './': no folder named
        return []
    first, rest = pure.parts[0], pure.parts[1:]
    named = [(root, root.path.joinpath(*rest)) for root in roots if root.name == first]
    return named + [(root, root.path / pure) for root in roots]


def _checked(path: Path, root: DataRoot, kind: Callable[[Path], bool]) -> Path | None:
    """``path`` resolved (symlinks followed) when it lies inside ``root`` (not the root itself,
    for a file) and ``kind`` (``Path.is_dir`` or ``Path.is_file``) holds, else None.

    Whatever the file system says about the name — a symlink loop, a name or path too long
    (``ENAMETOOLONG``), a NUL or an unencodable character, a folder that cannot be read, an I/O
    error — is an unavailable path like a missing one: None, never an exception."""
    try:
        real = path.resolve()
        if not _inside(real, root.path) or (kind is Path.is_file and real == root.path):
            return None
        return real if kind(real) else None
    except (OSError, RuntimeError, ValueError):
        return None


def resolve_folder(text: str, roots: Sequence[DataRoot] | None = None) -> Path:
    """The real folder a browser user means by ``text``, strictly inside a data root.

    Args:
        text: what was typed: ``data/my-set`` (root-qualified), ``my-set`` (tried under each root
            in order), a root's name alone, or an absolute path inside a root.
        roots: the allowed roots, defaults to :func:`data_roots`.

    Returns:
        The folder, absolute with symlinks resolved.

    Raises:
        DatasetError: with :func:`refusal_message` — for ``..``, ``~``, absolute paths outside
            the roots, symlinks leading out of their root, files and missing folders alike.
    """
    roots = data_roots() if roots is None else roots
    for root, path in _candidates(str(text).strip(), roots):
        real = _checked(path, root, Path.is_dir)
        if real is not None:
            return real
    raise DatasetError(refusal_message(roots))


def file_refusal_message(roots: Sequence[DataRoot] | None = None) -> str:
    """The one message every refused file gets (:func:`resolve_file`; the roots' names only)."""
    return (
        "Not an available file. Give a file inside one of the data roots "
        f"({describe_roots(roots)}) relative to it, e.g. data/slides/case.svs; paths outside "
        "the roots, '..' and '~' are not accepted."
    )


def resolve_file(
    text: str, roots: Sequence[DataRoot] | None = None, suffixes: Sequence[str] = ()
) -> Path:
    """The real file a browser user means by ``text``, strictly inside a data root: the rules
    of :func:`resolve_folder`, for a file.

    Args:
        text: what was typed: ``data/slides/a.svs`` (root-qualified), ``slides/a.svs`` (tried
            under each root in order), or an absolute path inside a root.
        roots: the allowed roots, defaults to :func:`data_roots`.
        suffixes: when given, the file's name must end in one of them (case-insensitive);
            another is refused like a missing file.

    Returns:
        The file, absolute with symlinks resolved.

    Raises:
        DatasetError: with :func:`file_refusal_message` — for ``..``, ``~``, absolute paths
            outside the roots, symlinks leading out of their root, folders, other suffixes and
            missing files alike.
    """
    roots = data_roots() if roots is None else roots
    wanted = tuple(s.lower() for s in suffixes)
    for root, path in _candidates(str(text).strip(), roots):
        real = _checked(path, root, Path.is_file)
        if real is not None and (not wanted or real.name.lower().endswith(wanted)):
            return real
    raise DatasetError(file_refusal_message(roots))


FIND_FILES_LIMIT = 500
"""At most this many files are listed by :func:`find_files`."""

FIND_FILES_SCAN = 20_000
"""At most this many folder entries are looked at by :func:`find_files` (a large root is cut
short rather than walked for minutes)."""


def find_files(
    suffixes: Sequence[str],
    roots: Sequence[DataRoot] | None = None,
    *,
    limit: int = FIND_FILES_LIMIT,
    scan: int = FIND_FILES_SCAN,
) -> list[str]:
    """The files under the data roots whose names end in one of ``suffixes``, by their
    root-qualified names (``data/slides/a.svs``), for a picker.

    Hidden files and folders (``.name``) are skipped, and so are symlinks that lead out of their
    root; each root is walked in name order, breadth first, and the walk stops after ``scan``
    entries or ``limit`` files.

    Args:
        suffixes: the file name endings to list (case-insensitive), e.g. ``(".svs", ".tif")``.
        roots: the roots, defaults to :func:`data_roots`.
        limit: at most this many names, defaults to :data:`FIND_FILES_LIMIT`.
        scan: at most this many entries looked at, defaults to :data:`FIND_FILES_SCAN`.

    Returns:
        Root-qualified names, root by root in search order, sorted within each root.
    """
    roots = data_roots() if roots is None else roots
    wanted = tuple(s.lower() for s in suffixes)
    found: list[str] = []
    seen = 0
    for root in roots:
        names: list[str] = []
        queue, visited = [root.path], {root.path}
        while queue and seen < scan and len(found) + len(names) < limit:
            folder = queue.pop(0)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if seen > scan or len(found) + len(names) >= limit:
                    break
                if entry.name.startswith("."):
                    continue
                try:
                    real = Path(entry.path).resolve()
                    if not _inside(real, root.path):
                        continue
                    if entry.is_dir():
                        if real not in visited:  # a symlinked folder is walked once
                            visited.add(real)
                            queue.append(Path(entry.path))
                    elif entry.name.lower().endswith(wanted) and real.is_file():
                        names.append(f"{root.name}/{Path(entry.path).relative_to(root.path)}")
                except (OSError, RuntimeError):
                    continue
        found.extend(sorted(names))
    return found


def browser_name(folder: Path, roots: Sequence[DataRoot] | None = None) -> str:
    """The root-qualified name of a folder inside a root (``data/my-set``; ``data`` for the root
    itself), the form the app shows and keeps.

    Raises:
        DatasetError: with :func:`refusal_message` when ``folder`` is in no root.
    """
    roots = data_roots() if roots is None else roots
    folder = Path(folder).resolve()
    for root in roots:
        if _inside(folder, root.path):
            relative = folder.relative_to(root.path).as_posix()
            return root.name if relative == "." else f"{root.name}/{relative}"
    raise DatasetError(refusal_message(roots))


def relativise(text: str, roots: Sequence[DataRoot] | None = None) -> str:
    """``text`` with every root's absolute path replaced by the root's name, so a message names
    files as ``data/my-set/images/a.png``; for messages shown in a browser."""
    roots = data_roots() if roots is None else roots
    for root in sorted(roots, key=lambda r: len(str(r.path)), reverse=True):
        if root.path == Path(root.path.anchor):  # a file-system root: nothing to shorten
            continue
        pattern = re.escape(str(root.path)) + r"(?=$|[/\\\s:;,'\")\]])"
        text = re.sub(pattern, lambda _match, name=root.name: name, text)
    return text


def browser_error(exc: DatasetError, roots: Sequence[DataRoot] | None = None) -> DatasetError:
    """The same error with its message and problem list naming files relative to their root
    (:func:`relativise`); for the app only."""
    roots = data_roots() if roots is None else roots
    error = DatasetError(relativise(str(exc), roots))
    error.problems = [(relativise(p, roots), relativise(m, roots)) for p, m in exc.problems]
    return error
