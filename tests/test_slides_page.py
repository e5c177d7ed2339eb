"""The Slides page through AppTest: a small Aperio-style slide (synthetic H&E on glass, written
by devtools/slides.py) in a data root made of ``tmp_path`` (``SEGCORE_DATA_ROOTS``), the real
default model for the region explorer (loaded once per test process, as in tests/test_app.py),
and whole-slide jobs faked on disk or through a stand-in ``start_slide_job`` (the real job runs
in the browser test and in tests/test_slide_jobs.py).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from appkit import access, widgets
from appkit import slides as slide_state
from segcore.analysis import slide_views
from segcore.data import roots
from segcore.data.synthetic import generate_tile
from tests.conftest import REPO

TIMEOUT = 240
SIDE = 768  # a 512² synthetic tile (128 µm: more than a speck) with 128 px of glass around


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(runs))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(access.VIEWER_ENV, raising=False)
    return runs


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A data root ``lab`` holding ``case.svs`` (Aperio-style, 0.25 µm/px, 40×), ``bare.tif``
    (one level, no pixel size) and ``notes.svs`` (text, not a slide)."""
    from devtools import slides as test_slides

    root = tmp_path / "lab"
    root.mkdir()
    image = np.full((SIDE, SIDE, 3), 255, np.uint8)
    image[128:640, 128:640] = generate_tile([18, 7], 512)[0]
    test_slides.write_aperio_tiff(root / "case.svs", image, levels=(1, 2))
    test_slides.write_plain_tiff(root / "bare.tif", image)
    (root / "notes.svs").write_text("not a slide at all\n")
    monkeypatch.setenv(roots.DATA_ROOTS_ENV, f"lab={root}")
    return root


def slides_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    return at.switch_page("pages/slides.py").run()


def pick(at: AppTest, name: str) -> AppTest:
    return at.selectbox(key="slide_choice").set_value(name).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def readouts(at: AppTest) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for metric in at.metric:
        values.setdefault(metric.label, []).append(metric.value)
    return values


def test_the_page_lists_the_slides_and_shows_metadata_and_tissue(lab):
    at = slides_page()
    assert_clean(at)
    assert at.title[0].value == "Slides"
    options = at.selectbox(key="slide_choice").options
    assert {"lab/case.svs", "lab/bare.tif", "lab/notes.svs"} <= set(options)
    pick(at, "lab/case.svs")
    assert_clean(at)
    shown = " ".join(m.value for m in at.markdown)
    assert "aperio (openslide)" in shown and f"{SIDE:,d} × {SIDE:,d} px" in shown
    assert "0.25 µm/px — from openslide.mpp-x" in shown and "40×" in shown
    assert "2 (down to 1/2)" in shown
    view = slide_views.open_overview(lab / "case.svs")
    expected = slide_views.tissue_readouts(view.tissue, 0.25)
    assert readouts(at)["Tissue fraction"] == [expected["Tissue fraction"]]
    assert readouts(at)["Tissue area"] == [expected["Tissue area"]]
    slider = next(s for s in at.slider if s.label == "Tissue threshold")
    assert slider.value == pytest.approx(round(view.tissue.threshold, 3))
    assert any(f"{view.tissue.threshold:.3f}" in c.value for c in at.caption)
    # A higher threshold keeps less tissue: the outline and the read-outs follow.
    slider.set_value(0.5).run()
    assert_clean(at)
    higher = slide_views.tissue_readouts(view.tissue_at(0.5), 0.25)["Tissue fraction"]
    assert readouts(at)["Tissue fraction"] == [higher] != [expected["Tissue fraction"]]


