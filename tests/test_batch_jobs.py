"""Batches for the app and their faults: the background batch job (segcore.batch.jobs: start,
the slides lock shared with slide jobs, progress, stop, run again, summary), the Slides page's
batch section (AppTest), a full disk under one input (the engine in this process, its Ray
replaced by :class:`InProcessRay` so that a monkeypatched writer reaches the tasks), and
``python -m segcore batch`` end to end with a tiny bundle (slow: real Ray, real TensorFlow).

The job tests run the real job process (``run_batch_job``: queue, lock, status, signals) with a
fake batch (:data:`FAKE_BATCH`) in place of Ray; the slow tests at the end run the real one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import cv2
import psutil
import pytest

from appkit import access
from segcore import atomic
from segcore.batch import jobs
from segcore.batch.engine import CSV_FILE, BatchConfig, run_batch
from segcore.batch.inputs import collect_inputs, finished_summary, given_settings
from segcore.data.synthetic import generate_tile
from segcore.errors import ConfigError
from segcore.training.locks import DeviceLock, lock_path
from segcore.training.runs import RunError, process_start_time, wait_for_end, wait_for_state
from segcore.wholeslide import outputs
from segcore.wholeslide.jobs import LOCK_KEY, start_slide_job, stop_slide_job
from tests import test_slides_page as page_tests
from tests.batch_standins import StandInSpec
from tests.conftest import REPO
from tests.test_jobs import wait_until
from tests.test_slide_jobs import FAKE_RUNNER
from tests.test_slides_page import assert_clean, slides_page
from tests.test_wholeslide import FAST, run, synthetic_rgb

lab = page_tests.lab
"""The Slides page tests' data root ``lab`` (``case.svs``, ``bare.tif``, ``notes.svs``)."""

FINAL = ("completed", "stopped", "failed")

# ``batch --job``'s process with the batch itself faked: run_batch_job (queue, lock, status,
# signals) around a "batch" that marks each input done after FAKE_BATCH_S seconds, or holds
# until it is stopped (FAKE_BATCH=hold), or raises (FAKE_BATCH=raise).
FAKE_BATCH = """
import os, sys, time
from pathlib import Path
from segcore.batch.engine import CSV_FILE, write_csv
from segcore.batch.jobs import run_batch_job

args = sys.argv[1:]
out, job = Path(args[args.index("--out") + 1]), args[args.index("--job") + 1]
inputs, mode = args[: args.index("--out")], os.environ.get("FAKE_BATCH", "")

def work(progress, should_stop):
    print("fake batch has the lock", flush=True)
    rows = []
    for name in inputs:
        started = time.monotonic()
        while (mode == "hold" or time.monotonic() - started < 0.05) and not should_stop():
            time.sleep(0.02)
        if mode == "raise":
            raise RuntimeError("the fake batch broke")
        folder = out / Path(name).stem
        if should_stop():
            rows.append({"input": name, "status": "stopped", "error": "stopped on request"})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text('{"state": "completed"}')
        rows.append({"input": name, "kind": "image", "nuclei": 7, "status": "completed",
                     "output": folder.name})
        progress({"inputs_done": len(rows), "inputs_total": len(inputs), "regions_done": 0,
                  "regions_total": 0, "failed": 0})
    write_csv(out / CSV_FILE, rows)
    return rows

status = run_batch_job(job, work, poll=0.05)
print("fake batch ended", status["state"], flush=True)
"""


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch) -> Path:
    """This test's runs folder (batches, slide jobs and their lock), and no viewer mode."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(access.VIEWER_ENV, raising=False)
    return folder


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_batch.py"
    script.write_text(FAKE_BATCH)
    return [sys.executable, str(script)]


@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"tile_{i}.png"
        cv2.imwrite(str(path), generate_tile([5, i], 64)[0][..., ::-1])
        paths.append(path)
    return paths


def start(files, fake, mode: str = "", **kwargs) -> jobs.BatchJobDir:
    env = {"FAKE_BATCH": mode}
    return jobs.start_batch_job(files, model_ref="default", command=fake, env=env, **kwargs)


def final(job) -> dict:
    """The job's status once it is over (its process ended, so its lock is free)."""
    return wait_for_end(job, timeout=60)


