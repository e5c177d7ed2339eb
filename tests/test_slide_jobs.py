"""Slide runs as background jobs: start, queue (first come, first served), stop, kill -9,
resume and list, with a fake runner that goes through the real job process
(:func:`segcore.wholeslide.job_runner.run_slide_job`) but sleeps instead of segmenting.
The real end to end (a slide, a model, a kill -9 after the first chunk) is the slow test
at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from segcore.errors import ConfigError, SlideError
from segcore.training.locks import DeviceLock, lock_path
from segcore.training.runs import RunError, process_alive, wait_for_state
from segcore.wholeslide.config import SlideRunConfig
from segcore.wholeslide.job_runner import stop_on_signals
from segcore.wholeslide.jobs import (
    LOCK_KEY,
    JobDir,
    default_slides_dir,
    list_slide_jobs,
    read_status,
    resume_slide_job,
    running_slide_job,
    start_slide_job,
    stop_slide_job,
)
from tests.conftest import REPO
from tests.test_jobs import wait_until

# Goes through run_slide_job (queue, lock, status, signals, failure records) with a runner that
# "segments" FAKE_TILES tiles of 20 ms each; FAKE_FAIL=slide or disk fails at tile 2.
FAKE_RUNNER = """
import errno, os, sys, time
from segcore.errors import SlideError
from segcore.wholeslide.job_runner import run_slide_job

def runner(job, spec, progress, should_stop):
    tiles = int(os.environ.get("FAKE_TILES", "100000"))
    print("fake runner has the lock", job.job_id, "session", os.getsid(0), "cwd", os.getcwd(),
          flush=True)
    for done in range(tiles):
        if should_stop():
            return {"state": "stopped"}
        if done == 2 and os.environ.get("FAKE_FAIL") == "slide":
            raise SlideError(f"{spec['slide']}: cannot read the region 512,0 256×256 (corrupt)")
        if done == 2 and os.environ.get("FAKE_FAIL") == "disk":
            raise OSError(errno.ENOSPC, "No space left on device", str(job.path / "parts"))
        time.sleep(0.02)
        progress({"phase": "segmenting", "tiles_done": done + 1, "tiles_total": tiles,
                  "nuclei": 3 * (done + 1), "eta_s": 0.02 * (tiles - done - 1)})
    return {"state": "completed", "nuclei": 3 * tiles, "tissue_mm2": 1.5}

