"""A dataset folder from a zip (``segcore.data.zip_import``) and the Train page's section that
makes one from the browser (``appkit.dataset_upload``), on tiny zips built in memory."""

from __future__ import annotations

import io
import os
import stat
import struct
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from appkit import access, dataset_upload
from segcore.data import roots
from segcore.data.datasets import open_dataset
from segcore.data.zip_import import (
    STAGING_PREFIX,
    ZipLimits,
    _Budget,
    _copy_capped,
    check_folder_name,
    import_dataset_zip,
)
from segcore.errors import DatasetError
from tests.conftest import REPO


def png(size: int = 16, seed: int = 0, mask: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if mask:
        array = ((rng.random((size, size)) > 0.7) * 255).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".png", array)[1].tobytes()


def pairs(n: int = 4, prefix: str = "") -> dict[str, bytes]:
    """``n`` image/mask pairs in the images/ + masks/ layout, under ``prefix``."""
    files = {}
    for i in range(n):
        files[f"{prefix}images/img_{i}.png"] = png(seed=i)
        files[f"{prefix}masks/img_{i}.png"] = png(seed=i, mask=True)
    return files


def make_zip(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def root(tmp_path) -> Path:
    """Where datasets are made: ``tmp_path/parent/uploads`` (its parent holds a bystander)."""
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "keep.txt").write_text("untouched")
    return tmp_path / "parent" / "uploads"


# --- good zips ---------------------------------------------------------------------------------
def test_a_pairs_zip_becomes_a_dataset_that_opens(root):
    files = {
        **pairs(5),
        "__MACOSX/images/._img_0.png": b"apple",
        ".DS_Store": b"finder",
        "images/.hidden.png": b"not an image",
        "images/": b"",
    }
    made = import_dataset_zip(make_zip(files), "my-set", root, zip_name="lab.zip")
    assert made.folder == root / "my-set" and made.layout == "pairs"
    assert (made.images, made.masks, made.skipped, made.stripped) == (5, 5, 3, None)
    assert sum(made.sizes.values()) == 5 and made.warnings == ()
    assert os.listdir(root) == ["my-set"]  # no staging folder left
    assert tree(root / "my-set") == sorted(
        ["images", "masks", *(f"images/img_{i}.png" for i in range(5))]
        + [f"masks/img_{i}.png" for i in range(5)]
    )
    splits = open_dataset(made.folder)
    image, mask = splits.train.load(0)
    assert image.shape == (16, 16, 3) and mask.shape == (16, 16)


def test_one_top_level_folder_is_stripped_and_backslashes_separate_folders(root, tmp_path):
    files = {name.replace("/", "\\"): data for name, data in pairs(3, "lab-set/").items()}
    path = tmp_path / "lab-set.zip"
    path.write_bytes(make_zip(files))
    made = import_dataset_zip(path, "lab", root)  # a path; named after its file
    assert made.stripped == "lab-set" and made.images == 3
    assert sorted(os.listdir(made.folder)) == ["images", "masks"]


def test_geojson_masks_are_annotations(root):
    """QuPath GeoJSON masks (``masks/<stem>.geojson``) pair with their images like PNGs."""
    pytest.importorskip("segcore.data.annotations")
    square = [[[2, 2], [8, 2], [8, 8], [2, 8], [2, 2]]]
    geojson = (
        b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        b'{"objectType": "annotation"}, "geometry": {"type": "Polygon", "coordinates": '
        + str(square).encode()
        + b"}}]}"
    )
    files = {f"images/img_{i}.png": png(seed=i) for i in range(3)}
    files |= {f"masks/img_{i}.geojson": geojson for i in range(3)}
    made = import_dataset_zip(make_zip(files), "qupath", root)
    assert (made.images, made.masks, made.layout) == (3, 3, "pairs")
    _, mask = open_dataset(made.folder).train.load(0)
    assert mask.sum() == 36


def test_a_presplit_zip_keeps_its_split_folders(root):
    files = {**pairs(3, "train/"), **pairs(2, "test/")}
    made = import_dataset_zip(io.BytesIO(make_zip(files)), "split-set", root)
    assert made.layout == "presplit" and made.stripped is None
    assert (made.images, made.masks) == (5, 5) and made.sizes["test"] == 2
    only_test = import_dataset_zip(make_zip(pairs(2, "test/")), "only-test", root)
    assert only_test.stripped is None and only_test.layout == "presplit"  # test/ is a layout