def slides_lock(runs: Path) -> DeviceLock:
    return DeviceLock(lock_path(runs / "slides", LOCK_KEY))


# --- the job ---------------------------------------------------------------------------------


def test_a_batch_runs_in_its_own_process_and_leaves_its_summary(images, fake, runs):
    job = start(images, fake)
    spec = job.read_job()
    assert job.path.parent == runs / "batches" and spec["model"] == "default"
    assert spec["inputs"] == [str(p.resolve()) for p in images]
    argv = spec["argv"]
    assert argv[: len(fake)] == fake and argv[-2:] == ["--job", str(job.path)]
    assert argv[argv.index("--out") + 1] == str(job.outputs) and "--quiet" in argv
    assert spec["lock"] == str(lock_path(runs / "slides", LOCK_KEY))
    status = final(job)
    assert status["state"] == "completed", job.log_tail()
    assert status["inputs_done"] == status["inputs_total"] == status["completed"] == 3
    assert status["failed"] == 0 and status["reason"] is None
    assert slides_lock(runs).holder() is None  # released
    rows = jobs.read_summary(job.path)
    assert [row["status"] for row in rows] == ["completed"] * 3
    files = jobs.output_files(job.path, rows[0])
    assert [p.name for p in files] == ["summary.json"]
    assert jobs.output_files(job.path, {"output": "../.."}) == []
    assert jobs.output_files(job.path, {"output": ""}) == []
    [listed] = jobs.list_batch_jobs()
    assert listed["job_id"] == job.job_id and listed["state"] == "completed"


def test_the_real_command_line_is_the_batch_command_with_the_job(images, monkeypatch):
    spawned = []
    monkeypatch.setattr(jobs, "launch_job", lambda job, argv, env: spawned.append(argv) or job)
    job = jobs.start_batch_job(images[:1], model_ref="weights/mine", runtime="keras")
    [argv] = spawned
    assert argv == [
        sys.executable, "-m", "segcore", "batch", str(images[0].resolve()),
        "--out", str(job.outputs), "--model", "weights/mine", "--runtime", "keras",
        "--quiet", "--job", str(job.path),
    ]  # fmt: skip
    from segcore.cli.main import build_parser

    args = build_parser().parse_args(argv[3:])
    assert args.job == str(job.path) and args.inputs == [str(images[0].resolve())]


def test_a_batch_waits_for_a_slide_job_and_a_slide_job_waits_for_it(images, fake, runs, tmp_path):
    runner = tmp_path / "fake_runner.py"
    runner.write_text(FAKE_RUNNER)
    slide = images[0]  # the fake runner never opens it
    first = start_slide_job(
        slide, model_ref="default", config={}, command=[sys.executable, str(runner)]
    )
    wait_until(lambda: first.read_status().get("state") == "running", timeout=30)
    batch = start(images, fake, mode="hold")
    wait_until(lambda: batch.read_status().get("waiting_for") == first.job_id, timeout=30)
    assert batch.read_status()["state"] == "queued"
    stop_slide_job(first.path, wait=True, timeout=30)
    wait_until(lambda: batch.read_status().get("state") == "running", timeout=30)
    assert slides_lock(runs).holder()["run_id"] == batch.job_id
    second = start_slide_job(
        slide, model_ref="default", config={}, command=[sys.executable, str(runner)]
    )
    wait_until(lambda: second.read_status().get("position") == 1, timeout=30)
    assert second.read_status()["state"] == "queued"  # behind the batch
    assert jobs.stop_batch_job(batch.path, wait=True, timeout=30)["state"] == "stopped"
    wait_until(lambda: second.read_status().get("state") == "running", timeout=30)
    stop_slide_job(second.path, wait=True, timeout=30)


