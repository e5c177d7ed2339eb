"""Hugging Face Hub: real downloads from a local fake Hub, offline mode, hash checks, uploads.

Downloads go through ``huggingface_hub.hf_hub_download`` for real, against a small HTTP server
on 127.0.0.1 that speaks the part of the Hub protocol it uses (``HEAD``/``GET
/{repo_id}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``; 404 with ``X-Error-Code``). The Hugging Face cache is a temporary folder.
Uploads are tested up to ``HfApi``: a recording stand-in checks the calls and the files.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import keras
import numpy as np
import pytest
from huggingface_hub import constants as hf_constants

from segcore.bundles.card import CARD_FILE, ModelCard, SplitFigures
from segcore.bundles.hub import (
    README_FILE,
    download_bundle,
    hub_cache_dir,
    hub_offline,
    push_bundle,
)
from segcore.bundles.loading import load_bundle
from segcore.bundles.readme import render_readme
from segcore.bundles.store import MODEL_FILE, save_bundle
from segcore.errors import BundleError

REPO_ID = "segcore-test/tiny-bundle"
COMMIT = hashlib.sha1(b"segcore test commit").hexdigest()


class FakeHub(ThreadingHTTPServer):
    """A model repository at one commit (also reachable as ``main``), served on 127.0.0.1."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.files = dict(files)
        self.requests: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
            self.server_close()
            self._thread.join()


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def do_HEAD(self):
        self._respond(with_body=False)

    def do_GET(self):
        self._respond(with_body=True)

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def _error(self, code: str, commit: str | None = None):
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _respond(self, with_body: bool):
        self.server.requests.append((self.command, self.path))
        parts = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve" or "/".join(parts[:2]) != REPO_ID:
            return self._error("RepoNotFound")
        revision, filename = parts[3], "/".join(parts[4:])
        if revision not in ("main", COMMIT):
            return self._error("RevisionNotFound")
        data = self.server.files.get(filename)
        if data is None:
            return self._error("EntryNotFound", COMMIT)
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if with_body:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle with a tiny Dense model (the Hub code does not care what model it is)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")], name="tiny")
    card = ModelCard(
        name="tiny",
        threshold=0.4,
        licence="cc-by-nc-sa-4.0",
        dataset={"name": "MoNuSeg"},
        metrics={
            split: SplitFigures(
                split=split,
                threshold=0.4,
                images=4,
                pooled={"dice": dice, "jaccard": 0.65, "precision": 0.8, "recall": 0.8},
                mean={"dice": dice, "jaccard": 0.65, "precision": 0.8, "recall": 0.8},
            )
            for split, dice in (("validation", 0.8123), ("test", 0.79))
        },
    )
    return save_bundle(model, tmp_path_factory.mktemp("bundle") / "tiny", card)


