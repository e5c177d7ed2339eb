"""Batches on a local Ray (segcore.batch): the same outputs as the single-process commands,
re-runs that skip, bad inputs reported one by one, and a worker killed in the middle of a
region.

One local Ray of 2 CPUs serves the module (starting one costs about 10 s here). The model is
the context-free stand-in of the whole-slide tests (:mod:`tests.batch_standins`), so the
comparisons are exact; the small slides are cut into regions of 2 chunks.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
from pathlib import Path

import cv2
import psutil
import pytest

from devtools.slides import write_aperio_tiff
from segcore.batch.engine import CSV_FILE, BatchConfig, run_batch
from segcore.cli.predict_files import PredictJob, predict_files
from segcore.data.synthetic import generate_tile
from segcore.wholeslide import outputs
from tests.batch_standins import StandInSpec
from tests.test_jobs import wait_until
from tests.test_wholeslide import FAST, HematoxylinModel, run, stand_in_bundle, synthetic_rgb

pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a local Ray takes seconds to start

SLIDE_FILES = (*outputs.OUTPUT_FILES,)
IMAGE_FILES = ("{}_prob.png", "{}_mask.png", "{}_labels.png", "{}.geojson", "{}_nuclei.csv")
CONFIG = BatchConfig(workers=2, region_tiles=8, slide=FAST)
"""Regions of 2 chunks of 4 tiles: each 640² test slide (25 tiles, 7 chunks) in 4 regions."""


@pytest.fixture(scope="module")
def ray_local():
    import signal

    from segcore.batch.cluster import connect

    before = signal.getsignal(signal.SIGTERM)
    ray = connect(None, cpus=2)
    yield ray
    ray.shutdown()
    signal.signal(signal.SIGTERM, before)  # ray.init leaves its own handler behind


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Two small slides and two images (synthetic H&E)."""
    folder = tmp_path_factory.mktemp("inputs")
    found = {
        "slide_a": write_aperio_tiff(folder / "slide_a.svs", synthetic_rgb()),
        "slide_b": write_aperio_tiff(folder / "slide_b.svs", synthetic_rgb(tiles=3, margin=32)),
    }
    for i, size in enumerate((300, 420)):
        path = folder / f"image_{i}.png"
        cv2.imwrite(str(path), generate_tile([11, i], size)[0][..., ::-1])
        found[path.stem] = path
    return found


@pytest.fixture(scope="module")
def references(tmp_path_factory, inputs) -> Path:
    """The single-process outputs: ``segment_slide`` as ``slide run`` calls it, and
    ``predict --instances``'s own code (``predict_files``) with the same stand-in model."""
    root = tmp_path_factory.mktemp("references")
    for name in ("slide_a", "slide_b"):
        run(inputs[name], root / name)
    for name in ("image_0", "image_1"):
        (root / name).mkdir()
        predict = {"threshold": 0.5, "pixel_size": None, "tile_size": None, "overlap": 64}
        job = PredictJob(
            stand_in_bundle(), HematoxylinModel(), root / name, **predict, batch_size=8,
            instances=True, quiet=True,
        )  # fmt: skip
        assert predict_files(job, [str(inputs[name])]) == 0
    return root


def output_files(folder: Path, name: str) -> dict[str, bytes]:
    names = SLIDE_FILES if name.startswith("slide") else [f.format(name) for f in IMAGE_FILES]
    return {file: (folder / file).read_bytes() for file in names}


