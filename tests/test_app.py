"""Every page of the Streamlit app through AppTest (no browser), with the real default model.

Each test gets its own runs folder (``SEGCORE_RUNS_DIR``), so the active-model file and
training runs never touch the repository's ``runs/``. The model is loaded once per test
process (``st.cache_resource``), as in the app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score
from streamlit.testing.v1 import AppTest

from appkit import access
from segcore.analysis import catalog
from segcore.data import roots, samples
from segcore.data.synthetic import generate_tile
from segcore.training import jobs
from segcore.training.runs import FINAL_STATES, RunDir
from tests.conftest import REPO, make_pairs_dataset

TIMEOUT = 240


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(runs))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return runs


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """Makes ``tmp_path`` a data root (named after it), so tests may open folders in it."""
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, str(tmp_path))
    return tmp_path


def app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)


def page(path: str) -> AppTest:
    at = app().run()
    return at.switch_page(path).run()


def png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = array[..., ::-1]
    return cv2.imencode(".png", np.ascontiguousarray(array))[1].tobytes()


def readouts(at: AppTest) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for metric in at.metric:
        values.setdefault(metric.label, []).append(metric.value)
    return values


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def reference():
    """The default bundle's probabilities for one synthetic tile, computed outside the app."""
    from segcore.bundles.loading import load_bundle
    from segcore.inference.predict import predict_probabilities

    image, truth = generate_tile([7, 7], 256)
    bundle = load_bundle("default")
    probabilities = predict_probabilities(bundle.model, image, bundle.preprocess)
    return image, truth, probabilities, bundle.threshold


def expected(truth, probabilities, threshold):
    pred = (probabilities >= threshold).astype(np.uint8).ravel()
    return f1_score(truth.ravel(), pred), jaccard_score(truth.ravel(), pred)


def predict_upload(image: np.ndarray, truth: np.ndarray) -> AppTest:
    """The Predict page with ``image`` and its 0/1 ``truth`` uploaded (as PNG files)."""
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload("tile.png", png(image), "image/png")
    at.file_uploader(key="upload_mask").upload("tile_mask.png", png(truth * 255), "image/png")
    return at.run()


