"""segcore.analysis.catalog: bundles in weights/ and runs/, and the persisted active model."""

from __future__ import annotations

import errno
import hashlib
import json

import pytest

from segcore.analysis import catalog
from segcore.bundles.card import ModelCard
from segcore.errors import BundleError


def fake_bundle(folder, name="tiny", threshold=0.4):
    """A bundle folder as the catalogue sees it: a card and a model file whose SHA-256 matches
    it (Keras cannot load it: tests switch to it with ``load=False``)."""
    folder.mkdir(parents=True)
    data = f"not a Keras model: {name}".encode()
    (folder / "model.keras").write_bytes(data)
    card = ModelCard(name=name, threshold=threshold, model_sha256=hashlib.sha256(data).hexdigest())
    (folder / "card.json").write_text(card.to_json())
    return folder


@pytest.fixture()
def dirs(tmp_path):
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    fake_bundle(weights / "default", name="committed")
    fake_bundle(weights / "other", name="other")
    (runs / "run-a").mkdir(parents=True)
    (runs / "run-a" / "status.json").write_text(json.dumps({"state": "completed"}))
    fake_bundle(runs / "run-a" / "bundle", name="trained")
    (runs / "run-b").mkdir()  # a run without a bundle
    (runs / "run-b" / "status.json").write_text(json.dumps({"state": "failed"}))
    return {"weights_dir": weights, "runs_dir": runs}


def test_available_bundles_lists_weights_then_runs(dirs):
    entries = catalog.available_bundles(**dirs)
    assert [(e.card.name, e.source) for e in entries] == [
        ("committed", "weights"),
        ("other", "weights"),
        ("trained", "run"),
    ]
    assert entries[0].ref == "default"
    assert entries[2].ref == str(dirs["runs_dir"] / "run-a" / "bundle")


def test_invalid_bundle_is_reported_not_listed(dirs):
    broken = dirs["weights_dir"] / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    problems = []
    names = [e.card.name for e in catalog.available_bundles(**dirs, problems=problems)]
    assert "broken" not in names and len(names) == 3
    assert problems and problems[0][0] == broken


def test_active_defaults_then_persists(dirs):
    assert catalog.active_ref(**dirs) == catalog.DEFAULT_REF
    card = catalog.set_active_ref("other", **dirs, load=False)
    assert card.name == "other"
    assert catalog.active_ref(**dirs) == "other"
    assert json.loads((dirs["runs_dir"] / catalog.ACTIVE_FILE).read_text()) == {"ref": "other"}


def test_bad_ref_is_refused_and_nothing_changes(dirs):
    catalog.set_active_ref("other", **dirs, load=False)
    with pytest.raises(BundleError, match="nope"):
        catalog.set_active_ref("nope", **dirs, load=False)
    assert catalog.active_ref(**dirs) == "other"


def test_a_tampered_bundle_is_refused_and_nothing_changes(dirs):
    """Switching checks model.keras's SHA-256 (not only card.json) before recording anything."""
    catalog.set_active_ref("other", **dirs, load=False)
    recorded = (dirs["runs_dir"] / catalog.ACTIVE_FILE).read_bytes()
    tampered = dirs["runs_dir"] / "run-a" / "bundle" / "model.keras"
    tampered.write_bytes(tampered.read_bytes().replace(b"trained", b"Trained"))
    for load in (False, True):  # the hash fails before Keras is imported
        with pytest.raises(BundleError, match="sha256 mismatch"):
            catalog.set_active_ref(str(tampered.parent), **dirs, load=load)
    assert (dirs["runs_dir"] / catalog.ACTIVE_FILE).read_bytes() == recorded
    assert catalog.active_ref(**dirs) == "other"


def test_a_read_only_runs_folder_is_one_clear_error_and_nothing_changes(dirs, monkeypatch):
    catalog.set_active_ref("other", **dirs, load=False)

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(catalog, "write_text_atomic", read_only)
    with pytest.raises(BundleError) as info:
        catalog.set_active_ref("default", **dirs, load=False)
    message = str(info.value)
    assert catalog.ACTIVE_FILE in message and "Read-only file system" in message
    assert "the active model stays other" in message
    assert catalog.active_ref(**dirs) == "other"


def test_vanished_or_corrupt_active_falls_back_to_default(dirs):
    run_bundle = str(dirs["runs_dir"] / "run-a" / "bundle")
    catalog.set_active_ref(run_bundle, **dirs, load=False)
    assert catalog.active_ref(**dirs) == run_bundle
    (dirs["runs_dir"] / "run-a" / "bundle" / "card.json").unlink()
    (dirs["runs_dir"] / "run-a" / "bundle" / "model.keras").unlink()
    (dirs["runs_dir"] / "run-a" / "bundle").rmdir()
    assert catalog.active_ref(**dirs) == catalog.DEFAULT_REF
    (dirs["runs_dir"] / catalog.ACTIVE_FILE).write_text("{garbage")
    assert catalog.active_ref(**dirs) == catalog.DEFAULT_REF


def test_same_bundle(dirs):
    weights = dirs["weights_dir"]
    assert catalog.same_bundle("other", str(weights / "other"), weights_dir=weights)
    assert not catalog.same_bundle("other", "default", weights_dir=weights)
    assert not catalog.same_bundle("hf://a/b@main", "default", weights_dir=weights)
    assert catalog.describe_ref(str(dirs["runs_dir"] / "run-a" / "bundle")) == "run-a/bundle"
    assert catalog.describe_ref("default") == "default"


def test_display_path_never_shows_the_servers_absolute_path(tmp_path):
    from segcore.analysis.catalog import display_path
    from segcore.paths import REPO_ROOT

    assert display_path(REPO_ROOT / "weights" / "default") == "weights/default"
    shown = display_path(tmp_path / "runs" / "r1" / "bundle")
    assert shown == "r1/bundle" and str(tmp_path) not in shown
