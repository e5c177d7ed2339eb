"""segcore.analysis.catalog: bundles in weights/ and runs/, and the persisted active model."""

from __future__ import annotations

import json

import pytest

from segcore.analysis import catalog
from segcore.bundles.card import ModelCard
from segcore.errors import BundleError


def fake_bundle(folder, name="tiny", threshold=0.4):
    """A bundle folder as the catalogue sees it (card + a model file; hashes are not read)."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"not read by the catalogue")
    card = ModelCard(name=name, threshold=threshold, model_sha256="0" * 64)
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
    card = catalog.set_active_ref("other", **dirs)
    assert card.name == "other"
    assert catalog.active_ref(**dirs) == "other"
    assert json.loads((dirs["runs_dir"] / catalog.ACTIVE_FILE).read_text()) == {"ref": "other"}


def test_bad_ref_is_refused_and_nothing_changes(dirs):
    catalog.set_active_ref("other", **dirs)
    with pytest.raises(BundleError, match="nope"):
        catalog.set_active_ref("nope", **dirs)
    assert catalog.active_ref(**dirs) == "other"


def test_vanished_or_corrupt_active_falls_back_to_default(dirs):
    run_bundle = str(dirs["runs_dir"] / "run-a" / "bundle")
    catalog.set_active_ref(run_bundle, **dirs)
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