status = run_slide_job(sys.argv[1], runner=runner, poll=0.05)
print("fake job ended", status["state"], flush=True)
"""

FINAL = ("completed", "stopped", "failed")


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_runner.py"
    script.write_text(FAKE_RUNNER)
    return [sys.executable, str(script)]


@pytest.fixture
def slides_dir(tmp_path):
    return tmp_path / "runs" / "slides"


@pytest.fixture
def slide(tmp_path):
    path = tmp_path / "slide.svs"
    path.write_bytes(b"not read by the fake runner")
    return path


@pytest.fixture(autouse=True)
def stop_leftovers(slides_dir):
    """Kills any job process a failing test left running."""
    yield
    for job in list_slide_jobs(slides_dir):
        pid = job["status"].get("pid")
        if job["state"] in ("queued", "running") and pid and pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


def start(slides_dir, fake, slide, tiles=None, **kwargs):
    env = {"FAKE_TILES": str(tiles)} if tiles else {}
    env.update(kwargs.pop("env", {}))
    return start_slide_job(
        slide,
        model_ref="default",
        config={"core_size": 256},
        runs_dir=slides_dir,
        command=fake,
        env=env,
        **kwargs,
    )


def state_of(job):
    return job.read_status().get("state")


def holder(slides_dir):
    record = DeviceLock(lock_path(slides_dir.resolve(), LOCK_KEY)).holder()
    return None if record is None else record["run_id"]


def test_start_runs_in_its_own_session_and_completes(slides_dir, fake, slide):
    job = start(slides_dir, fake, slide, tiles=20, job_id="slide-a")
    assert job.path == slides_dir.resolve() / "slide-a"
    spec = json.loads(job.config_path.read_text())
    assert spec["slide"] == str(slide) and spec["model"] == "default"
    assert spec["config"] == SlideRunConfig(core_size=256).to_dict()  # checked, in full
    status = job.read_status_raw()
    assert status["state"] in ("queued", "running") and status["pid"] != os.getpid()
    pid = status["pid"]
    wait_until(lambda: "fake runner has the lock" in job.log_path.read_text())
    # as the runner saw itself (the 20-tile job may have ended by now): its own session, the
    # repository as working directory
    assert f"session {pid} cwd {REPO}\n" in job.log_path.read_text() and os.getsid(0) != pid

    final = wait_for_state(job, FINAL, timeout=30)
    assert final["state"] == "completed", final
    assert final["tiles_done"] == final["tiles_total"] == 20
    assert final["nuclei"] == 60 and final["tissue_mm2"] == 1.5 and final["phase"] == "completed"
    assert final["pid"] == pid and final["ended_at"] and final["position"] is None
    # the final status is written first; the lock's release and the last log line follow it
    wait_until(lambda: "fake job ended completed" in job.log_path.read_text())
    wait_until(lambda: holder(slides_dir) is None)
    assert running_slide_job(slides_dir) is None
    assert not job.reserve_path.exists()
    [entry] = list_slide_jobs(slides_dir)
    assert entry["job_id"] == "slide-a" and entry["state"] == "completed"
    assert entry["slide"] == str(slide) and entry["model"] == "default"


def test_a_second_job_is_queued_then_runs_and_stop_ends_a_queued_one(slides_dir, fake, slide):
    first = start(slides_dir, fake, slide, job_id="slide-1")
    wait_until(lambda: state_of(first) == "running")
    second = start(slides_dir, fake, slide, job_id="slide-2")
    third = start(slides_dir, fake, slide, job_id="slide-3")
    wait_until(lambda: [job.read_status_raw().get("position") for job in (second, third)] == [1, 2])
    assert second.read_status()["state"] == third.read_status()["state"] == "queued"
    assert holder(slides_dir) == "slide-1" and running_slide_job(slides_dir).path == first.path
    assert process_alive(second.read_status()["pid"])  # its own process, waiting

    stopped = stop_slide_job(second.path, wait=True, timeout=20)  # stop a queued job
    assert stopped["state"] == "stopped" and stopped["reason"] == "stopped while queued"
    wait_until(lambda: third.read_status_raw().get("position") == 1)
    assert holder(slides_dir) == "slide-1"  # the running job did not notice

    assert stop_slide_job(first.path, wait=True, timeout=20)["state"] == "stopped"
    wait_until(lambda: state_of(third) == "running")
    assert holder(slides_dir) == "slide-3"
    assert stop_slide_job(third.path, wait=True, timeout=20)["state"] == "stopped"
    states = {job["job_id"]: job["state"] for job in list_slide_jobs(slides_dir)}
    assert states == {"slide-1": "stopped", "slide-2": "stopped", "slide-3": "stopped"}


def test_queue_is_first_come_first_served(slides_dir, fake, slide):
    first = start(slides_dir, fake, slide, job_id="slide-z-first")
    wait_until(lambda: state_of(first) == "running")
    # Later job ids sort first: the order must come from the queue, not the names.
    queued = [start(slides_dir, fake, slide, job_id=f"slide-{c}") for c in "cba"]
    wait_until(lambda: all(state_of(job) == "queued" for job in queued))
    wait_until(lambda: [job.read_status()["position"] for job in queued] == [1, 2, 3])
    order = [first]
    for _ in queued:
        stop_slide_job(order[-1].path, wait=True, timeout=20)
        wait_until(lambda: holder(slides_dir) not in (None, order[-1].job_id))
        order.append(JobDir(slides_dir.resolve() / holder(slides_dir)))
    assert [job.job_id for job in order[1:]] == [job.job_id for job in queued]
    stop_slide_job(order[-1].path, wait=True, timeout=20)


def test_two_jobs_started_at_once_one_runs_one_waits(slides_dir, fake, slide):
    jobs, errors = [], []

    def launch(name):
        try:
            jobs.append(start(slides_dir, fake, slide, job_id=name))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(f"slide-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(jobs) == 2
    wait_until(lambda: sorted(state_of(job) for job in jobs) == ["queued", "running"])
    time.sleep(0.5)  # and it stays so
    assert sorted(state_of(job) for job in jobs) == ["queued", "running"]
    running = next(job for job in jobs if state_of(job) == "running")
    waiting = next(job for job in jobs if job is not running)
    assert holder(slides_dir) == running.job_id
    stop_slide_job(running.path, wait=True, timeout=20)
    wait_until(lambda: state_of(waiting) == "running")
    stop_slide_job(waiting.path, wait=True, timeout=20)


def test_kill_9_of_the_running_job_lets_the_queued_one_take_over(slides_dir, fake, slide):
    first = start(slides_dir, fake, slide, job_id="slide-killed")
    pid = wait_for_state(first, ("running",), timeout=20)["pid"]
    second = start(slides_dir, fake, slide, tiles=10, job_id="slide-next")
    wait_until(lambda: second.read_status_raw().get("position") == 1)
    os.kill(pid, signal.SIGKILL)
    status = wait_for_state(first, ("failed",), timeout=20)
    assert str(pid) in status["reason"] and "killed" in status["reason"]
    assert "slide resume" in status["hint"]
    assert wait_for_state(second, FINAL, timeout=30)["state"] == "completed"  # took the lock

    resumed = resume_slide_job(first.path, command=fake, env={"FAKE_TILES": "5"})
    assert resumed.path == first.path
    final = wait_for_state(first, FINAL, timeout=30)
    assert final["state"] == "completed" and final["reason"] is None
    assert final["pid"] != pid
    assert first.log_path.read_text().count("launched:") == 2  # one log, appended


def test_resume_refuses_active_and_completed_jobs_and_resumes_a_stopped_one(
    slides_dir, fake, slide
):
    job = start(slides_dir, fake, slide, job_id="slide-r")
    wait_until(lambda: state_of(job) == "running")
    with pytest.raises(RunError, match="already running"):
        resume_slide_job(job.path, command=fake)
    assert stop_slide_job(job.path, wait=True, timeout=20)["state"] == "stopped"
    assert job.stop_requested()
    resume_slide_job(job.path, command=fake, env={"FAKE_TILES": "3"})
    assert not job.stop_requested()
    assert wait_for_state(job, FINAL, timeout=30)["state"] == "completed"
    with pytest.raises(RunError, match="completed"):
        resume_slide_job(job.path, command=fake)
    assert stop_slide_job(job.path)["state"] == "completed"  # nothing to stop
    assert not job.stop_requested()
    with pytest.raises(RunError, match="not a run folder"):
        resume_slide_job(slides_dir / "missing", command=fake)


def test_failed_with_the_slide_error_or_disk_full(slides_dir, fake, slide):
    bad = start(slides_dir, fake, slide, env={"FAKE_FAIL": "slide"}, job_id="slide-bad")
    status = wait_for_state(bad, FINAL, timeout=30)
    assert status["state"] == "failed"
    assert "cannot read the region 512,0" in status["reason"] and str(slide) in status["reason"]
    full = start(slides_dir, fake, slide, env={"FAKE_FAIL": "disk"}, job_id="slide-full")
    status = wait_for_state(full, FINAL, timeout=30)
    assert status["state"] == "failed" and status["reason"].startswith("disk full")
    assert "slide resume" in status["hint"] and not full.reserve_path.exists()
    wait_until(lambda: holder(slides_dir) is None)


def test_a_process_that_dies_without_reporting_is_failed(slides_dir, slide):
    job = start(slides_dir, [sys.executable, "-c", "import sys; sys.exit(3)"], slide)
    wait_until(lambda: "status 3" in (job.read_status_raw().get("reason") or ""))
    status = read_status(job.path)
    assert status["state"] == "failed" and "slide job process" in status["reason"]


def test_bad_starts_leave_nothing_behind(slides_dir, fake, slide, tmp_path):
    with pytest.raises(SlideError, match="no such slide file"):
        start(slides_dir, fake, tmp_path / "missing.svs")
    with pytest.raises(ConfigError, match="core_size"):
        start_slide_job(slide, model_ref="default", config={"core_size": 3}, runs_dir=slides_dir)
    for bad in ("../escape", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="plain folder name"):
            start(slides_dir, fake, slide, job_id=bad)
    assert list_slide_jobs(slides_dir) == []
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunError, match="cannot write the run folder"):
        start(tmp_path / "a-file" / "slides", fake, slide)
    job = start(slides_dir, fake, slide, tiles=2, job_id="slide-x")
    with pytest.raises(ConfigError, match="already exists"):
        start(slides_dir, fake, slide, job_id="slide-x")
    assert wait_for_state(job, FINAL, timeout=30)["state"] == "completed"


def test_unreadable_jobs_are_listed_as_such_and_the_default_folder(slides_dir, monkeypatch):
    broken = slides_dir / "slide-broken"
    broken.mkdir(parents=True)
    (broken / "status.json").write_text("{half")
    [entry] = list_slide_jobs(slides_dir)
    assert entry["state"] == "unreadable" and "status.json" in entry["reason"]
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(slides_dir.parent))
    assert default_slides_dir() == slides_dir
    assert [job["job_id"] for job in list_slide_jobs()] == ["slide-broken"]


def test_stop_on_signals_sets_a_flag_and_a_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: ray.init installs its own
    with stop_on_signals(signal.SIGINT, signal.SIGTERM) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(stop.is_set, timeout=5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_jobs_do_not_import_tensorflow():
    code = (
        "import sys, segcore.wholeslide.jobs, segcore.wholeslide.job_runner; "
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'streamlit')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_kill_9_after_the_first_chunk_then_resume_gives_the_outputs_of_an_uninterrupted_run(
    slides_dir, tmp_path
):
    """A real job process (``python -m segcore slide resume``) with a tiny Keras bundle."""
    from devtools.slides import write_aperio_tiff
    from segcore.bundles.card import ModelCard
    from segcore.bundles.store import save_bundle
    from segcore.data.preprocessing import PreprocessConfig
    from segcore.network.model import build_deeplabv3plus
    from tests.conftest import TINY_MODEL
    from tests.test_cli_slides import OUTPUTS, tissue_on_glass

    card = ModelCard(name="tiny", input_size=256, preprocess=PreprocessConfig().to_dict())
    bundle = save_bundle(build_deeplabv3plus(**TINY_MODEL), tmp_path / "tiny", card)
    rgb = tissue_on_glass(1024, 1024, (64, 64, 896, 896), seed=7)
    slide = write_aperio_tiff(tmp_path / "tissue.svs", rgb, levels=(1, 4))
    config = {"core_size": 256, "halo": 32, "chunk_tiles": 2, "runtime": "keras"}
    env = {"SEGCORE_RUNTIME": "keras", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(job_id):
        return start_slide_job(
            slide, model_ref=bundle, config=config, runs_dir=slides_dir, job_id=job_id, env=env
        )

    job = run("slide-killed")
    parts = job.path / "parts"
    wait_until(lambda: any(parts.glob("chunk-*")) or state_of(job) in FINAL, timeout=300)
    pid = job.read_status_raw()["pid"]
    os.kill(pid, signal.SIGKILL)
    status = wait_for_state(job, ("failed",), timeout=30)
    assert "killed" in status["reason"], status
    kept = sorted(p.name for p in parts.glob("chunk-*"))
    assert kept and not (job.path / "summary.json").exists()
    assert status["tiles_total"] == 16 and status["tiles_done"] < 16

    resume_slide_job(job.path, env=env)
    final = wait_for_state(job, FINAL, timeout=300)
    assert final["state"] == "completed", (final, job.log_tail())
    summary = json.loads((job.path / "summary.json").read_text())
    assert summary["resumed"] and summary["tiles_computed"] <= 16 - 2 * len(kept)
    assert final["nuclei"] == summary["nuclei"] and final["tiles_done"] == 16

    whole = run("slide-whole")
    assert wait_for_state(whole, FINAL, timeout=300)["state"] == "completed"
    assert not json.loads((whole.path / "summary.json").read_text())["resumed"]
    for name in OUTPUTS:
        assert (job.path / name).read_bytes() == (whole.path / name).read_bytes(), name