def test_stop_ends_a_running_batch_which_can_run_again(images, fake):
    job = start(images, fake, mode="hold")
    wait_until(lambda: "fake batch has the lock" in job.log_tail(), timeout=30)
    pid = job.read_status()["pid"]
    status = jobs.stop_batch_job(job.path, wait=True, timeout=30)
    assert status["state"] == "stopped" and status["reason"] == "stopped on request"
    assert status["stopped"] == 3 and status["inputs_done"] == 0
    assert "fake batch ended stopped" in job.log_tail()  # SIGTERM stopped it, not killed it
    wait_until(lambda: not psutil.pid_exists(pid) or not_running(pid), timeout=10)
    rows = jobs.read_summary(job.path)
    assert {row["status"] for row in rows} == {"stopped"}
    jobs.resume_batch_job(job.path, env={"FAKE_BATCH": ""})
    status = final(job)
    assert status["state"] == "completed" and status["completed"] == 3, job.log_tail()


def not_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_queued_batch_stops_at_once(images, fake, runs):
    lock = slides_lock(runs)
    (runs / "slides").mkdir(parents=True)
    lock.acquire("slide-somebody")
    try:
        job = start(images, fake)
        wait_until(lambda: job.read_status().get("waiting_for") == "slide-somebody", timeout=30)
        status = jobs.stop_batch_job(job.path, wait=True, timeout=30)
        assert status["state"] == "stopped" and status["reason"] == "stopped while queued"
    finally:
        lock.release("slide-somebody")


def test_one_batch_at_a_time(images, fake):
    job = start(images, fake, mode="hold")
    with pytest.raises(ConfigError, match=f"already .* \\({job.job_id}\\): one batch at a time"):
        start(images, fake)
    jobs.stop_batch_job(job.path, wait=True, timeout=30)
    with pytest.raises(RunError):
        jobs.resume_batch_job(job.path.parent / "batch-none")
    final(start(images[:1], fake))  # the stopped one no longer counts


def test_a_batch_that_breaks_is_failed_with_its_reason(images, fake):
    job = start(images, fake, mode="raise")
    status = final(job)
    assert status["state"] == "failed"
    assert status["reason"] == "RuntimeError: the fake batch broke"
    assert jobs.read_summary(job.path) is None


def test_bad_starts_are_refused_and_leave_nothing(images, fake, runs, monkeypatch):
    with pytest.raises(ConfigError, match="at least one"):
        start([], fake)
    with pytest.raises(ConfigError, match=r"missing\.png: no such file"):
        start([images[0], images[0].parent / "missing.png"], fake)
    with pytest.raises(ConfigError, match="runtime 'fast'"):
        start(images, fake, runtime="fast")
    monkeypatch.setattr(jobs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"a batch needs Ray.*pip install ray=="):
        start(images, fake)
    assert not (runs / "batches").exists() or not jobs.list_batch_jobs()


def test_progress_text():
    assert jobs.progress_text({"phase": "starting Ray"}) == (0.0, "starting Ray…")
    status = {"inputs_done": 2, "inputs_total": 5, "regions_done": 3, "regions_total": 8}
    assert jobs.progress_text({**status, "failed": 1}) == (
        0.4,
        "2 of 5 inputs, 3 of 8 slide regions, 1 failed",
    )
    assert jobs.progress_text({"inputs_done": 1, "inputs_total": 4})[1] == "1 of 4 inputs"


# --- the Slides page's batch section ---------------------------------------------------------


