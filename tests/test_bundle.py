"""Model bundles: card round-trip, atomic save without optimizer, verified load, refs, listing."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import segcore
from segcore.bundles import card as card_mod
from segcore.bundles import store as store_mod
from segcore.bundles.card import CARD_FILE, ModelCard, SplitFigures, software_versions
from segcore.bundles.loading import Bundle, load_bundle
from segcore.bundles.refs import DEFAULT_BUNDLE, hub_ref, parse_hf_ref, resolve_bundle_ref
from segcore.bundles.store import MODEL_FILE, list_bundles, read_card, save_bundle
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import BundleError, ConfigError, SegcoreError
from segcore.network.model import ModelConfig, build_deeplabv3plus

SMALL = {"aspp_filters": 8, "low_level_filters": 8, "decoder_filters": 8, "aspp_rates": (2, 4)}


def figures(split: str = "validation", dice: float = 0.5, **changes) -> SplitFigures:
    values = {"dice": dice, "jaccard": dice / (2 - dice), "precision": 0.6, "recall": 0.4}
    fields = {"split": split, "threshold": 0.42, "images": 3, "pooled": values, "mean": values}
    fields["evaluated"] = "2025-01-01T00:00:00+00:00"
    return SplitFigures(**{**fields, **changes})


def make_card(name: str = "tiny", **changes) -> ModelCard:
    fields = {
        "name": name,
        "architecture": ModelConfig(**SMALL).to_dict(),
        "input_size": 64,
        "preprocess": PreprocessConfig(equalize="clahe", blur_kernel=5).to_dict(),
        "threshold": 0.42,
        "dataset": {"name": "synthetic", "layout": "pairs", "split": {"train": 4}, "seed": 0},
        "training": {"epochs": 1, "batch_size": 2, "lr": 1e-3, "loss": "bce+dice"},
        "metrics": {"validation": figures()},
        "licence": "cc-by-4.0",
        "created": "2025-01-01T00:00:00+00:00",
    }
    fields.update(changes)
    return ModelCard(**fields)


def weights_h5_groups(model_file: Path) -> list[str]:
    """Top-level groups of model.weights.h5 inside a .keras zip ("optimizer" if saved)."""
    with zipfile.ZipFile(model_file) as archive:
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as weights:
        return sorted(weights.keys())


def run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eager forward pass: much faster than tracing ``predict`` for one small batch."""
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_deeplabv3plus((None, None, 3), **SMALL)


@pytest.fixture(scope="module")
def compiled(model) -> keras.Model:
    """``model`` compiled with Adam whose state exists, as after a training step."""
    # A new functional model over the same layers: compiling it leaves ``model`` uncompiled.
    compiled = keras.Model(model.input, model.output, name=model.name)
    compiled.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    compiled.optimizer.build(compiled.trainable_variables)  # Adam's slot variables
    return compiled


@pytest.fixture(scope="module")
def saved(compiled, tmp_path_factory) -> Path:
    """One bundle saved from the compiled model; tests that alter it work on a copy."""
    return save_bundle(compiled, tmp_path_factory.mktemp("bundles") / "tiny", make_card())