def read_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / CSV_FILE, newline="") as handle:
        return {Path(row["input"]).stem: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def batch(ray_local, inputs, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("batch")
    events = []
    rows = run_batch(
        list(inputs.values()),
        out,
        spec=StandInSpec(),
        config=CONFIG,
        progress=events.append,
        ray_module=ray_local,
    )
    return out, rows, events


def test_a_batch_gives_the_outputs_of_the_single_process_commands(batch, references):
    out, rows, events = batch
    assert [row["status"] for row in rows] == ["completed"] * 4, rows
    for name in ("slide_a", "slide_b", "image_0", "image_1"):
        assert output_files(out / name, name) == output_files(references / name, name), name
    last = events[-1]
    assert last["inputs_done"] == 4 and last["regions_done"] == last["regions_total"] >= 8


def test_the_summary_csv_has_one_row_per_input(batch, references):
    out, _, _ = batch
    rows = read_rows(out)
    assert sorted(rows) == ["image_0", "image_1", "slide_a", "slide_b"]
    for name, row in rows.items():
        kind = "slide" if name.startswith("slide") else "image"
        assert row["kind"] == kind and row["status"] == "completed" and not row["error"]
        lines = out / name / f"{'nuclei.csv' if kind == 'slide' else name + '_nuclei.csv'}"
        assert int(row["nuclei"]) == len(lines.read_text().splitlines()) - 1 > 0
        assert float(row["tissue_mm2"]) > 0 and float(row["density_per_mm2"]) > 0
        assert float(row["seconds"]) > 0


def test_a_rerun_skips_the_finished_inputs(batch, inputs, ray_local):
    out, _, _ = batch
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != CSV_FILE}
    rows = run_batch(
        list(inputs.values()), out, spec=StandInSpec(), config=CONFIG, ray_module=ray_local
    )
    assert [row["status"] for row in rows] == ["skipped"] * 4
    assert [str(row["nuclei"]) for row in rows] == [r["nuclei"] for r in read_rows(out).values()]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_another_model_is_not_taken_as_finished(batch, inputs):
    from segcore.batch.inputs import collect_inputs, finished_summary, given_settings

    out, _, _ = batch
    items = collect_inputs([inputs["slide_a"], inputs["image_0"]], out)
    sha, settings = StandInSpec().card().model_sha256, given_settings(CONFIG.slide)
    assert all(finished_summary(item, sha, "auto", settings) for item in items)
    assert not any(finished_summary(item, "0" * 64, "auto", settings) for item in items)
    assert not any(finished_summary(item, sha, "keras", settings) for item in items)


def test_bad_inputs_are_reported_one_by_one(ray_local, inputs, tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide at all")
    (tmp_path / "out" / "slide_a").mkdir(parents=True)
    (tmp_path / "out" / "slide_a" / outputs.RUN_FILE).write_text("{not json")
    given = [broken, tmp_path / "missing.png", inputs["image_0"], inputs["slide_a"]]
    rows = run_batch(
        given, tmp_path / "out", spec=StandInSpec(), config=CONFIG, ray_module=ray_local
    )
    status = {Path(row["input"]).name: (row["status"], row["error"]) for row in rows}
    assert status["broken.svs"][0] == "failed" and "not a slide" in status["broken.svs"][1]
    assert status["missing.png"] == ("failed", "no such file or folder")
    assert status["slide_a.svs"][0] == "failed" and "run.json" in status["slide_a.svs"][1]
    assert status["image_0.png"] == ("completed", "")
    assert not (tmp_path / "out" / "broken" / outputs.SUMMARY_FILE).exists()
    assert "\n" not in "".join(error for _, error in status.values())


def worker_doing(method: str) -> psutil.Process | None:
    """The Ray worker process running ``SegmentWorker.<method>`` now (Ray titles it so)."""
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if line.startswith(f"ray::SegmentWorker.{method}"):
            return process
    return None


def test_a_worker_killed_in_a_region_is_restarted_and_the_outputs_are_complete(
    ray_local, inputs, references, tmp_path
):
    results = {}

    def batch():
        results["rows"] = run_batch(
            [inputs["slide_a"]],
            tmp_path,
            spec=StandInSpec(delay=0.15),  # ~1 s per region
            config=CONFIG,
            ray_module=ray_local,
        )

    thread = threading.Thread(target=batch)
    thread.start()
    try:
        busy = []
        wait_until(lambda: busy.append(worker_doing("slide_region")) or busy[-1], timeout=120)
        victim = busy[-1]
        parts = tmp_path / "slide_a" / outputs.PARTS_DIR
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive()
    assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
    assert [row["status"] for row in results["rows"]] == ["completed"], results["rows"]
    assert not parts.exists()
    name = "slide_a"
    assert output_files(tmp_path / name, name) == output_files(references / name, name)
