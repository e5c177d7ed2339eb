"""The data boundary of the app (segcore.data.roots): what a browser user may open, the one
refusal message, messages relative to the root, and the bounded PanNuke search."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest

from segcore.data import roots, samples
from segcore.data.layouts import SEARCH_DEPTH, detect_layout, find_one
from segcore.errors import DatasetError
from segcore.paths import REPO_ROOT
from tests.conftest import make_pairs_dataset

ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(])/[^\s]")


@pytest.fixture(autouse=True)
def no_repo_roots_file(tmp_path, monkeypatch):
    """No test reads a real ``data_roots.toml`` in the checkout: the default file is a missing
    one in ``tmp_path``, and ``SEGCORE_DATA_ROOTS_FILE`` is unset."""
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", tmp_path / "no-such" / "data_roots.toml")
    monkeypatch.delenv(roots.DATA_ROOTS_FILE_ENV, raising=False)


@pytest.fixture
def setup(tmp_path):
    """A root ``mine`` with a dataset, and folders outside it (one of them a real dataset)."""
    root = tmp_path / "root"
    make_pairs_dataset(root / "sets" / "pairs", n=4, size=32)
    outside = make_pairs_dataset(tmp_path / "outside", n=4, size=32)
    env = {roots.DATA_ROOTS_ENV: f"mine={root}"}
    return roots.data_roots(env), root, outside


def refused(text: str, allowed) -> str:
    with pytest.raises(DatasetError) as info:
        roots.resolve_folder(text, allowed)
    return str(info.value)


def test_the_roots_are_samples_data_and_the_environment(tmp_path):
    a, b = tmp_path / "a", tmp_path / "x" / "a"
    env = {roots.DATA_ROOTS_ENV: os.pathsep.join([f"named={a}", str(b), "", str(a), os.sep])}
    found = roots.data_roots(env)
    assert [(r.name, r.path) for r in found] == [
        ("samples", REPO_ROOT / "samples"),
        ("data", REPO_ROOT / "data"),
        ("named", a),
        ("a", b),
        ("a-2", a),  # a repeated name gets a suffix; "/" gives no name and is skipped
    ]
    relative = roots.data_roots({roots.DATA_ROOTS_ENV: "shared=../shared/data"})
    assert relative[-1].path == (REPO_ROOT / "../shared/data").resolve()
    assert roots.describe_roots(found[:3]) == "samples/, data/ or named/"


BUILT_IN = [("samples", REPO_ROOT / "samples"), ("data", REPO_ROOT / "data")]


def named(found):
    return [(r.name, r.path) for r in found]


def test_roots_from_the_default_file(tmp_path, monkeypatch, caplog):
    conf = tmp_path / "conf"
    (conf / "sets").mkdir(parents=True)
    file = conf / "data_roots.toml"
    file.write_text(f'[roots]\nlocal = "sets"\nabsolute = "{tmp_path / "abs"}"\n')
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", file)
    with caplog.at_level(logging.WARNING, logger=roots.__name__):
        found = roots.data_roots({})
    assert not caplog.records
    assert named(found) == [*BUILT_IN, ("local", conf / "sets"), ("absolute", tmp_path / "abs")]
    assert roots.resolve_folder("local", found) == conf / "sets"  # relative to the file's folder
    # File roots come before the environment's; a clash with a built-in name gets a suffix.
    file.write_text('[roots]\ndata = "sets"\n')
    found = roots.data_roots({roots.DATA_ROOTS_ENV: f"env={tmp_path}"})
    assert named(found) == [*BUILT_IN, ("data-2", conf / "sets"), ("env", tmp_path)]


def test_the_environment_wins_over_a_file_root_of_the_same_name(tmp_path, monkeypatch):
    file = tmp_path / "data_roots.toml"
    file.write_text('[roots]\nshared = "from-file"\nother = "other"\n')
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", file)
    found = roots.data_roots({roots.DATA_ROOTS_ENV: f"shared={tmp_path / 'from-env'}"})
    assert named(found) == [
        *BUILT_IN,
        ("other", tmp_path / "other"),
        ("shared", tmp_path / "from-env"),
    ]


def test_the_file_variable_names_another_file(tmp_path, monkeypatch, caplog):
    default = tmp_path / "data_roots.toml"
    default.write_text('[roots]\ndefault = "d"\n')
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", default)
    elsewhere = tmp_path / "elsewhere" / "roots.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text('[roots]\nmine = "."\n')
    found = roots.data_roots({roots.DATA_ROOTS_FILE_ENV: str(elsewhere)})
    assert named(found) == [*BUILT_IN, ("mine", elsewhere.parent)]
    monkeypatch.setenv(roots.DATA_ROOTS_FILE_ENV, str(elsewhere))  # os.environ by default
    assert roots.roots_file() == elsewhere
    assert roots.data_roots()[-1] == roots.DataRoot("mine", elsewhere.parent)
    # A named file that is missing is ignored, with a warning.
    with caplog.at_level(logging.WARNING, logger=roots.__name__):
        found = roots.data_roots({roots.DATA_ROOTS_FILE_ENV: str(tmp_path / "gone.toml")})
    assert named(found) == BUILT_IN
    assert [r.getMessage() for r in caplog.records] == [
        f"data roots file {tmp_path / 'gone.toml'}: not found; ignoring it"
    ]


def test_a_missing_default_file_is_fine(caplog):
    with caplog.at_level(logging.WARNING, logger=roots.__name__):
        assert named(roots.data_roots({})) == BUILT_IN
    assert not caplog.records


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[roots\nx = 'y'\n", "cannot be read"),  # not TOML
        (b"\xff\xfe[roots]", "cannot be read"),  # not UTF-8
        ("x = 'y'\n", "no [roots] table"),
        ("roots = 'y'\n", "'roots' is not a table"),
        ("[roots]\ngood = 'fine'\nx = 3\n", "not a non-empty string path"),
        ("[roots]\nx = ''\n", "not a non-empty string path"),
        ("[roots]\nx = ['a']\n", "not a non-empty string path"),
        ("[roots.x]\npath = 'a'\n", "not a non-empty string path"),
        ("[roots]\ngood = 'fine'\n'a b' = 'a'\n", "not a plain name"),
        ("[roots]\n'..' = 'a'\n", "not a plain name"),
    ],
)
def test_a_malformed_file_is_ignored(tmp_path, monkeypatch, caplog, content, problem):
    file = tmp_path / "data_roots.toml"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", file)
    with caplog.at_level(logging.WARNING, logger=roots.__name__):
        found = roots.data_roots({roots.DATA_ROOTS_ENV: f"env={tmp_path}"})
    assert named(found) == [*BUILT_IN, ("env", tmp_path)]  # the whole file is ignored
    assert len(caplog.records) == 1, caplog.records
    message = caplog.records[0].getMessage()
    assert str(file) in message and problem in message and "ignoring it" in message
    # Browser users still see only root names.
    refusal = roots.refusal_message(found)
    assert str(tmp_path) not in refusal and not ABSOLUTE_PATH.search(refusal)


def test_a_folder_as_the_file_is_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=roots.__name__):
        found = roots.data_roots({roots.DATA_ROOTS_FILE_ENV: str(tmp_path)})
    assert named(found) == BUILT_IN
    assert len(caplog.records) == 1 and "cannot be read" in caplog.records[0].getMessage()


def test_the_example_file_parses_and_lists_nothing(monkeypatch):
    monkeypatch.setattr(roots, "DEFAULT_ROOTS_FILE", REPO_ROOT / "data_roots.example.toml")
    assert named(roots.data_roots({})) == BUILT_IN


def test_folders_inside_a_root_are_accepted(setup):
    allowed, root, _ = setup
    target = root / "sets" / "pairs"
    assert roots.resolve_folder("mine/sets/pairs", allowed) == target  # root-qualified
    assert roots.resolve_folder("sets/pairs", allowed) == target  # tried under each root
    assert roots.resolve_folder(" sets/pairs/ ", allowed) == target
    assert roots.resolve_folder(str(target), allowed) == target  # absolute, inside
    assert roots.resolve_folder("mine", allowed) == root
    assert roots.resolve_folder("samples/test", allowed) == REPO_ROOT / "samples" / "test"
    (root / "link").symlink_to(target, target_is_directory=True)  # a symlink staying inside
    assert roots.resolve_folder("mine/link", allowed) == target
    assert roots.browser_name(target, allowed) == "mine/sets/pairs"
    assert roots.browser_name(root, allowed) == "mine"
    assert samples.browser_source("mine/link", allowed) == "mine/sets/pairs"
    assert samples.browser_source("Synthetic", allowed) == samples.SYNTHETIC


def test_everything_else_gets_the_same_message_whether_it_exists_or_not(setup, tmp_path):
    allowed, root, outside = setup
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "missing", target_is_directory=True)
    (root / "file.txt").write_text("not a folder")
    attempts = [
        str(outside),  # a real dataset outside the roots
        str(tmp_path / "missing"),  # a missing one
        "/etc",
        "/",
        "../outside",
        "../../",
        "mine/../outside",
        "mine/sets/../../outside",
        "sets/pairs/../pairs",  # any '..' at all
        "~",
        "~/",
        "~root",
        "mine/escape",  # a symlink leading out of the root, to an existing folder
        "mine/dangling",  # and to a missing one
        "mine/file.txt",
        "mine/nothing-here",
        "",
        "bad\x00name",
    ]
    messages = {text: refused(text, allowed) for text in attempts}
    assert set(messages.values()) == {roots.refusal_message(allowed)}, messages
    message = roots.refusal_message(allowed)
    assert "mine/" in message and "data/" in message
    assert str(tmp_path) not in message and not ABSOLUTE_PATH.search(message)
    with pytest.raises(DatasetError, match="Not an available dataset folder"):
        roots.browser_name(outside, allowed)


def test_files_inside_a_root_are_accepted_and_everything_else_refused_alike(setup, tmp_path):
    allowed, root, outside = setup
    slide = root / "slides" / "case.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"svs")
    (root / "slides" / "notes.txt").write_text("text")
    (root / "inside-link.svs").symlink_to(slide)
    (outside / "far.svs").write_bytes(b"svs")
    (root / "escape.svs").symlink_to(outside / "far.svs")
    suffixes = (".svs", ".tif")
    for text in ["mine/slides/case.svs", "slides/case.svs", str(slide), " mine/slides/case.svs "]:
        assert roots.resolve_file(text, allowed, suffixes) == slide, text
    assert roots.resolve_file("mine/inside-link.svs", allowed, suffixes) == slide
    assert roots.resolve_file("mine/slides/notes.txt", allowed) == root / "slides" / "notes.txt"
    attempts = [
        str(outside / "far.svs"),  # a real file outside the roots
        "mine/escape.svs",  # a symlink leading out of the root
        "mine/slides/../slides/case.svs",  # any '..'
        "~/case.svs",
        "/etc/passwd",
        "mine/slides",  # a folder
        "mine",  # a root itself
        "mine/slides/missing.svs",
        "mine/slides/notes.txt",  # another suffix
        "",
    ]
    messages = set()
    for text in attempts:
        with pytest.raises(DatasetError) as info:
            roots.resolve_file(text, allowed, suffixes)
        messages.add(str(info.value))
    assert messages == {roots.file_refusal_message(allowed)}
    message = roots.file_refusal_message(allowed)
    assert "mine/" in message and str(tmp_path) not in message and not ABSOLUTE_PATH.search(message)


def test_find_files_lists_by_suffix_within_the_roots_and_is_bounded(setup, tmp_path):
    allowed, root, outside = setup
    for name in ["b.svs", "a.SVS", "deep/er/c.tif", ".hidden/d.svs", "e.png"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (outside / "far.svs").write_bytes(b"x")
    (root / "out").symlink_to(outside, target_is_directory=True)  # leads out: not walked
    (root / "loop").symlink_to(root, target_is_directory=True)  # back in: walked once
    mine = [n for n in roots.find_files((".svs", ".tif"), allowed) if n.startswith("mine/")]
    assert mine == ["mine/a.SVS", "mine/b.svs", "mine/deep/er/c.tif"]
    assert len(roots.find_files((".svs", ".tif"), allowed, limit=2)) == 2
    assert roots.find_files((".svs",), allowed, scan=1) == []  # only one entry looked at


def test_open_source_within_roots_names_files_relative_to_the_root(setup):
    allowed, root, outside = setup
    broken = make_pairs_dataset(root / "broken", n=3, size=32)
    (broken / "masks" / "img_001.png").unlink()
    (broken / "masks" / "stray.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError) as info:
        samples.open_source("mine/broken", roots=allowed)
    message = str(info.value)
    assert "mine/broken/images/img_001.png" in message
    assert "mine/broken/masks/stray.png" in message
    assert str(root) not in message and not ABSOLUTE_PATH.search(message)
    assert ("mine/broken/masks/stray.png", "orphan mask: no image with this stem in images/") in (
        info.value.problems
    )
    assert all(str(root) not in p + m for p, m in info.value.problems)
    with pytest.raises(DatasetError, match=r"^Not an available dataset folder"):
        samples.open_source(str(outside), roots=allowed)
    splits = samples.open_source("mine/sets/pairs", roots=allowed)
    assert splits.root == root / "sets" / "pairs" and len(splits.train) > 0
    # Without roots (the command line) any folder opens, as before.
    assert len(samples.open_source(str(outside)).train) > 0


def test_relativise_replaces_whole_root_paths_only(setup):
    allowed, root, _ = setup
    text = f"{root}/a.png: bad; {root}: empty; {root}2/b.png stays; '{root}'"
    assert roots.relativise(text, allowed) == (
        f"mine/a.png: bad; mine: empty; {root}2/b.png stays; 'mine'"
    )


def write_fold(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", np.zeros((n, 16, 16, 3), np.uint8))
    np.save(folder / "masks.npy", np.zeros((n, 16, 16, 6), np.uint8))


def test_pannuke_search_is_bounded_and_never_leaves_the_folder(tmp_path):
    chosen = tmp_path / "chosen"
    nested = chosen / "Fold 1" / "images" / "fold1"  # PanNuke's own nesting: 3 levels
    write_fold(nested)
    assert find_one(chosen, "images.npy") == nested / "images.npy"
    assert detect_layout(chosen) == "pannuke"

    deep = tmp_path / "deep"
    too_deep = deep.joinpath(*[f"d{i}" for i in range(SEARCH_DEPTH + 1)])
    write_fold(too_deep)
    assert find_one(deep, "images.npy") is None
    assert find_one(deep, "images.npy", max_depth=SEARCH_DEPTH + 1) == too_deep / "images.npy"

    above = tmp_path / "above"
    write_fold(above)  # the arrays sit above the chosen folder: never found
    (above / "inner").mkdir()
    assert find_one(above / "inner", "images.npy") is None

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "elsewhere").symlink_to(nested, target_is_directory=True)
    hidden = tmp_path / "hidden"
    write_fold(hidden / ".cache")
    assert find_one(linked, "images.npy") is None  # no symlinked folder is followed
    assert find_one(hidden, "images.npy") is None  # nor a hidden one
    with pytest.raises(DatasetError, match="no supported dataset layout"):
        detect_layout(linked)