@pytest.fixture()
def copy_of_saved(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


# --- the card ---------------------------------------------------------------------------------


def test_card_roundtrip_keeps_every_field_and_unknown_keys():
    architecture = {**ModelConfig(**SMALL).to_dict(), "backbone_weights": "imagenet"}
    card = make_card(architecture=architecture, model_sha256="ab" * 32)
    assert card.backbone_weights == "imagenet"
    data = card.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert "extra" not in data and data["format_version"] == card_mod.CARD_FORMAT_VERSION
    assert ModelCard.from_dict(data) == card
    assert ModelCard.from_json(card.to_json()) == card

    newer = {**data, "calibration": {"temperature": 1.3}}
    loaded = ModelCard.from_dict(newer)
    assert loaded.extra == {"calibration": {"temperature": 1.3}}
    assert loaded.to_dict() == newer  # written back unchanged


def test_card_defaults_properties_and_versions():
    card = ModelCard(name="defaults")
    assert card.threshold == 0.5 and card.licence == "unspecified" and card.input_size == 256
    assert card.preprocess_config == PreprocessConfig()
    assert card.model_config == ModelConfig()
    assert make_card().preprocess_config == PreprocessConfig(equalize="clahe", blur_kernel=5)
    assert make_card().model_config == ModelConfig(**SMALL)
    assert card.created.endswith("+00:00") and card.created[:4] >= "2025"
    assert set(card.versions) == {"python", "tensorflow", "keras", "numpy", "segcore"}
    assert card.versions == software_versions()
    assert card.versions["keras"] == keras.__version__
    assert card.versions["segcore"] == segcore.__version__
    # an old card without versions does not pretend to come from this interpreter
    assert ModelCard.from_dict({"name": "old"}).versions == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"threshold": 1.5},
        {"threshold": "0.5"},
        {"input_size": 0},
        {"input_size": 64.0},
        {"preprocess": []},
        {"model_sha256": "not-a-hash"},
        {"extra": {"name": "clash"}},
    ],
)
def test_invalid_card_fields_raise_config_error(changes):
    with pytest.raises(ConfigError):
        make_card(**changes)


def test_from_dict_rejects_non_objects_and_nameless_cards():
    with pytest.raises(ConfigError, match="JSON object"):
        ModelCard.from_dict([1, 2])
    with pytest.raises(ConfigError, match="name"):
        ModelCard.from_dict({"threshold": 0.5})
    with pytest.raises(ConfigError, match="malformed JSON"):
        ModelCard.from_json("{not json")


# --- save and load ----------------------------------------------------------------------------


def test_save_load_roundtrip_gives_identical_predictions(model, saved):
    # ``saved`` comes from a compiled model with optimizer state; it reloads uncompiled.
    assert sorted(p.name for p in saved.iterdir()) == [CARD_FILE, MODEL_FILE]
    loaded = load_bundle(saved)
    assert isinstance(loaded, Bundle)
    assert loaded.path == saved
    assert not getattr(loaded.model, "compiled", False)
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(run(loaded.model, x), run(model, x))
    assert loaded.card == dataclasses.replace(make_card(), model_sha256=loaded.card.model_sha256)
    assert loaded.preprocess == PreprocessConfig(equalize="clahe", blur_kernel=5)
    assert loaded.threshold == pytest.approx(0.42)
    assert loaded.input_size == 64


def test_sha256_is_recorded_in_the_card(saved):
    card = json.loads((saved / CARD_FILE).read_text())
    digest = hashlib.sha256((saved / MODEL_FILE).read_bytes()).hexdigest()
    assert card["model_sha256"] == digest
    assert read_card(saved).model_sha256 == digest


@pytest.mark.parametrize("tamper", ["flip", "append", "truncate"])
def test_tampered_model_is_refused_before_loading(copy_of_saved, tamper, monkeypatch):
    path = copy_of_saved / MODEL_FILE
    data = bytearray(path.read_bytes())
    if tamper == "flip":
        data[len(data) // 2] ^= 0xFF
    elif tamper == "append":
        data += b"\0"
    else:
        data = data[:-100]
    path.write_bytes(bytes(data))

    def must_not_load(*args, **kwargs):
        raise AssertionError("load_model called on an unverified file")

    monkeypatch.setattr(keras.saving, "load_model", must_not_load)
    expected = read_card(copy_of_saved).model_sha256
    with pytest.raises(BundleError, match="sha256") as info:
        load_bundle(copy_of_saved)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message


def test_saved_model_has_no_optimizer_state(compiled, saved, tmp_path):
    with_optimizer = tmp_path / "with_optimizer.keras"
    compiled.save(with_optimizer)
    assert "optimizer" in weights_h5_groups(with_optimizer)

    model_file = saved / MODEL_FILE
    assert "optimizer" not in weights_h5_groups(model_file)
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))
    assert not config.get("compile_config")  # {} when uncompiled
    # Adam keeps two slots per trainable weight: the full save is roughly 3× the weights.
    assert model_file.stat().st_size < 0.5 * with_optimizer.stat().st_size
    assert compiled.optimizer.variables  # the caller's model keeps its optimizer
    # Reloading the optimizer-free file is test_save_load_roundtrip_gives_identical_predictions.