def batch_job_on_disk(runs: Path, inputs: list[Path], state: str, rows=None, **status) -> Path:
    """A batch job folder as :mod:`segcore.batch.jobs` leaves it, without running anything."""
    job = jobs.BatchJobDir(runs / "batches" / f"batch-20261207-{state}")
    job.outputs.mkdir(parents=True)
    spec = {"inputs": [str(p) for p in inputs], "model": "default", "lock": "x", "argv": []}
    (job.path / "job.json").write_text(json.dumps(spec))
    (job.path / "status.json").write_text(json.dumps({"state": state, **status}))
    if rows is not None:
        from segcore.batch.engine import write_csv

        write_csv(job.outputs / CSV_FILE, rows)
    return job.path


def test_the_slides_page_has_a_batch_section_that_starts_a_batch(lab, monkeypatch):
    started = []

    def fake_start(files, *, model_ref, runtime):
        started.append((files, model_ref, runtime))
        return jobs.BatchJobDir(Path("/nowhere/batch-fake"))

    monkeypatch.setattr(jobs, "start_batch_job", fake_start)
    at = slides_page()
    assert_clean(at)
    assert "Segment many slides (batch)" in [e.label for e in at.expander]
    picker = at.multiselect(key="batch_inputs")
    assert {"lab/case.svs", "lab/bare.tif", "lab/notes.svs"} <= set(picker.options)
    assert next(b for b in at.button if b.label == "Start the batch").disabled
    picker.set_value(["lab/case.svs", "lab/bare.tif"]).run()
    next(b for b in at.button if b.label == "Start the batch").click().run()
    assert_clean(at)
    [(files, model_ref, runtime)] = started
    assert files == [(lab / "case.svs").resolve(), (lab / "bare.tif").resolve()]
    assert model_ref == "default" and runtime == "keras"


def test_viewer_mode_offers_no_batch(lab, monkeypatch):
    from appkit import batch

    monkeypatch.setenv(access.VIEWER_ENV, "1")
    at = slides_page()
    assert_clean(at)
    assert "Segment many slides (batch)" in [e.label for e in at.expander]
    assert "Start the batch" not in [b.label for b in at.button]
    assert not [m for m in at.multiselect if m.key == "batch_inputs"]
    assert any(access.VIEWER_NOTE in i.value for i in at.info)
    with pytest.raises(access.ViewerModeError):
        batch.start(["lab/case.svs"])
    with pytest.raises(access.ViewerModeError):
        batch.stop("runs/batches/batch-x")


def test_a_running_batch_shows_its_progress_and_can_be_stopped(lab, runs, monkeypatch):
    alive = {"pid": os.getpid(), "pid_started": process_start_time(os.getpid())}
    job = batch_job_on_disk(
        runs, [lab / "case.svs"], "running", inputs_done=2, inputs_total=5,
        regions_done=3, regions_total=8, failed=0, **alive,
    )  # fmt: skip
    stopped = []
    monkeypatch.setattr(jobs, "stop_batch_job", lambda path: stopped.append(path))
    at = slides_page()
    assert_clean(at)
    [bar] = at.get("progress")
    assert "2 of 5 inputs, 3 of 8 slide regions" in bar.proto.text
    assert next(b for b in at.button if b.label == "Start the batch").disabled
    next(b for b in at.button if b.label == "Stop the batch").click().run()
    assert_clean(at)
    assert stopped == [str(job)]


def test_a_finished_batch_shows_its_table_and_each_inputs_files(lab, runs, tmp_path):
    case, bare = lab / "case.svs", lab / "bare.tif"
    rows = [
        {"input": str(case), "kind": "slide", "nuclei": 1234, "status": "completed",
         "output": "case"},
        {"input": str(bare), "kind": "image", "status": "failed",
         "error": f"disk full while writing {tmp_path}/runs/batches/b/outputs/bare/x.png",
         "output": "bare"},
    ]  # fmt: skip
    job = batch_job_on_disk(runs, [case, bare], "completed", rows, failed=1, inputs_total=2)
    for name in ("nuclei.csv", "summary.json", ".nuclei.csv.x.tmp"):
        (job / "outputs" / "case").mkdir(exist_ok=True)
        (job / "outputs" / "case" / name).write_text("x")
    at = slides_page()
    assert not at.exception
    [table] = at.dataframe
    shown = table.value
    assert list(shown["Input"]) == ["lab/case.svs", "lab/bare.tif"]
    assert list(shown["Status"]) == ["completed", "failed"]
    reason = shown["Reason"][1]
    assert (
        reason.startswith("disk full while writing runs/batches/") and str(tmp_path) not in reason
    )
    assert any("1 of 2 inputs failed" in w.value for w in at.warning)
    assert at.selectbox(key=f"batch_files_of_{job.name}").options == ["lab/case.svs"]
    labels = {b.label for b in at.get("download_button")}
    assert {"Summary CSV", "nuclei.csv", "summary.json"} <= labels
    assert ".nuclei.csv.x.tmp" not in labels