def test_stale_staging_folders_are_removed(root):
    root.mkdir(parents=True)
    old, fresh = root / f"{STAGING_PREFIX}x-old", root / f"{STAGING_PREFIX}y-new"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    import_dataset_zip(make_zip(pairs(2)), "a", root)
    assert sorted(os.listdir(root)) == sorted(["a", fresh.name])


# --- refused ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../x.png", "'..' in the name"),
        ("images/../../x.png", "'..' in the name"),
        ("/abs.png", "an absolute name"),
        ("C:\\x.png", "a drive letter"),
        ("c:x.png", "a drive letter"),
        ("\\\\server\\share\\x.png", "an absolute name"),
        ("..\\..\\x.png", "'..' in the name"),
        ("images/a\x01.png", "a control character"),
    ],
)
def test_unsafe_member_names_refuse_the_zip_and_write_nothing(root, tmp_path, member, why):
    data = make_zip({**pairs(2), member: png()})
    assert member in zipfile.ZipFile(io.BytesIO(data)).namelist()  # kept as written
    before = tree(tmp_path)
    with pytest.raises(DatasetError, match=r"^evil\.zip: unsafe member name") as caught:
        import_dataset_zip(data, "set", root, zip_name="evil.zip")
    assert why in str(caught.value)
    assert tree(tmp_path) == before and not root.exists()