def test_overwrite_replaces_bundle_atomically(saved, tmp_path, monkeypatch):
    target = Path(shutil.copytree(saved, tmp_path / "bundles" / "tiny"))
    old_card = read_card(target)

    # A save that fails half-way leaves the old bundle and no temporary folders.
    class Broken:
        def save(self, path):
            Path(path).write_bytes(b"half a model")
            raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_inference_model", lambda m: Broken())
    with pytest.raises(BundleError, match="disk full"):
        save_bundle(object(), target, make_card(name="broken"))
    monkeypatch.undo()
    assert read_card(target) == old_card
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]

    # A real overwrite leaves exactly the new bundle.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    save_bundle(model, target, make_card(name="new", threshold=0.3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]
    assert sorted(p.name for p in target.iterdir()) == [CARD_FILE, MODEL_FILE]
    new_card = store_mod.verify_bundle(target)
    assert new_card.name == "new" and new_card.threshold == 0.3
    assert new_card.model_sha256 != old_card.model_sha256


def test_save_refuses_to_replace_non_bundles(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(model, folder, make_card())
    assert (folder / "notes.txt").read_text() == "keep me"

    save_bundle(model, tmp_path / "b", make_card())
    with pytest.raises(BundleError, match="overwrite=True"):
        save_bundle(model, tmp_path / "b", make_card(), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "results"]


# --- refs -------------------------------------------------------------------------------------


def test_load_by_name_under_custom_weights_dir(saved, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(saved, weights / "mine")
    monkeypatch.chdir(tmp_path)
    assert resolve_bundle_ref("mine", weights_dir=weights) == weights / "mine"
    loaded = load_bundle("mine", weights_dir=weights)
    assert loaded.card.name == "tiny" and loaded.path == weights / "mine"
    # a relative path also works, as a Path or as a string with a separator
    assert resolve_bundle_ref(Path("weights/mine")) == Path("weights/mine")
    assert resolve_bundle_ref("./weights/mine") == Path("weights/mine")


def test_unknown_name_lists_available_bundles(saved, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(saved, weights / "mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError) as info:
        resolve_bundle_ref(DEFAULT_BUNDLE, weights_dir=weights)
    message = str(info.value)
    assert str(weights / DEFAULT_BUNDLE) in message and "mine" in message
    assert "save_bundle" in message


def test_default_weights_dir_is_the_repository_weights_folder():
    repo = Path(segcore.__file__).resolve().parents[1]
    assert repo / "weights" == store_mod.DEFAULT_WEIGHTS_DIR


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf://org/name@" + "a" * 40, ("org/name", "a" * 40)),
        ("hf://org/name@v1.0", ("org/name", "v1.0")),
        ("hf://org/name@refs/pr/1", ("org/name", "refs/pr/1")),
        ("hf://org/name", ("org/name", "main")),
    ],
)
def test_parse_hf_ref(ref, expected):
    assert parse_hf_ref(ref) == expected


@pytest.mark.parametrize("ref", ["hf://", "hf://org/name@", "hf://a/b/c@main", "hf://org/na me"])
def test_parse_hf_ref_rejects_malformed(ref):
    with pytest.raises(BundleError, match="hf://org/name@revision"):
        parse_hf_ref(ref)


def test_hub_ref_adds_the_scheme_and_checks_the_form():
    assert hub_ref("  org/name@abc ") == "hf://org/name@abc"
    assert hub_ref("hf://org/name") == "hf://org/name"
    with pytest.raises(BundleError, match="hf://org/name@revision"):
        hub_ref("not a repo")


# --- missing and malformed bundles -------------------------------------------------------------


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(BundleError, match="not found") as info:
        load_bundle(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_missing_files_name_the_path(copy_of_saved):
    (copy_of_saved / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match="missing") as info:
        load_bundle(copy_of_saved)
    assert str(copy_of_saved / MODEL_FILE) in str(info.value)

    (copy_of_saved / CARD_FILE).unlink()
    with pytest.raises(BundleError, match="not a model bundle") as info:
        load_bundle(copy_of_saved)
    assert str(copy_of_saved / CARD_FILE) in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "malformed JSON"),
        ("[]", "JSON object"),
        ('{"threshold": 0.5}', "name"),
        ('{"name": "x", "threshold": 7}', "threshold"),
        ('{"name": "x", "preprocess": {"equalize": "magic"}}', "equalize"),
        ('{"name": "x"}', "model_sha256 is missing"),
    ],
)
def test_malformed_card_names_the_path(copy_of_saved, content, match):
    (copy_of_saved / CARD_FILE).write_text(content)
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(copy_of_saved)
    assert str(copy_of_saved / CARD_FILE) in str(info.value)
    assert isinstance(info.value, SegcoreError)