@pytest.mark.slow  # the real model predicts a 768² region
def test_a_region_opened_by_its_number_inputs_gets_the_explorer(lab):
    at = pick(slides_page(), "lab/case.svs")
    assert not any(s.label == "Threshold A" for s in at.slider)  # nothing predicted yet
    x_input = next(n for n in at.number_input if n.label == "Region left (px)")
    y_input = next(n for n in at.number_input if n.label == "Region top (px)")
    assert x_input.max == 0 and y_input.max == 0  # the slide is smaller than a region
    next(b for b in at.button if b.label == "Open region").click().run()
    assert_clean(at)
    assert any(f"{SIDE}×{SIDE} px at 0.25 µm/px" in c.value for c in at.caption)
    labels = readouts(at)
    assert len(labels["Nuclei (predicted)"]) == 3  # A, B and the classical baseline
    assert int(labels["Nuclei"][0].replace(",", "")) > 0
    assert any(s.label == "Threshold A" for s in at.slider)
    downloads = {b.label for b in at.get("download_button")}
    assert {"Mask PNG (A)", "Nuclei GeoJSON (QuPath)", "Nuclei CSV"} <= downloads
    # The threshold slider re-thresholds the cached region.
    next(s for s in at.slider if s.label == "Threshold A").set_value(0.9).run()
    assert_clean(at)
    assert readouts(at)["Nuclei"] != labels["Nuclei"]
    # Test-time flips predict the region again, as the mean of its four mirror images.
    assert not any("flips" in c.value for c in at.caption)
    at.checkbox(key=widgets.REGION_FLIPS_KEY).check().run()
    assert_clean(at)
    assert any("mean of 4 flips" in c.value for c in at.caption)


def test_a_slide_without_a_pixel_size_asks_for_its_magnification(lab):
    at = pick(slides_page(), "lab/bare.tif")
    assert not at.exception
    assert any("records no pixel size" in w.value for w in at.warning)
    control = next(r for r in at.radio if r.label == "Magnification")
    control.set_value("20× (0.5 µm/px)").run()
    assert_clean(at)
    assert any("0.5 µm/px — given below" in m.value for m in at.markdown)


def test_paths_outside_the_roots_get_the_one_refusal(lab, tmp_path):
    outside = tmp_path / "outside.svs"
    outside.write_bytes((lab / "case.svs").read_bytes())
    refusal = f"Cannot open this slide: {roots.file_refusal_message(roots.data_roots())}"
    at = slides_page()
    too_long = ["a" * 300 + ".svs", f"lab/{'b' * 5000}.svs"]  # ENAMETOOLONG
    attempts = [str(outside), "/etc/passwd", "../outside.svs", "~/x.svs", "lab/../outside.svs"]
    for text in [*attempts, *too_long, "lab/case\x00.svs"]:
        at.text_input(key="slide_typed").set_value(text).run()
        assert not at.exception
        assert [e.value for e in at.error] == [refusal], text
    assert str(tmp_path) not in refusal
    at.text_input(key="slide_typed").set_value("lab/case.svs").run()  # the typed path wins
    assert_clean(at)
    assert any("aperio" in m.value for m in at.markdown)


def test_a_file_that_is_not_a_slide_gets_a_message(lab, tmp_path):
    at = pick(slides_page(), "lab/notes.svs")
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "notes.svs" in message and "not a slide" in message and str(tmp_path) not in message
    pick(at, "lab/case.svs")  # the page keeps working
    assert_clean(at)


def test_viewer_mode_offers_no_whole_slide_job(lab, monkeypatch):
    monkeypatch.setenv(access.VIEWER_ENV, "1")
    at = pick(slides_page(), "lab/case.svs")
    assert_clean(at)
    assert "Segment the whole slide" not in [b.label for b in at.button]
    assert "Test-time flips" not in [c.label for c in at.checkbox]
    assert any(access.VIEWER_NOTE in i.value for i in at.info)
    with pytest.raises(access.ViewerModeError):
        access.start_slide_job(lab / "case.svs", model_ref="default", config=None)


def test_segment_starts_a_job_with_the_pages_settings(lab, monkeypatch, isolated_runs):
    from segcore.wholeslide import jobs

    started = []

    def fake_start(slide, *, model_ref, config):
        started.append((slide, model_ref, config))
        return jobs.JobDir(isolated_runs / "slides" / "slide-fake")

    monkeypatch.setattr(jobs, "start_slide_job", fake_start)
    at = pick(slides_page(), "lab/case.svs")
    next(s for s in at.slider if s.label == "Tissue threshold").set_value(0.2).run()
    next(b for b in at.button if b.label == "Segment the whole slide").click().run()
    assert_clean(at)
    [(slide, model_ref, config)] = started
    assert slide == (lab / "case.svs").resolve() and model_ref == "default"
    assert config["runtime"] == "keras" and config["pixel_size"] is None
    assert config["tissue"]["threshold"] == pytest.approx(0.2)
    assert config["flips"] is False
    # Test-time flips, ticked, go into the next job's settings.
    next(c for c in at.checkbox if c.label == "Test-time flips").check().run()
    next(b for b in at.button if b.label == "Segment the whole slide").click().run()
    assert_clean(at)
    assert started[-1][2]["flips"] is True