# --- a full disk -----------------------------------------------------------------------------


class _Ref:
    """A task already run: its result or its error."""

    def __init__(self, call):
        try:
            self.value, self.error = call(), None
        except Exception as exc:  # what ray.get raises for a task that raised
            self.value, self.error = None, exc


class _Actor:
    def __init__(self, worker):
        self.worker = worker

    def __getattr__(self, method):
        call = getattr(self.worker, method)
        return types.SimpleNamespace(remote=lambda *args: _Ref(lambda: call(*args)))


class InProcessRay:
    """As much of ``ray`` as ``run_batch`` uses, in this process: an actor is the worker
    object itself and a task runs when it is sent, so a monkeypatch reaches it."""

    def remote(self, **options):
        def actor_class(cls):
            return types.SimpleNamespace(remote=lambda *args: _Actor(cls(*args)))

        return actor_class

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor):
        pass


@contextlib.contextmanager
def full_disk_under(folder: Path, names: tuple[str, ...] = ()):
    """Every atomic write into ``folder`` (only of ``names``, if given) fails with ENOSPC after
    a few bytes, as a disk that fills up does (the real writer removes its temporary file)."""
    real = atomic.open_atomic

    @contextlib.contextmanager
    def filling(path):
        with real(path) as handle:
            path = Path(path)
            if path.parent == folder and (not names or path.name in names):
                handle.write(b"half a file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            yield handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "open_atomic", filling)
        patch.setattr(outputs, "open_atomic", filling)
        yield


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory) -> dict[str, Path]:
    from devtools.slides import write_aperio_tiff

    folder = tmp_path_factory.mktemp("small")
    image = folder / "image.png"
    cv2.imwrite(str(image), generate_tile([9, 1], 200)[0][..., ::-1])
    slide = write_aperio_tiff(folder / "slide.svs", synthetic_rgb())  # 640², 128 µm of tissue
    return {"slide": slide, "image": image}


CONFIG = BatchConfig(region_tiles=4, slide=FAST)