def test_symlinks_and_special_files_are_refused(root):
    link = zipfile.ZipInfo("images/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("images/pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    for info, match in ((link, "is a symbolic link"), (fifo, "is not a regular file")):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in pairs(2).items():
                archive.writestr(name, data)
            archive.writestr(info, "/etc/passwd")
        with pytest.raises(DatasetError, match=f"links.zip: 'images/.*' {match}"):
            import_dataset_zip(buffer.getvalue(), "set", root, zip_name="links.zip")
        assert not root.exists()


def test_a_highly_compressible_member_is_refused_as_a_bomb(root):
    data = make_zip({**pairs(2), "images/zeros.tif": bytes(17 * 2**20)})
    assert len(data) < 100_000
    with pytest.raises(DatasetError, match=r"bomb\.zip: 'images/zeros\.tif' unpacks to 17\.0 MB"):
        import_dataset_zip(data, "set", root, zip_name="bomb.zip")
    assert not root.exists()
    # the same member is harmless below the floor: an all-background mask compresses that well
    small = make_zip({**pairs(1), "images/zeros.tif": bytes(2**20)})
    with pytest.raises(DatasetError, match="no mask"):  # refused for its missing mask only
        import_dataset_zip(small, "set", root, zip_name="small.zip")


def test_the_declared_total_and_the_entry_count_are_limited_before_writing(root):
    data = make_zip(pairs(4))
    with pytest.raises(DatasetError, match=r"a\.zip: would unpack to .* above the .* limit"):
        import_dataset_zip(
            data, "set", root, zip_name="a.zip", limits=ZipLimits(max_total_bytes=1000)
        )
    with pytest.raises(DatasetError, match=r"a\.zip: 8 entries, above the limit of 5"):
        import_dataset_zip(data, "set", root, zip_name="a.zip", limits=ZipLimits(max_entries=5))
    with pytest.raises(DatasetError, match=r"a\.zip: the zip is .* above the .* limit"):
        import_dataset_zip(data, "set", root, zip_name="a.zip", limits=ZipLimits(max_zip_bytes=100))
    assert not root.exists()


def test_a_member_whose_header_lies_is_refused_and_nothing_is_left(root):
    """The central directory says 100 bytes; the member holds 5,000 (stored)."""
    data = bytearray(make_zip({**pairs(2), "images/liar.png": b"x" * 5000}, zipfile.ZIP_STORED))
    at = data.rfind(b"PK\x01\x02")  # the last member's central directory entry
    assert data[at + 46 : at + 46 + 15] == b"images/liar.png"
    struct.pack_into("<L", data, at + 24, 100)  # its uncompressed size
    header = data.rfind(b"PK\x03\x04", 0, at)  # and its local header's
    struct.pack_into("<L", data, header + 22, 100)
    with pytest.raises(DatasetError, match=r"liar\.zip: 'images/liar\.png' is corrupt"):
        import_dataset_zip(bytes(data), "set", root, zip_name="liar.zip")
    assert os.listdir(root) == []  # the staging folder is gone


def test_extraction_is_a_capped_stream():
    """The second guard behind the headers: more bytes than declared, or than the budget."""
    limits = ZipLimits(max_total_bytes=3 * 2**20)
    with pytest.raises(DatasetError, match="more than the 1,000 bytes its header declares"):
        _copy_capped(io.BytesIO(b"x" * 5000), io.BytesIO(), 1000, _Budget(10**9), "m", "z", limits)
    budget = _Budget(3 * 2**20)
    out = io.BytesIO()
    assert _copy_capped(io.BytesIO(bytes(2**21)), out, 2**22, budget, "a", "z", limits) == 2**21
    with pytest.raises(DatasetError, match=r"z: unpacks to more than the 3\.0 MB limit"):
        _copy_capped(io.BytesIO(bytes(2**21)), out, 2**22, budget, "b", "z", limits)


def test_encrypted_and_duplicate_members_are_refused(root):
    data = bytearray(make_zip({**pairs(2), "images/secret.png": b"ciphertext"}))
    at = data.rfind(b"PK\x01\x02")  # the last member's central directory entry
    data[at + 8] |= 0x1  # its "encrypted" flag
    with pytest.raises(DatasetError, match=r"'images/secret\.png' is encrypted"):
        import_dataset_zip(bytes(data), "set", root, zip_name="s.zip")
    twice = make_zip({**pairs(2), "images\\img_0.png": png()})
    with pytest.raises(DatasetError, match="unpack to the same file"):
        import_dataset_zip(twice, "set", root, zip_name="t.zip")
    assert not root.exists()


def test_a_file_and_a_folder_of_the_same_name_are_refused(root):
    for files in ({"images": b"x", **pairs(2)}, {**pairs(2), "images": b"x"}):
        with pytest.raises(DatasetError, match=r"c\.zip: 'images.*' clashes with"):
            import_dataset_zip(make_zip(files), "set", root, zip_name="c.zip")
        assert os.listdir(root) == []


def test_not_a_zip(root, tmp_path):
    with pytest.raises(DatasetError, match=r"^photo\.zip: not a zip file"):
        import_dataset_zip(png(), "set", root, zip_name="photo.zip")
    truncated = make_zip(pairs(2))[:-30]
    with pytest.raises(DatasetError, match=r"^cut\.zip: not a zip file"):
        import_dataset_zip(truncated, "set", root, zip_name="cut.zip")
    with pytest.raises(DatasetError, match=r"^missing\.zip: cannot be read"):
        import_dataset_zip(tmp_path / "missing.zip", "set", root)
    assert not root.exists()


def test_a_zip_without_images(root):
    data = make_zip({"notes/readme.txt": b"hello", "masks/a.png": png(mask=True)})
    with pytest.raises(DatasetError, match=r"^docs\.zip: holds no images .* outside masks/"):
        import_dataset_zip(data, "set", root, zip_name="docs.zip")
    assert not root.exists()


def test_images_without_masks(root):
    only_images = {n: d for n, d in pairs(3).items() if n.startswith("images/")}
    with pytest.raises(DatasetError, match=r"^i\.zip: images without annotations: images/ has"):
        import_dataset_zip(make_zip(only_images), "set", root, zip_name="i.zip")
    assert os.listdir(root) == []
    files = pairs(3)
    del files["masks/img_1.png"]
    with pytest.raises(DatasetError) as caught:
        import_dataset_zip(make_zip(files), "set", root, zip_name="some.zip")
    message = str(caught.value)
    assert message.startswith("some.zip: the dataset does not open: 1 problem(s):")
    assert "images/img_1.png: no mask in masks" in message
    assert STAGING_PREFIX not in message and str(root) not in message
    assert caught.value.problems[0][0] == "images/img_1.png"
    assert os.listdir(root) == []


def test_flat_files_are_no_layout(root):
    data = make_zip({"a.png": png(), "a_mask.png": png(mask=True)})
    with pytest.raises(DatasetError, match=r"^f\.zip: no dataset layout found.*holds a\.png"):
        import_dataset_zip(data, "set", root, zip_name="f.zip")
    assert os.listdir(root) == []


def test_an_existing_folder_is_never_overwritten(root):
    (root / "taken").mkdir(parents=True)
    (root / "taken" / "mine.txt").write_text("mine")
    (root / "link").symlink_to(root / "taken")
    for name in ("taken", "link"):
        with pytest.raises(DatasetError, match=f"^z.zip: a folder called {name} already exists"):
            import_dataset_zip(make_zip(pairs(2)), name, root, zip_name="z.zip")
    assert tree(root) == ["link", "taken", "taken/mine.txt"]


@pytest.mark.parametrize(
    "name", ["", " ", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "C:x", "x" * 65, "é"]
)
def test_bad_folder_names(root, name):
    with pytest.raises(DatasetError, match=r"^z\.zip: .* is not a plain folder name"):
        import_dataset_zip(make_zip(pairs(1)), name, root, zip_name="z.zip")
    assert not root.exists()


def test_plain_folder_names():
    assert check_folder_name("  MoNuSeg_2018.v2-lab ") == "MoNuSeg_2018.v2-lab"
    assert check_folder_name("x" * 64) == "x" * 64


# --- the app ----------------------------------------------------------------------------------
@pytest.fixture
def uploads_root(tmp_path, monkeypatch) -> Path:
    """A data root ``lab`` in ``tmp_path`` that uploads go into; the runs folder is the test's."""
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={tmp_path / 'lab'}")
    (tmp_path / "roots.toml").write_text("[roots]\n")
    monkeypatch.setenv(roots.DATA_ROOTS_FILE_ENV, str(tmp_path / "roots.toml"))
    monkeypatch.setenv(dataset_upload.UPLOAD_ROOT_ENV, "lab")
    monkeypatch.delenv(access.VIEWER_ENV, raising=False)
    return tmp_path / "lab"


def train_page(open_section: bool = True) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240).run()
    at.switch_page("pages/train.py")
    if open_section:
        at.session_state[dataset_upload.SECTION_KEY] = True
    return at.run()