def fake_job(runs, slide, state: str, **status) -> str:
    """A job folder as :mod:`segcore.wholeslide.jobs` leaves it, without running anything."""
    job = runs / "slides" / f"slide-20261206-{state}"
    job.mkdir(parents=True)
    spec = {"slide": str(slide.resolve()), "model": "default", "config": {}}
    (job / "job.json").write_text(json.dumps(spec))
    (job / "status.json").write_text(json.dumps({"state": state, **status}))
    return job


def test_a_completed_job_shows_the_density_counts_and_downloads(lab, isolated_runs):
    job = fake_job(isolated_runs, lab / "case.svs", "completed")
    summary = {"nuclei": 1234, "tissue_mm2": 0.5, "density_per_mm2": 2468.0, "seconds": 12.5}
    (job / "summary.json").write_text(json.dumps(summary))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (255, 200, 0, 255)
    cv2.imwrite(str(job / "density.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    for name in ("nuclei.geojson.gz", "nuclei.csv"):
        (job / name).write_bytes(b"x")
    at = pick(slides_page(), "lab/case.svs")
    assert_clean(at)
    shown = readouts(at)
    assert shown["Nuclei (whole slide)"] == ["1,234"]
    assert shown["Nuclei density"] == ["2,468 /mm²"]
    assert shown["Tissue segmented"] == ["0.50 mm²"]
    assert shown["Run time"] == ["12.5 s"]
    labels = {b.label for b in at.get("download_button")}
    assert {label for label, _, _ in slide_state.RUN_DOWNLOADS} <= labels


def test_a_running_job_shows_its_progress_and_can_be_stopped(lab, isolated_runs, monkeypatch):
    import os

    from segcore.training.runs import process_start_time
    from segcore.wholeslide import jobs

    alive = {"pid": os.getpid(), "pid_started": process_start_time(os.getpid())}
    job = fake_job(
        isolated_runs, lab / "case.svs", "running", tiles_done=3, tiles_total=8, nuclei=1500,
        eta_s=30.0, **alive,
    )  # fmt: skip
    stopped = []
    monkeypatch.setattr(jobs, "stop_slide_job", lambda path: stopped.append(path))
    at = pick(slides_page(), "lab/case.svs")
    assert_clean(at)
    [bar] = at.get("progress")
    assert "3 of 8 tiles, 1,500 nuclei, about 30 s left" in bar.proto.text
    assert next(b for b in at.button if b.label == "Segment the whole slide").disabled
    next(b for b in at.button if b.label == "Stop").click().run()
    assert_clean(at)
    assert stopped == [str(job)]


def test_a_queued_job_shows_its_position(lab, isolated_runs):
    import os

    from segcore.training.runs import process_start_time

    alive = {"pid": os.getpid(), "pid_started": process_start_time(os.getpid())}
    fake_job(isolated_runs, lab / "case.svs", "queued", position=2, **alive)
    at = pick(slides_page(), "lab/case.svs")
    assert_clean(at)
    assert any("Queued: position 2" in i.value for i in at.info)


def test_a_failed_job_shows_its_reason_without_server_paths(lab, isolated_runs):
    reason = f"{lab / 'case.svs'}: region x=0, y=0 cannot be read; see {isolated_runs}/slides"
    fake_job(isolated_runs, lab / "case.svs", "failed", reason=reason)
    at = pick(slides_page(), "lab/case.svs")
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("Failed: lab/case.svs: region x=0")
    assert "runs/slides" in error and str(lab.parent) not in error
    assert "Resume" in [b.label for b in at.button]


def test_a_small_slide_can_be_uploaded(lab, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "server-tmp"))
    (tmp_path / "server-tmp").mkdir()
    at = slides_page()
    at.radio(key="slide_mode").set_value("Upload").run()
    at.file_uploader(key="slide_upload").upload(
        "mine.svs", (lab / "case.svs").read_bytes(), "application/octet-stream"
    )
    at.run()
    assert_clean(at)
    assert any("aperio" in m.value for m in at.markdown)
    kept = list(access.slide_upload_dir().iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".svs"
    assert not kept[0].is_relative_to(REPO)