def test_unloadable_model_is_a_bundle_error(copy_of_saved):
    path = copy_of_saved / MODEL_FILE
    path.write_bytes(b"not a zip")
    card = read_card(copy_of_saved)
    fixed = {**card.to_dict(), "model_sha256": hashlib.sha256(b"not a zip").hexdigest()}
    (copy_of_saved / CARD_FILE).write_text(json.dumps(fixed))
    with pytest.raises(BundleError, match="could not load") as info:
        load_bundle(copy_of_saved)
    assert str(path) in str(info.value)


def test_a_lambda_layer_is_refused_as_unsafe_not_as_too_new(tmp_path):
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Lambda(lambda x: x[..., :1] * 0.5)(inputs)
    folder = save_bundle(keras.Model(inputs, outputs), tmp_path / "unsafe", make_card())
    with pytest.raises(BundleError, match="refused") as info:
        load_bundle(folder)
    message = str(info.value)
    assert "Lambda layer" in message and "safe mode" in message
    assert "newer segcore" not in message and str(folder / MODEL_FILE) in message


# --- listing ----------------------------------------------------------------------------------


def test_list_bundles_skips_non_bundles_and_reports_problems(saved, tmp_path, caplog):
    root = tmp_path / "weights"
    shutil.copytree(saved, root / "b-good")
    shutil.copytree(saved, root / "a-good")
    shutil.copytree(saved, root / ".a-good.tmp")  # a save in progress
    (root / "not-a-bundle").mkdir()
    (root / "file.txt").write_text("x")
    broken = Path(shutil.copytree(saved, root / "broken"))
    (broken / CARD_FILE).write_text("{")
    incomplete = Path(shutil.copytree(saved, root / "incomplete"))
    (incomplete / MODEL_FILE).unlink()

    problems: list[tuple[Path, str]] = []
    found = list_bundles(root, tmp_path / "missing", problems=problems)
    assert [path.name for path, _ in found] == ["a-good", "b-good"]
    assert all(card.name == "tiny" for _, card in found)
    assert [path.name for path, _ in problems] == ["broken", "incomplete"]
    assert "malformed JSON" in problems[0][1] and "missing" in problems[1][1]
    assert "skipping invalid bundle" in caplog.text
    assert list_bundles(tmp_path / "missing") == []


def test_importing_bundle_and_hub_does_not_load_tensorflow():
    code = (
        "import sys, segcore.bundles.loading, segcore.bundles.hub; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    repo = Path(segcore.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