@pytest.fixture()
def hf_env(tmp_path, monkeypatch) -> Path:
    """A private HF cache and home; online mode, whatever the environment said at import."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when imported; its request hook checks this value.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture()
def hub(tiny_bundle, hf_env, monkeypatch):
    server = FakeHub({name: (tiny_bundle / name).read_bytes() for name in (MODEL_FILE, CARD_FILE)})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def test_environment_is_read_at_call_time(hf_env, monkeypatch):
    assert hub_cache_dir() == hf_env
    assert not hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub_cache_dir() == hf_env.parent / "hf-home" / "hub"


def test_download_then_load_by_hf_ref(hub, tiny_bundle, hf_env):
    folder = download_bundle(REPO_ID, COMMIT)
    assert folder.is_relative_to(hf_env)
    assert folder.name == COMMIT
    for name in (MODEL_FILE, CARD_FILE):
        assert (folder / name).read_bytes() == (tiny_bundle / name).read_bytes()
    paths = {urllib.parse.urlsplit(path).path for _, path in hub.requests}
    assert paths == {f"/{REPO_ID}/resolve/{COMMIT}/{name}" for name in (CARD_FILE, MODEL_FILE)}

    bundle = load_bundle(f"hf://{REPO_ID}@{COMMIT}")
    assert bundle.path == folder
    assert bundle.card.name == "tiny" and bundle.threshold == pytest.approx(0.4)
    x = np.ones((1, 4), np.float32)
    reference = keras.saving.load_model(tiny_bundle / MODEL_FILE)
    np.testing.assert_array_equal(bundle.model(x), reference(x))


def test_unpinned_ref_downloads_main_from_one_commit(hub, hf_env):
    folder = load_bundle(f"hf://{REPO_ID}").path  # no @revision: main
    assert folder.name == COMMIT
    assert (hf_env / f"models--{REPO_ID.replace('/', '--')}" / "refs" / "main").read_text() == (
        COMMIT
    )
    # model.keras is fetched from the commit card.json came from, not from "main" again
    gets = [urllib.parse.urlsplit(path).path for method, path in hub.requests if method == "GET"]
    assert gets == [
        f"/{REPO_ID}/resolve/main/{CARD_FILE}",
        f"/{REPO_ID}/resolve/{COMMIT}/{MODEL_FILE}",
    ]


def test_endpoint_and_cache_dir_arguments(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT")
    cache = tmp_path / "explicit-cache"
    folder = download_bundle(REPO_ID, COMMIT, cache_dir=cache, endpoint=hub.url, token=False)
    assert folder.is_relative_to(cache) and (folder / MODEL_FILE).is_file()


def test_offline_uses_the_cache_without_the_server(hub, hf_env, monkeypatch):
    online = download_bundle(REPO_ID, "main")
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert download_bundle(REPO_ID, COMMIT) == online
    assert download_bundle(REPO_ID, "main") == online  # via the cached refs/main
    assert load_bundle(f"hf://{REPO_ID}@{COMMIT}").card.name == "tiny"
    assert time.monotonic() - start < 5


def test_offline_and_not_cached_fails_quickly_with_advice(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(BundleError) as info:
        load_bundle(f"hf://{REPO_ID}@{COMMIT}")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "local bundle" in message and REPO_ID in message
    assert hub.requests == []


def refused_endpoint() -> str:
    """A Hub URL on 127.0.0.1 where nothing listens: every connection is refused at once, as
    with no network (no test needs a real one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_an_unreachable_hub_fails_at_once_in_one_message(hf_env, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", refused_endpoint())
    start = time.monotonic()
    with pytest.raises(BundleError) as info:
        download_bundle(REPO_ID, "main")
    assert time.monotonic() - start < 5  # huggingface_hub alone retries for ~24 s
    message = str(info.value)
    assert "could not be reached" in message and "Connection refused" in message
    assert "HF_HUB_OFFLINE" not in message  # it is not set: no advice to unset it
    assert capfd.readouterr().err == ""  # none of huggingface_hub's warnings per retry


def test_an_unreachable_hub_uses_the_cache_at_once(hub, hf_env, capfd):
    online = download_bundle(REPO_ID, "main")
    hub.stop()  # its port now refuses connections; HF_HUB_OFFLINE is not set
    capfd.readouterr()
    start = time.monotonic()
    assert download_bundle(REPO_ID, "main") == online  # via the cached refs/main
    assert download_bundle(REPO_ID, COMMIT) == online
    assert time.monotonic() - start < 5
    assert capfd.readouterr().err == ""


def test_an_unreachable_hub_is_one_line_from_the_command_line(hf_env, tmp_path, monkeypatch, capfd):
    from segcore.cli import main
    from tests.conftest import write_png

    monkeypatch.setenv("HF_ENDPOINT", refused_endpoint())
    image = write_png(tmp_path / "tile.png", np.zeros((32, 32, 3), np.uint8))
    start = time.monotonic()
    status = main(
        ["predict", "--model", f"hf://{REPO_ID}@main", "--out", str(tmp_path), str(image)]
    )
    assert time.monotonic() - start < 5
    err = capfd.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"hf://{REPO_ID}@main: card.json is not in the Hugging Face cache" in err


def test_wrong_bytes_from_server_fail_the_sha256_check(hub, hf_env):
    data = bytearray(hub.files[MODEL_FILE])
    data[len(data) // 2] ^= 0xFF
    hub.files[MODEL_FILE] = bytes(data)
    with pytest.raises(BundleError, match="sha256") as info:
        download_bundle(REPO_ID, COMMIT)
    assert MODEL_FILE in str(info.value)
    # the bad file is not left in the cache for the next attempt to trust
    snapshot = next(hf_env.glob(f"models--*/snapshots/{COMMIT}"))
    assert not (snapshot / MODEL_FILE).exists()
    assert not any(p.stat().st_size == len(data) for p in snapshot.parent.parent.glob("blobs/*"))


@pytest.mark.parametrize(
    ("repo_id", "revision", "match"),
    [
        ("segcore-test/other", COMMIT, "repository not found"),
        (REPO_ID, "v9", "revision 'v9' not found"),
    ],
)
def test_unknown_repository_or_revision(hub, repo_id, revision, match):
    with pytest.raises(BundleError, match=match):
        download_bundle(repo_id, revision)


def test_repository_without_card_is_not_a_bundle(hub):
    del hub.files[CARD_FILE]
    with pytest.raises(BundleError, match=f"no {CARD_FILE}"):
        download_bundle(REPO_ID, COMMIT)


# --- upload -----------------------------------------------------------------------------------


class RecordingApi:
    """Stands in for ``HfApi``: records the calls and what upload_folder would send."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))

    def create_branch(self, *args, **kwargs):
        self.calls.append(("create_branch", args, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", (), kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {p.name: p.read_bytes() for p in folder.iterdir()}
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid=COMMIT,
        )


def test_push_bundle_uploads_files_and_readme(tiny_bundle):
    api = RecordingApi()
    commit = push_bundle(tiny_bundle, "org/nuclei", token="hf_x", private=True, api=api)
    assert commit == COMMIT
    names = [name for name, _, _ in api.calls]
    assert names == ["create_repo", "upload_folder"]
    _, args, kwargs = api.calls[0]
    assert args == ("org/nuclei",)
    assert kwargs == {"token": "hf_x", "private": True, "repo_type": "model", "exist_ok": True}
    upload = api.calls[1][2]
    assert upload["repo_id"] == "org/nuclei" and upload["repo_type"] == "model"
    assert upload["revision"] is None and upload["token"] == "hf_x"
    assert set(upload["allow_patterns"]) == {MODEL_FILE, CARD_FILE, README_FILE}
    assert set(api.uploaded) == {MODEL_FILE, CARD_FILE, README_FILE}
    for name in (MODEL_FILE, CARD_FILE):
        assert api.uploaded[name] == (tiny_bundle / name).read_bytes()
    readme = api.uploaded[README_FILE].decode()
    assert readme.startswith('---\nlicense: "cc-by-nc-sa-4.0"\n')
    assert "## Licence\n\ncc-by-nc-sa-4.0" in readme and "MoNuSeg" in readme
    assert "| validation | 4 | 0.4 | 0.8123 | 0.6500 | 0.8000 | 0.8000 |" in readme
    assert "| test | 4 | 0.4 | 0.7900 |" in readme
    assert 'load_bundle("hf://org/nuclei@<commit>")' in readme
    assert not (tiny_bundle / README_FILE).exists()  # nothing written into the bundle


def test_push_bundle_to_a_branch(tiny_bundle):
    api = RecordingApi()
    push_bundle(tiny_bundle, "org/nuclei", revision="v2", api=api)
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1][1:] == (
        ("org/nuclei",),
        {"branch": "v2", "token": None, "repo_type": "model", "exist_ok": True},
    )
    assert api.calls[2][2]["revision"] == "v2"


def test_push_bundle_uses_hfapi_by_default(tiny_bundle, monkeypatch):
    recorder = RecordingApi()
    created = []

    def fake_init(self, endpoint=None, token=None, **kwargs):
        created.append({"endpoint": endpoint, "token": token})

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", fake_init)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: recorder.create_repo(*a, **k)
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **k: recorder.upload_folder(**k)
    )
    assert push_bundle(tiny_bundle, "org/nuclei", token="hf_y") == COMMIT
    assert created == [{"endpoint": "http://127.0.0.1:9", "token": "hf_y"}]
    assert [name for name, _, _ in recorder.calls] == ["create_repo", "upload_folder"]


def test_push_refuses_a_corrupt_bundle(tiny_bundle, tmp_path):
    folder = Path(shutil.copytree(tiny_bundle, tmp_path / "bad"))
    with (folder / MODEL_FILE).open("ab") as handle:
        handle.write(b"x")
    api = RecordingApi()
    with pytest.raises(BundleError, match="sha256"):
        push_bundle(folder, "org/nuclei", api=api)
    assert api.calls == []


def test_push_failure_is_a_bundle_error(tiny_bundle):
    class FailingApi(RecordingApi):
        def create_repo(self, *args, **kwargs):
            raise OSError("403 Forbidden")

    with pytest.raises(BundleError, match="403 Forbidden"):
        push_bundle(tiny_bundle, "org/nuclei", api=FailingApi())


@pytest.mark.parametrize(
    ("licence", "front"),
    [
        ("unspecified", 'license: "unknown"\n'),
        ("MIT", 'license: "mit"\n'),
        (
            "CC BY-NC-SA 4.0 (MoNuSeg)",
            'license: "other"\nlicense_name: "cc-by-nc-sa-4-0-monuseg"\n',
        ),
    ],
)
def test_readme_licence_metadata(licence, front):
    readme = render_readme(ModelCard(name="m", licence=licence), "org/m")
    assert readme.startswith("---\n" + front)
    assert f"## Licence\n\n{licence}" in readme
    assert "No metrics were recorded." in readme