def batch_in_process(
    inputs: dict[str, Path], out: Path, config: BatchConfig = CONFIG
) -> dict[str, dict]:
    """The batch's CSV rows by input stem, run in this process."""
    run_batch(
        list(inputs.values()), out, spec=StandInSpec(), config=config, ray_module=InProcessRay()
    )
    with open(out / CSV_FILE, newline="") as handle:
        return {Path(row["input"]).stem: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize(
    ("full", "names"),
    [("image", ()), ("slide", (outputs.CSV_FILE,))],
    ids=["image-first-file", "slide-at-the-merge"],
)
def test_a_full_disk_fails_one_input_and_a_rerun_after_freeing_space_finishes_it(
    small_inputs, tmp_path, full, names
):
    out = tmp_path / "out"
    other = "slide" if full == "image" else "image"
    with full_disk_under(out / full, names):
        rows = batch_in_process(small_inputs, out)
    assert rows[full]["status"] == "failed" and rows[full]["error"].startswith("disk full"), rows
    assert "\n" not in rows[full]["error"]
    assert rows[other]["status"] == "completed" and not rows[other]["error"]
    folder = out / full
    assert not (folder / outputs.SUMMARY_FILE).exists()
    assert not list(folder.glob(".*.tmp")), list(folder.iterdir())
    sha, settings = StandInSpec().card().model_sha256, given_settings(CONFIG.slide)
    items = {item.path.stem: item for item in collect_inputs(list(small_inputs.values()), out)}
    assert finished_summary(items[full], sha, "auto", settings) is None
    assert finished_summary(items[other], sha, "auto", settings) is not None
    if full == "slide":  # the finished chunks are kept for the re-run
        assert list((folder / outputs.PARTS_DIR).glob("chunk-*"))
    # Space freed: the same batch again finishes the failed input and skips the other.
    again = batch_in_process(small_inputs, out)
    assert again[full]["status"] == "completed" and again[other]["status"] == "skipped"
    assert finished_summary(items[full], sha, "auto", settings) is not None
    assert int(again["slide"]["nuclei"]) > 0 and int(again["image"]["nuclei"]) > 0
    if full == "slide":  # the bytes of an undisturbed run
        reference = run(small_inputs["slide"], tmp_path / "reference")
        assert int(again["slide"]["nuclei"]) == reference["nuclei"]
        for name in outputs.OUTPUT_FILES:
            assert (folder / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()


@pytest.mark.parametrize(
    "change", [{"flips": True}, {"threshold": 0.3}], ids=["flips", "threshold"]
)
def test_a_batch_with_other_settings_redoes_images_and_keeps_slide_folders(
    small_inputs, tmp_path, change
):
    out = tmp_path / "out"
    first = batch_in_process(small_inputs, out)
    assert {row["status"] for row in first.values()} == {"completed"}
    image_summary = json.loads((out / "image" / outputs.SUMMARY_FILE).read_text())
    assert image_summary["config"] == {"threshold": None, "pixel_size": None, "flips": False}
    slide_summary = (out / "slide" / outputs.SUMMARY_FILE).read_bytes()
    other = dataclasses.replace(CONFIG, slide=dataclasses.replace(FAST, **change))
    again = batch_in_process(small_inputs, out, other)
    # The image was made with other settings: computed again, with these.
    assert again["image"]["status"] == "completed"
    [(name, value)] = change.items()
    assert json.loads((out / "image" / outputs.SUMMARY_FILE).read_text())["config"][name] == value
    # The slide's folder holds the run with the others: refused, naming the difference, kept.
    assert again["slide"]["status"] == "failed"
    assert "holds another run" in again["slide"]["error"], again["slide"]
    assert f"config.{name}" in again["slide"]["error"]
    assert (out / "slide" / outputs.SUMMARY_FILE).read_bytes() == slide_summary
    # The same batch once more skips the image; the first settings redo it.
    assert batch_in_process(small_inputs, out, other)["image"]["status"] == "skipped"
    assert batch_in_process(small_inputs, out)["image"]["status"] == "completed"


def test_a_stop_between_tasks_reports_the_unfinished_inputs_stopped(small_inputs, tmp_path):
    looks = []

    def should_stop() -> bool:  # stop once the first task is back
        looks.append(True)
        return len(looks) > 1

    given = [small_inputs["image"], small_inputs["slide"]]
    rows = run_batch(
        given, tmp_path, spec=StandInSpec(), config=CONFIG, should_stop=should_stop,
        ray_module=InProcessRay(),
    )  # fmt: skip
    assert [(row["status"], row["error"]) for row in rows] == [
        ("completed", ""),
        ("stopped", "stopped on request"),
    ]
    assert not (tmp_path / "slide" / outputs.SUMMARY_FILE).exists()
    again = run_batch(given, tmp_path, spec=StandInSpec(), config=CONFIG, ray_module=InProcessRay())
    assert [row["status"] for row in again] == ["skipped", "completed"]


# --- end to end: the command line and the job, real Ray and a tiny bundle --------------------


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from segcore.bundles.card import ModelCard
    from segcore.bundles.store import save_bundle
    from segcore.data.preprocessing import PreprocessConfig
    from segcore.network.model import build_deeplabv3plus
    from tests.conftest import TINY_MODEL

    model = build_deeplabv3plus(**TINY_MODEL)
    card = ModelCard(
        name="tiny", input_size=256, preprocess=PreprocessConfig().to_dict(), threshold=0.5,
        pixel_size=0.25,
    )  # fmt: skip
    return save_bundle(model, tmp_path_factory.mktemp("bundles") / "tiny", card)


def segcore_batch(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "segcore", "batch", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip


@pytest.mark.slow  # a local Ray and TensorFlow in its worker: about 30 s
def test_the_command_line_batch_with_a_tiny_bundle_and_its_idempotent_rerun(
    small_inputs, tiny_bundle, tmp_path
):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    given = [str(small_inputs["slide"]), str(small_inputs["image"])]
    options = ["--out", str(out), "--model", str(tiny_bundle), "--runtime", "keras"]
    first = segcore_batch(*given, *options, "--pixel-size", "0.25")
    assert first.returncode == 0, first.stderr[-3000:]
    with open(out / CSV_FILE, newline="") as handle:
        rows = {Path(row["input"]).stem: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["image", "slide"]
    assert rows["slide"]["kind"] == "slide" and rows["image"]["kind"] == "image"
    for name, row in rows.items():
        assert row["status"] == "completed" and not row["error"] and row["output"] == name
        assert int(row["nuclei"]) >= 0 and float(row["tissue_mm2"]) > 0
        summary = json.loads((out / name / outputs.SUMMARY_FILE).read_text())
        assert summary["state"] == "completed" and summary["model"] == "tiny"
    for file in outputs.OUTPUT_FILES:
        assert (out / "slide" / file).is_file(), file
    for suffix in ("_prob.png", "_mask.png", "_labels.png", ".geojson", "_nuclei.csv"):
        assert (out / "image" / f"image{suffix}").is_file(), suffix
    assert not (out / "slide" / outputs.PARTS_DIR).exists()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != CSV_FILE}
    again = segcore_batch(*given, *options, "--pixel-size", "0.25")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(already finished)") == 2, again.stdout
    with open(out / CSV_FILE, newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["skipped", "skipped"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


@pytest.mark.slow  # two local Rays and TensorFlow in their workers: about 30 s
def test_a_real_batch_job_stops_cleanly_and_runs_again_to_the_end(small_inputs, tiny_bundle):
    pytest.importorskip("ray")
    given = [small_inputs["slide"], small_inputs["image"]]
    job = jobs.start_batch_job(given, model_ref=str(tiny_bundle), runtime="keras")
    # Ray is up and the driver's loop runs; the workers are still loading TensorFlow.
    wait_until(lambda: job.read_status().get("phase") == "segmenting", timeout=120)
    family = psutil.Process(job.read_status()["pid"]).children(recursive=True)
    assert family  # the local Ray's processes
    status = jobs.stop_batch_job(job.path, wait=True, timeout=120)
    assert status["state"] == "stopped" and status["stopped"] >= 1, job.log_tail()
    assert "stopped on request" in job.log_tail()
    wait_until(lambda: all(not_running(p.pid) for p in family), timeout=60)  # Ray is gone
    assert {row["status"] for row in jobs.read_summary(job.path)} <= {"stopped", "completed"}
    jobs.resume_batch_job(job.path)
    status = wait_for_state(job, FINAL, timeout=400)
    assert status["state"] == "completed", job.log_tail()
    assert status["completed"] + status["skipped"] == status["inputs_total"] == 2
    assert status["failed"] == 0 and status["inputs_done"] == 2
    rows = jobs.read_summary(job.path)
    assert {row["status"] for row in rows} <= {"completed", "skipped"}
    assert "summary.json" in [p.name for p in jobs.output_files(job.path, rows[0])]
