"""Fuzzing the data-roots resolution (segcore.data.roots) with a seeded generator of what a
browser user could type into a folder box or the Slides page's slide-path box.

More than 500 strings: very long names (300 and 5,000 characters, one long part or many), unicode
(accents, CJK, emoji, right-to-left, combining marks, surrogates), control characters, NUL, ``..``,
``~``, absolute paths, symlinks inside, out of and looping within a root, and random mixtures of
these. :func:`~segcore.data.roots.resolve_folder` and :func:`~segcore.data.roots.resolve_file`
must return a folder (a file) strictly inside a root or raise the one refusal: never another
exception, whatever the operating system says about the name (``ENAMETOOLONG``, ``EINVAL``…).
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from segcore.data import roots
from segcore.errors import DatasetError

SEED = 20261221

PIECES = [
    "..",
    ".",
    "~",
    "~root",
    "/",
    "\\",
    "//",
    "\x00",
    "\n",
    "\r",
    "\t",
    "\x1b[31m",
    "\x7f",
    "\u202e",  # right-to-left override
    "\ufeff",
    "e\u0301",  # a combining accent
    "é",
    "核",
    "🧫",
    "\udcff",  # a lone surrogate (what os.fsdecode makes of undecodable bytes)
    " ",
    "%2e%2e",
    "C:",
    "mine",
    "data",
    "samples",
    "sets",
    "pairs",
    "in-link",
    "out-link",
    "loop",
    "self",
    "case.svs",
    "a" * 255,
    "a" * 256,
    "b" * 300,
    "c" * 5000,
]


@pytest.fixture(autouse=True)
def no_repo_roots_file(tmp_path, monkeypatch):
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", tmp_path / "no-such" / "data_roots.toml")
    monkeypatch.delenv(roots.DATA_ROOTS_FILE_ENV, raising=False)


@pytest.fixture
def tree(tmp_path):
    """A root ``mine`` with a folder, a slide, and symlinks: inside, out of the root, a loop."""
    root = tmp_path / "root"
    (root / "sets" / "pairs").mkdir(parents=True)
    (root / "sets" / "case.svs").write_bytes(b"svs")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "case.svs").write_bytes(b"svs")
    (root / "in-link").symlink_to(root / "sets", target_is_directory=True)
    (root / "out-link").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root / "self")
    (root / "self").symlink_to(root / "loop")
    (root / "case.svs").symlink_to(outside / "case.svs")
    return roots.data_roots({roots.DATA_ROOTS_ENV: f"mine={root}"}), root, outside


def typed_strings(root: Path, outside: Path, seed: int = SEED) -> list[str]:
    """What a browser user might type, reproducible from ``seed``."""
    rng = random.Random(seed)
    fixed = [
        "a" * 300,
        "a" * 5000,
        "data/" + "a" * 300,
        "mine/" + "b" * 5000,
        "/" + "a" * 300,
        str(root / ("a" * 300)),
        str(root / ("a" * 5000)),
        "/".join(["a" * 200] * 30),  # a path over PATH_MAX made of legal parts
        "mine/" + "/".join(["d"] * 3000),
        "x\x00y",
        "mine/sets\x00/pairs",
        "\x00",
        str(outside),
        str(outside / "case.svs"),
        "mine/out-link",
        "mine/in-link",
        "mine/loop",
        "mine/loop/x",
        "mine/case.svs",
        "mine/sets/case.svs",
        "mine/sets/pairs",
        "~",
        "~/",
        "..",
        "mine/../outside",
    ]
    generated = []
    for _ in range(600):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 6))]
        joiner = rng.choice(["/", "", "/", "\\", "/./"])
        text = joiner.join(parts)
        if rng.random() < 0.2:
            text = rng.choice([str(root), str(outside), "mine", "data"]) + "/" + text
        if rng.random() < 0.1:
            text = "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 400)))
        generated.append(text)
    return fixed + generated


def check(text: str, allowed, root: Path) -> str:
    """``"folder"``/``"file"``/``"refused"``; fails on anything else."""
    real_roots = [r.path for r in allowed]
    outcome = []
    for resolve, message, kind in (
        (roots.resolve_folder, roots.refusal_message(allowed), "folder"),
        (roots.resolve_file, roots.file_refusal_message(allowed), "file"),
    ):
        try:
            found = resolve(text, allowed)
        except DatasetError as exc:
            assert str(exc) == message, (text[:80], str(exc))
            outcome.append("refused")
        else:
            assert found.is_absolute() and found == found.resolve(), (text[:80], found)
            assert any(found == r or found.is_relative_to(r) for r in real_roots), text[:80]
            assert found.is_dir() if kind == "folder" else found.is_file(), (text[:80], found)
            outcome.append(kind)
    return "/".join(outcome)


def test_the_generator_is_seeded_and_big_enough(tree):
    _, root, outside = tree
    strings = typed_strings(root, outside)
    assert len(strings) >= 500
    assert typed_strings(root, outside) == strings
    assert any(len(s) >= 5000 for s in strings) and any("\x00" in s for s in strings)


def test_every_string_gets_a_folder_inside_a_root_or_the_one_refusal(tree):
    allowed, root, outside = tree
    outcomes: dict[str, int] = {}
    for text in typed_strings(root, outside):
        result = check(text, allowed, root)
        outcomes[result] = outcomes.get(result, 0) + 1
    assert outcomes.get("refused/refused", 0) > 400, outcomes
    assert outcomes.get("folder/refused", 0) >= 2 and outcomes.get("refused/file", 0) >= 1


@pytest.mark.parametrize("code", [errno.ENAMETOOLONG, errno.EACCES, errno.EIO, errno.EINVAL])
def test_any_os_error_of_the_file_system_gets_the_refusal(tree, monkeypatch, code):
    """Whatever the file system raises while a typed path is checked (a name too long, a folder
    that cannot be read, a broken disk) ends in the one refusal."""
    allowed, _, _ = tree

    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "stat", fail)
    with pytest.raises(DatasetError) as info:
        roots.resolve_folder("mine/sets/pairs", allowed)
    assert str(info.value) == roots.refusal_message(allowed)
    with pytest.raises(DatasetError) as info:
        roots.resolve_file("mine/sets/case.svs", allowed)
    assert str(info.value) == roots.file_refusal_message(allowed)