def test_uploads_go_to_the_uploads_folder_of_the_named_root(uploads_root, monkeypatch):
    assert dataset_upload.upload_folder() == (uploads_root / "uploads").resolve()
    monkeypatch.delenv(dataset_upload.UPLOAD_ROOT_ENV)
    assert dataset_upload.upload_folder() == (REPO / "data" / "uploads").resolve()
    monkeypatch.setenv(dataset_upload.UPLOAD_ROOT_ENV, "nowhere")
    with pytest.raises(DatasetError, match="names 'nowhere', which is not one of the data roots"):
        dataset_upload.upload_folder()


def test_the_train_page_adds_a_folder_and_fills_the_dataset_box(uploads_root):
    closed = train_page(open_section=False)
    assert not closed.exception
    assert next(e.label for e in closed.expander) == "Add a dataset folder from a zip"
    assert not closed.get("file_uploader")  # drawn only when open: the form's widgets come first
    at = train_page()
    assert not at.exception
    at.get("file_uploader")[0].upload(
        "lab tiles.zip", make_zip(pairs(3, "tiles/")), "application/zip"
    )
    at.run()  # an upload reruns the page, as in a browser
    at.text_input(key=dataset_upload.NAME_KEY).set_value("tiles")
    at.button(key=dataset_upload.BUTTON_KEY).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [success] = at.success
    assert "Added **lab/uploads/tiles**: 3 images and 3 masks" in success.value
    assert "`tiles/` was unpacked as the dataset" in success.value
    assert (uploads_root / "uploads" / "tiles" / "images" / "img_0.png").is_file()
    for key in dataset_upload.dataset_keys():
        assert at.session_state[key] == "lab/uploads/tiles"
    assert "lab/uploads/tiles" in [t.value for t in at.text_input]  # the form's dataset box
    at.button(key=dataset_upload.BUTTON_KEY).click().run()  # the same name again
    [error] = at.error
    assert "lab tiles.zip: a folder called tiles already exists in lab/uploads" in error.value


def test_the_train_page_shows_a_refusal_naming_the_zip(uploads_root):
    at = train_page()
    at.get("file_uploader")[0].upload("bad.zip", b"not a zip at all", "application/zip")
    at.run()
    at.text_input(key=dataset_upload.NAME_KEY).set_value("bad")
    at.button(key=dataset_upload.BUTTON_KEY).click().run()
    [error] = at.error
    assert error.value.startswith("Not added: bad.zip: not a zip file")
    assert not (uploads_root / "uploads" / "bad").exists()


def test_viewer_mode_refuses_adding_a_folder(uploads_root, monkeypatch):
    monkeypatch.setenv(access.VIEWER_ENV, "1")
    at = train_page()
    assert not at.exception
    assert any(i.value == dataset_upload.VIEWER_NOTE for i in at.info)
    assert not at.get("file_uploader") and not at.button
    with pytest.raises(access.ViewerModeError, match="Adding a dataset folder is turned off"):
        dataset_upload.add_folder(make_zip(pairs(2)), "set")
    assert not (uploads_root / "uploads").exists()