def test_home_renders_without_tensorflow():
    at = app().run()
    assert_clean(at)
    assert "Nuclei segmentation" in at.title[0].value
    assert any("Active model" in c.value for c in at.sidebar.caption)
    # This process has TensorFlow loaded by other tests: render the landing page in a fresh one.
    code = (
        "import sys; from streamlit.testing.v1 import AppTest; "
        f"at = AppTest.from_file({str(REPO / 'app.py')!r}, default_timeout=60).run(); "
        "assert not at.exception, at.exception; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_predict_sample_mode_renders_metrics_for_the_first_test_tile():
    at = page("pages/predict.py")
    assert_clean(at)
    assert at.radio(key="predict_mode").value == "Sample"
    # A fresh clone opens on the built-in real samples (MoNuSeg test crops).
    assert at.selectbox(key="sample_id").value == samples.open_source(samples.BUILT_IN).test.ids[0]
    labels = readouts(at)
    assert len(labels["Dice"]) == 3  # thresholds A and B, and the classical baseline
    # short labels (the truth's count in the help and under the rows): nothing is cut off
    assert len(labels["Nuclei (predicted)"]) == 3
    truth = samples.open_source(samples.BUILT_IN).test.load_truth(0)[1]
    from segcore.metrics.labels import ground_truth_instances

    n_true = int(ground_truth_instances(truth)[0].max())
    counts = [m for m in at.metric if m.label == "Nuclei (predicted)"]
    assert all(f"The ground truth has {n_true:,d} nuclei" in m.help for m in counts)
    # which runtime produced the figures is said by the read-outs
    assert any(
        c.value == f"Predicted with **keras** · ground truth: {n_true:,d} nuclei."
        for c in at.caption
    )
    assert len(at.get("plotly_chart")) == 2  # the threshold curve and the nuclei histograms
    # the sidebar says which runtime runs (the suite runs keras: SEGCORE_RUNTIME in conftest)
    assert any("Runtime:** keras (TensorFlow float32" in c.value for c in at.sidebar.caption)
    assert any("runtime keras" in c.value for c in at.caption)


def test_predict_nuclei_section_matches_the_library_and_follows_the_sliders():
    from segcore.bundles.loading import load_bundle
    from segcore.inference.instances import InstanceConfig, label_instances
    from segcore.inference.predict import predict_probabilities
    from segcore.metrics.instances import instance_scores
    from segcore.metrics.labels import ground_truth_instances

    at = page("pages/predict.py")
    assert_clean(at)
    splits = samples.open_source(samples.BUILT_IN)
    image, truth = splits.test.load_truth(0)
    bundle = load_bundle("default")
    probs = predict_probabilities(bundle.model, image, bundle.preprocess)
    truth_labels, _ = ground_truth_instances(truth)

    def expected(config):
        labels = label_instances(probs, bundle.threshold, config, pixel_size=0.25)
        return labels, instance_scores(truth_labels, labels)

    labels, scores = expected(bundle.instances)
    shown = readouts(at)
    assert shown["Nuclei"] == [f"{labels.max():,d}"]
    assert shown["PQ"] == [f"{scores.pq:.3f}"] and shown["AJI"] == [f"{scores.aji:.3f}"]
    assert shown["Detection F1"] == [f"{scores.f1:.3f}"]
    [f1] = [m for m in at.metric if m.label == "Detection F1"]
    assert f"ground truth's {truth_labels.max():,d}" in f1.help
    density = labels.max() / (512 * 512 * 0.25**2 / 1e6)
    assert shown["Density (/mm²)"] == [f"{density:,.0f}"]
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == min(200, labels.max())
    # the table's headers carry the units, its numbers fixed decimals
    columns = json.loads(at.dataframe[0].proto.columns)
    assert columns["area_um2"] == {
        "label": "Area (µm²)",
        "type_config": {"type": "number", "format": "%.1f"},
    }
    assert columns["circularity"]["type_config"]["format"] == "%.3f"
    assert columns["centroid_x"]["label"] == "Centroid x (px)"
    # Splitting less (a deep split threshold) merges touching nuclei: fewer, from the cache.
    slider = next(s for s in at.slider if s.label == "Split depth (µm)")
    slider.set_value(3.0).run()
    assert_clean(at)
    merged, _ = expected(InstanceConfig(bundle.instances.min_area_um2, 3.0))
    assert readouts(at)["Nuclei"] == [f"{merged.max():,d}"] and merged.max() < labels.max()
    labels_shown = [b.label for b in at.get("download_button")]
    assert {"Nuclei GeoJSON (QuPath)", "Nucleus labels PNG (16-bit)", "Nuclei CSV"} <= set(
        labels_shown
    )


def test_predict_says_which_runtime_produced_the_figures_when_it_changes(monkeypatch):
    """Keras predicts until the fast runtime is ready; then the read-outs say the shown
    figures are still Keras's and offer to predict again, and once predicted again they say
    so (the figures move slightly) instead of changing without a word."""
    import dataclasses

    from appkit import state
    from segcore.bundles.loading import load_bundle
    from segcore.inference.runtimes.keras_runtime import keras_runtime

    at = page("pages/predict.py")
    assert_clean(at)
    assert any(c.value.startswith("Predicted with **keras** · ") for c in at.caption)
    assert not [b for b in at.button if b.label == "Predict again"]
    # the fast runtime became ready while the image was shown (a slider moves: same figures)
    runtime_name = state.runtime_name
    monkeypatch.setattr(state, "runtime_name", lambda bundle: "openvino-int8")
    next(s for s in at.slider if s.label == "Threshold B").set_value(0.6).run()
    assert_clean(at)
    assert any(
        "**openvino-int8** is ready now: these figures are still keras's" in c.value
        for c in at.caption
    )
    [again] = [b for b in at.button if b.label == "Predict again"]
    # predicting again uses it (a stand-in: Keras under the fast runtime's name)
    fast = dataclasses.replace(keras_runtime(load_bundle("default").model), name="openvino-int8")
    monkeypatch.setattr(state, "runtime_name", runtime_name)  # the real one: asks the model
    monkeypatch.setattr(state, "predicting_model", lambda bundle: fast)
    again.click().run()
    assert_clean(at)
    [line] = [c.value for c in at.caption if c.value.startswith("Predicted with")]
    assert line.startswith(
        "Predicted with **openvino-int8** (predicted again once it was ready: the keras "
        "figures shown before for this image differ slightly)"
    )
    assert not [b for b in at.button if b.label == "Predict again"]
    assert any("runtime openvino-int8" in c.value for c in at.caption)  # the image's caption


def test_magnification_control_predicts_at_the_chosen_pixel_size(reference):
    from segcore.bundles.loading import load_bundle
    from segcore.inference.resolution import predict_at_pixel_size
    from segcore.metrics.counts import dice as dice_of

    image, truth, probabilities, _ = reference
    at = predict_upload(image, truth)
    control = next(r for r in at.radio if r.label == "Magnification")
    assert control.value.startswith("Auto")  # a PNG records no pixel size: estimated
    assert any("pixel size estimated from the nuclei: 0.25 µm/px" in c.value for c in at.caption)
    a = next(s for s in at.slider if s.label == "Threshold A").value
    assert readouts(at)["Dice"][0] == f"{dice_of(truth, probabilities >= a):.3f}"  # as is
    control.set_value("20× (0.5 µm/px)").run()
    assert_clean(at)
    assert any("at 0.5 µm/px" in c.value for c in at.caption)
    bundle = load_bundle("default")
    at_20x = predict_at_pixel_size(
        bundle.model, image, bundle.preprocess, pixel_size=0.5, model_pixel_size=0.25
    )
    a = next(s for s in at.slider if s.label == "Threshold A").value
    assert readouts(at)["Dice"][0] == f"{dice_of(truth, at_20x >= a):.3f}"
    assert readouts(at)["Dice"][0] != f"{dice_of(truth, probabilities >= a):.3f}"


def test_test_time_flips_box_predicts_the_mean_of_four_mirror_images(reference):
    from segcore.bundles.loading import load_bundle
    from segcore.inference.flips import with_flips
    from segcore.inference.predict import predict_probabilities
    from segcore.metrics.counts import dice as dice_of

    image, truth, probabilities, _ = reference
    at = predict_upload(image, truth)
    next(r for r in at.radio if r.label == "Magnification").set_value("40× (0.25 µm/px)").run()
    box = next(c for c in at.checkbox if c.label == "Test-time flips")
    assert box.value is False and not any("flips" in c.value for c in at.caption)
    a = next(s for s in at.slider if s.label == "Threshold A").value
    assert readouts(at)["Dice"][0] == f"{dice_of(truth, probabilities >= a):.3f}"
    box.check().run()
    assert_clean(at)
    assert any("runtime keras, mean of 4 flips" in c.value for c in at.caption)
    bundle = load_bundle("default")
    flipped = predict_probabilities(with_flips(bundle.model), image, bundle.preprocess)
    assert not np.allclose(flipped, probabilities, atol=1e-3)
    assert readouts(at)["Dice"][0] == f"{dice_of(truth, flipped >= a):.3f}"


def test_predict_three_random_samples_gallery():
    at = page("pages/predict.py")
    at.button(key="random_button").click().run()
    assert_clean(at)
    explore = [b for b in at.button if b.label.startswith("Explore ")]
    assert len(explore) == 3
    target = explore[1].label.removeprefix("Explore ")
    explore[1].click().run()
    assert at.selectbox(key="sample_id").value == target


def test_upload_then_slider_changes_dice_to_segcores_value(reference):
    image, truth, probabilities, threshold = reference
    at = predict_upload(image, truth)
    assert_clean(at)
    slider_a = next(s for s in at.slider if s.label == "Threshold A")
    assert slider_a.value == pytest.approx(round(threshold, 2))
    dice, jaccard = expected(truth, probabilities, slider_a.value)
    assert readouts(at)["Dice"][0] == f"{dice:.3f}"
    assert readouts(at)["Jaccard"][0] == f"{jaccard:.3f}"
    before = readouts(at)["Dice"][0]

    slider_a.set_value(0.2).run()
    dice, jaccard = expected(truth, probabilities, 0.2)
    assert readouts(at)["Dice"][0] == f"{dice:.3f}" != before
    assert readouts(at)["Jaccard"][0] == f"{jaccard:.3f}"
    # Threshold B is independent and shows its difference from A.
    dice_b, _ = expected(truth, probabilities, 0.5)
    assert readouts(at)["Dice"][1] == f"{dice_b:.3f}"
    # The classical baseline's row, at Otsu's threshold, computed here independently.
    from segcore.inference.classical import ClassicalBaseline
    from segcore.metrics.counts import dice as dice_of

    baseline = dice_of(truth, ClassicalBaseline().probabilities(image) >= 0.5)
    assert readouts(at)["Dice"][2] == f"{baseline:.3f}"


def test_upload_without_mask_explains_missing_metrics(reference):
    image = reference[0]
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload("tile.png", png(image), "image/png").run()
    assert_clean(at)
    assert "Dice" not in readouts(at)
    assert len(readouts(at)["Nuclei (predicted)"]) == 3  # A, B and the classical baseline
    assert any("no ground-truth mask" in c.value for c in at.caption)


def test_bad_upload_shows_error_and_page_keeps_working(reference):
    image, truth = reference[0], reference[1]
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload(
        "broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"
    )
    at.run()
    assert not at.exception
    assert at.error and "broken.png" in at.error[0].value
    uploader = at.file_uploader(key="upload_image")
    uploader.set_value(("tile.png", png(image), "image/png"))
    at.file_uploader(key="upload_mask").upload(
        "wrong.png", png(truth[:100, :100] * 255), "image/png"
    )
    at.run()
    assert not at.exception
    assert "wrong.png" in at.error[0].value and "256×256" in at.error[0].value
    at.file_uploader(key="upload_mask").set_value(None).run()
    assert_clean(at)
    assert "Nuclei (predicted)" in readouts(at)


def test_a_decompression_bomb_upload_gets_one_message():
    """A 30,000 × 30,000 PNG header on a file of a few hundred bytes: Pillow refuses to open it,
    before the app's own 64-megapixel check; the page answers in one message."""
    from tests.test_fuzz_images import _png_with_size

    bomb = _png_with_size(png(np.zeros((4, 4, 3), np.uint8)), 30_000, 30_000)
    assert len(bomb) < 1_000_000
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload("bomb.png", bomb, "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    [error] = [e.value for e in at.error]
    assert "bomb.png" in error and "megapixels" in error


def test_a_file_pixel_size_outside_the_range_is_reported_and_not_used():
    """A TIFF whose metadata says 0.005 µm/px: the page says so, pre-selects nothing from it,
    and the custom µm/px box takes the one range."""
    import io

    from PIL import Image

    image = generate_tile([3, 3], 64)[0]
    buffer = io.BytesIO()
    ome = '<OME><Image><Pixels PhysicalSizeX="0.005"/></Image></OME>'
    Image.fromarray(image).save(buffer, format="TIFF", description=ome)
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    at.file_uploader(key="upload_image").upload("fine.tif", buffer.getvalue(), "image/tiff")
    at.run()
    assert_clean(at)
    assert any("0.005 µm/px, outside [0.01, 10] µm/px: not used" in c.value for c in at.caption)
    [radio] = [r for r in at.radio if r.label == "Magnification"]
    assert radio.value.startswith("Auto")  # nothing usable recorded
    radio.set_value("Custom µm/px").run()
    assert_clean(at)
    [box] = [n for n in at.number_input if n.label == "µm per pixel"]
    assert (box.min, box.max, box.value) == (0.01, 10.0, 0.25)


def test_evaluate_a_dataset_folder_and_open_the_worst_in_predict(tmp_path, data_root):
    folder = make_pairs_dataset(tmp_path / "pairs", n=12, size=64)
    at = page("pages/evaluate.py")
    at.radio(key="source_kind").set_value("folder").run()
    at.text_input(key="source_input").set_value(str(folder))
    next(b for b in at.button if b.label == "Use this source").click().run()
    assert_clean(at)
    next(b for b in at.button if b.label.startswith("Evaluate")).click().run()
    assert_clean(at)
    labels = readouts(at)
    pooled = float(labels["Pooled Dice"][0])
    assert 0.0 <= pooled <= 1.0
    assert len(at.dataframe) == 1
    opens = [b for b in at.button if b.label == "Open in Predict"]
    assert opens
    opens[0].click().run()
    assert_clean(at)
    assert at.title[0].value == "Predict"
    assert at.selectbox(key="sample_id").value.startswith("img_")


def test_evaluate_the_classical_baseline(tmp_path, data_root):
    from segcore.data.datasets import open_dataset
    from segcore.evaluation.evaluate import evaluate
    from segcore.inference.classical import ClassicalBaseline

    folder = make_pairs_dataset(tmp_path / "pairs", n=12, size=64)
    at = page("pages/evaluate.py")
    at.radio(key="source_kind").set_value("folder").run()
    at.text_input(key="source_input").set_value(str(folder))
    next(b for b in at.button if b.label == "Use this source").click().run()
    at.radio(key="eval_model").set_value("Classical baseline").run()
    assert next(s for s in at.slider if s.label == "Threshold").value == 0.5
    next(b for b in at.button if b.label.startswith("Evaluate")).click().run()
    assert_clean(at)
    split = open_dataset(folder).split("test")
    expected = evaluate(ClassicalBaseline(), split, None, threshold=0.5)
    shown = readouts(at)
    assert shown["Pooled Dice"][0] == f"{expected.pooled['dice']:.3f}"
    assert shown["Mean PQ per image"][0] == f"{expected.instances['mean_pq']:.3f}"
    assert shown["Mean AJI per image"][0] == f"{expected.instances['mean_aji']:.3f}"


def choose_folder(at: AppTest, text: str) -> AppTest:
    """Types ``text`` into the source picker's folder box and presses "Use this source"."""
    at.radio(key="source_kind").set_value("folder").run()
    at.text_input(key="source_input").set_value(text)
    next(b for b in at.button if b.label == "Use this source").click().run()
    return at


def test_a_folder_outside_the_data_roots_is_refused_with_one_message(tmp_path):
    outside = make_pairs_dataset(tmp_path / "pairs", n=6, size=64)  # tmp_path is no root here
    refusal = f"Cannot use this folder: {roots.refusal_message(roots.data_roots())}"
    at = page("pages/evaluate.py")
    long_names = ["a" * 300, "data/" + "a" * 5000, "x\x00y"]  # ENAMETOOLONG, NUL
    for text in [str(outside), str(tmp_path / "missing"), "/etc", "../../", "~", "samples/../.."]:
        choose_folder(at, text)
        assert not at.exception
        assert [e.value for e in at.error] == [refusal], text
    at = page("pages/predict.py")
    for text in long_names:
        choose_folder(at, text)
        assert not at.exception
        assert [e.value for e in at.error] == [refusal], text
    assert str(tmp_path) not in refusal and "/etc" not in refusal
    assert "samples/" in at.text_input(key="source_input").label  # the box names the roots
    assert any("built-in samples" in e.label for e in at.expander)  # the source is unchanged


def test_a_folder_inside_a_configured_root_opens_with_files_named_relative_to_it(
    tmp_path, monkeypatch
):
    root = tmp_path / "shared"
    make_pairs_dataset(root / "pairs", n=12, size=64)
    broken = make_pairs_dataset(root / "broken", n=3, size=64)
    (broken / "masks" / "img_001.png").unlink()
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={root}")
    at = page("pages/evaluate.py")
    choose_folder(at, "lab/pairs")
    assert_clean(at)
    assert "lab/" in at.text_input(key="source_input").label
    assert any("the dataset at lab/pairs" in e.label for e in at.expander)
    assert any(b.label.startswith("Evaluate ") for b in at.button)
    choose_folder(at, "lab/broken")
    assert not at.exception
    assert len(at.error) == 1 and "lab/broken/images/img_001.png" in at.error[0].value
    assert str(tmp_path) not in at.error[0].value


def test_training_from_the_browser_gets_the_real_folder_inside_a_root(
    tmp_path, monkeypatch, data_root
):
    from segcore.errors import DatasetError
    from segcore.training.config import TrainConfig

    started = []
    monkeypatch.setattr(jobs, "start_training", lambda config: started.append(config["data"]))
    folder = make_pairs_dataset(tmp_path / "pairs", n=8, size=64)
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    access.start_training(TrainConfig(data=f"{tmp_path.name}/link"))
    access.start_training(TrainConfig(data="synthetic"))
    assert started == [str(folder), "synthetic"]
    with pytest.raises(DatasetError, match="Not an available dataset folder"):
        access.start_training(TrainConfig(data="/etc"))
    assert len(started) == 2


def test_train_page_refuses_a_dataset_outside_the_roots_before_starting(tmp_path, isolated_runs):
    outside = make_pairs_dataset(tmp_path / "pairs", n=8, size=64)
    refusal = f"Invalid training settings: {roots.refusal_message(roots.data_roots())}"
    at = page("pages/train.py")
    for text in [str(outside), "/etc", "../../", "a" * 300, "data/" + "a" * 5000, "x\x00y"]:
        at.text_input[0].set_value(text)
        at.button[0].click().run()  # the form's submit button
        assert not at.exception
        assert [e.value for e in at.error] == [refusal], text
    assert jobs.running_job(isolated_runs) is None and jobs.list_jobs(isolated_runs) == []


def test_viewer_mode_offers_no_training_no_hub_and_no_model_switch(isolated_runs, monkeypatch):
    import shutil

    from appkit import state
    from segcore.training.config import TrainConfig

    monkeypatch.setenv(access.VIEWER_ENV, "1")
    copy = isolated_runs / "run-x" / "bundle"
    shutil.copytree(REPO / "weights" / "default", copy)
    (isolated_runs / "run-x" / "status.json").write_text('{"state": "completed"}')
    at = page("pages/train.py")
    assert_clean(at)
    assert any(access.VIEWER_NOTE in i.value for i in at.info)
    labels = [b.label for b in at.button]
    assert "Start training" not in labels and "Use this model" not in labels
    assert "Watch" in labels  # watching stays
    at.switch_page("pages/models.py").run()
    assert_clean(at)
    assert any(access.VIEWER_NOTE in i.value for i in at.info)
    labels = [b.label for b in at.button]
    assert "Use this model" not in labels and "Download and use" not in labels
    assert not at.text_input  # no Hub box
    # The functions behind those buttons refuse as well.
    with pytest.raises(access.ViewerModeError):
        access.start_training(TrainConfig())
    with pytest.raises(access.ViewerModeError):
        state.switch_model(str(copy))
    with pytest.raises(access.ViewerModeError):
        access.stop_training(isolated_runs / "run-x")
    assert catalog.active_ref() == catalog.DEFAULT_REF
    assert [j["run_id"] for j in jobs.list_jobs(isolated_runs)] == ["run-x"]


def test_models_page_lists_the_default_and_refuses_offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = page("pages/models.py")
    assert_clean(at)
    assert any("default" in e.label for e in at.expander)
    # the active model's runtimes on this CPU: the gate's table, or why there is none yet
    text = page_text(at)
    assert "Runtimes on this server" in text or "no accuracy-gate record" in text
    at.text_input[0].set_value("someone/some-model@main")
    next(b for b in at.button if b.label == "Download and use").click().run()
    assert not at.exception
    assert at.error and "offline" in at.error[0].value.lower()
    assert catalog.active_ref() == catalog.DEFAULT_REF


def test_models_page_switches_the_active_model(tmp_path, isolated_runs):
    import shutil

    copy = isolated_runs / "run-x" / "bundle"
    shutil.copytree(REPO / "weights" / "default", copy)
    (isolated_runs / "run-x" / "status.json").write_text('{"state": "completed"}')
    at = page("pages/models.py")
    use = [b for b in at.button if b.label == "Use this model"]
    assert len(use) == 1
    use[0].click().run()
    assert_clean(at)
    assert catalog.same_bundle(catalog.active_ref(), str(copy))


def test_models_page_shows_cards_as_tables_and_a_fine_tuning_comparison(isolated_runs):
    """Each card reads as tables (what the model is, its figures per set, and a fine-tuned
    model's before/after comparison); the raw JSON waits in a collapsed expander; no emoji."""
    import shutil

    bundle = isolated_runs / "run-ft" / "bundle"
    shutil.copytree(REPO / "weights" / "default", bundle)
    (isolated_runs / "run-ft" / "status.json").write_text('{"state": "completed"}')
    card = json.loads((bundle / "card.json").read_text())
    card["name"] = "adapted-demo"
    card["comparison"] = {
        "split": "val",
        "images": 4,
        "before": {"model": card["name"], "threshold": 0.46, "dice": 0.8076, "pq": 0.566},
        "after": {"model": "adapted-demo", "threshold": 0.52, "dice": 0.8211, "pq": 0.5812},
    }
    (bundle / "card.json").write_text(json.dumps(card))
    at = page("pages/models.py")
    assert_clean(at)
    titles = [e.label for e in at.expander]
    assert not [t for t in titles if any(ord(ch) > 0x2FFF for ch in t)], titles  # no emoji
    assert any(t.endswith("weights: default (active)") for t in titles)
    assert titles.count("Full card (JSON)") == 2  # one per card, collapsed
    tables = [t.value for t in at.table]
    facts = [dict(zip(t.iloc[:, 0], t.iloc[:, 1], strict=True)) for t in tables if t.shape[1] == 2]
    shipped = json.loads((REPO / "weights" / "default" / "card.json").read_text())["name"]
    default = next(f for f in facts if f["Name"] == shipped)
    assert default["Pixel size"] == "0.25 µm/px" and default["Folder"] == "weights/default"
    assert default["Licence"].startswith("CC BY-NC-SA 4.0")
    figures = [t for t in tables if "Set" in t.columns]
    assert len(figures) == 2 and list(figures[0]["Set"]) == ["validation", "test"]
    [comparison] = [t for t in tables if "Before" in t.columns]
    assert list(comparison.columns[1:]) == ["Before", "After"]
    dice = comparison[comparison.iloc[:, 0] == "Dice (pooled)"]
    assert list(dice.iloc[0, 1:]) == ["0.808", "0.821"]
    assert any("Split: val" in c.value for c in at.caption)
    assert not any(c.value.startswith("{") for c in at.markdown)  # no raw JSON in the open


def browser_text(at: AppTest) -> str:
    """Everything a browser is shown: :func:`page_text`, errors, the sidebar, expander labels."""
    shown = [*at.error, *at.exception, *at.success, *at.sidebar.caption, *at.sidebar.warning]
    labels = [e.label for e in at.expander]
    return "\n".join([page_text(at), *(str(e.value) for e in shown), *labels])


def assert_no_server_paths(at: AppTest, *folders) -> None:
    """No message names the repository's absolute path, nor any of ``folders``'."""
    text = browser_text(at)
    for folder in (REPO, *folders):
        assert str(folder) not in text, (str(folder), text)


def use_button(at: AppTest, name: str):
    [button] = [b for b in at.button if b.label == "Use this model" and name in b.key]
    return button


def test_switching_verifies_the_bundle_and_refuses_a_read_only_runs_folder(
    tmp_path, isolated_runs, monkeypatch
):
    """A tampered bundle (model.keras fails its SHA-256) and a read-only runs folder both get
    one message naming files relatively; the active model stays as it was. A bad card's warning
    names no server path either."""
    import errno
    import shutil

    for run_id in ("run-tampered", "run-good", "run-bad-card"):
        (isolated_runs / run_id).mkdir(parents=True)
        (isolated_runs / run_id / "status.json").write_text('{"state": "completed"}')
    tampered = isolated_runs / "run-tampered" / "bundle"
    shutil.copytree(REPO / "weights" / "default", tampered)
    with (tampered / "model.keras").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"tampered")
    shutil.copytree(REPO / "weights" / "default", isolated_runs / "run-good" / "bundle")
    (isolated_runs / "run-bad-card" / "bundle").mkdir()
    (isolated_runs / "run-bad-card" / "bundle" / "card.json").write_text("{not json")
    active_file = isolated_runs / catalog.ACTIVE_FILE
    at = page("pages/models.py")
    assert not at.exception
    assert any("run-bad-card/bundle: not usable" in w.value for w in at.warning)
    assert_no_server_paths(at, tmp_path)

    use_button(at, "run-tampered").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "runs/run-tampered/bundle/model.keras: sha256 mismatch" in error
    assert catalog.active_ref() == catalog.DEFAULT_REF and not active_file.exists()
    assert_no_server_paths(at, tmp_path)

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(catalog, "write_text_atomic", read_only)
    use_button(at, "run-good").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "runs/active-model.json" in error and "Read-only file system" in error
    assert "the active model stays default" in error
    assert catalog.active_ref() == catalog.DEFAULT_REF and not active_file.exists()
    assert_no_server_paths(at, tmp_path)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_train_page_starts_and_stops_a_tiny_job(tmp_path, isolated_runs, data_root):
    folder = make_pairs_dataset(tmp_path / "pairs", n=8, size=64)
    at = page("pages/train.py")
    assert_clean(at)
    assert any(
        "Trains on" in c.value and ("CPU" in c.value or "GPU" in c.value) for c in at.caption
    )
    at.radio(key="train_preset").set_value("From scratch").run()  # the page opens on fine-tuning
    at.text_input[0].set_value(str(folder))
    at.number_input[0].set_value(500)  # epochs: far more than the test waits for
    at.number_input[1].set_value(2)  # batch size
    at.number_input[2].set_value(64)  # image size
    at.button[0].click().run()  # the form's submit button
    assert_clean(at)
    run = jobs.running_job(isolated_runs)
    assert run is not None
    try:
        # A second start is refused while the first runs.
        assert at.button[0].disabled
        wait_until(lambda: run.read_status().get("state") == "running", 180, "state running")
        at.run()
        stop = [b for b in at.button if b.label == "Stop"]
        assert stop, [b.label for b in at.button]
        stop[0].click().run()
        status = wait_until(
            lambda: (s := run.read_status()).get("state") in FINAL_STATES and s, 180, "the stop"
        )
        assert status["state"] == "stopped", status
    finally:
        jobs.stop_training(run.path, wait=True, timeout=180)
    at.run()
    assert_clean(at)
    assert any(run.run_id in m.value for m in at.markdown)
    assert RunDir(run.path).read_status()["state"] == "stopped"


def upload_session(name: str, image: np.ndarray, truth: np.ndarray | None = None) -> AppTest:
    """A new session (its own AppTest) on the Predict page with ``image`` uploaded as ``name``."""
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    if truth is not None:
        at.file_uploader(key="upload_mask").upload("mask.png", png(truth * 255), "image/png")
    at.file_uploader(key="upload_image").upload(name, png(image), "image/png").run()
    assert_clean(at)
    return at


def page_text(at: AppTest) -> str:
    """Every caption, markdown, title, message and metric label of the page, one per line."""
    elements = [*at.caption, *at.markdown, *at.title, *at.subheader, *at.info, *at.warning]
    return "\n".join([*(str(e.value) for e in elements), *(m.label for m in at.metric)])


def test_two_sessions_uploading_the_same_bytes_see_only_their_own_names(reference):
    """The prediction is shared by content; names, captions and downloads never are."""
    from appkit import state

    image, truth = reference[0], reference[1]
    alice = upload_session("patient-ALICE-1234.png", image, truth)
    assert "**patient-ALICE-1234.png** — " in alice.caption[0].value
    bob = upload_session("bob.png", image, truth)
    assert "**bob.png** — " in bob.caption[0].value
    assert "ALICE" not in page_text(bob) and "patient" not in page_text(bob)
    # The store keeps analyses without names: nothing of Alice's is left for others to read.
    assert {analysis.name for analysis in state.analysis_store()._items.values()} == {""}
    alice.run()  # and Alice keeps her own name after Bob's visit
    assert "**patient-ALICE-1234.png** — " in alice.caption[0].value
    assert "bob" not in page_text(alice)


def drawn_threshold_a(at: AppTest) -> float:
    """The value the browser draws for Threshold A when the slider is new to it: the value the
    server sends with it if any, else the slider's default (the browser keeps no state for a
    widget it dropped)."""
    proto = next(s for s in at.slider if s.label == "Threshold A").proto
    return (proto.value if proto.set_value else proto.default)[0]


def test_threshold_slider_and_readout_agree_after_a_new_upload(reference):
    """Replacing an upload passes through a run with no image (``st.stop()`` before the
    explorer): the browser drops the sliders, the server kept their values. When the explorer
    comes back, the slider drawn must show the threshold its read-out uses."""
    image = reference[0]
    other = np.ascontiguousarray(image[::-1])
    at = upload_session("one.png", image)
    next(s for s in at.slider if s.label == "Threshold A").set_value(0.71).run()
    assert "**Threshold A = 0.71**" in page_text(at)
    at.file_uploader(key="upload_image").set_value(None).run()  # the uploader, emptied
    assert not [s for s in at.slider if s.label == "Threshold A"]  # no explorer this run
    at.file_uploader(key="upload_image").upload("two.png", png(other), "image/png").run()
    assert_clean(at)
    drawn = drawn_threshold_a(at)
    assert f"**Threshold A = {drawn:.2f}**" in page_text(at)
    assert drawn == pytest.approx(0.71)  # the user's threshold is kept for the new image
    # Moving it again afterwards is ordinary: the read-out follows.
    next(s for s in at.slider if s.label == "Threshold A").set_value(0.4).run()
    assert "**Threshold A = 0.40**" in page_text(at)


def test_grayscale_upload_is_flagged_and_the_upload_limit_is_stated(reference):
    at = page("pages/predict.py")
    at.radio(key="predict_mode").set_value("Upload").run()
    assert any("up to 200 MB" in i.value for i in at.info)  # said before any upload
    gray = np.repeat(reference[0].mean(axis=2).astype(np.uint8)[..., None], 3, axis=2)
    at.file_uploader(key="upload_image").upload("dapi.png", png(gray), "image/png").run()
    assert_clean(at)
    assert at.warning and "does not look like H&E" in at.warning[0].value
    assert readouts(at)["Nuclei (predicted)"]  # analysed all the same
