"""The Train page in a real browser follows a run to its end without a reload: the Start button
comes back, the Runs list shows the new state and "Use this model" appears.

The run is a fake one in a temporary runs folder: its "trainer" is a ``sleep`` process that
holds the device lock; the test writes the completed status and ends the process, as a trainer
does, while the page stays open. Chromium as in ``tests/test_browser.py``.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from devtools import browser
from segcore.bundles.store import BUNDLE_FILES
from segcore.training import devices
from segcore.training.locks import lock_for
from segcore.training.runs import RunDir, process_start_time
from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts" / "browser"

pytestmark = pytest.mark.slow


@pytest.fixture
def chromium_executable() -> str:
    path = browser.chromium_path()
    if path is None:
        if os.environ.get("SEGCORE_SKIP_BROWSER") == "1":
            pytest.skip("SEGCORE_SKIP_BROWSER=1 and no Chromium")
        pytest.fail("Chromium not found: run scripts/install-test-deps.sh or set CHROMIUM")
    return path


def body_has(page, *texts: str, timeout_ms: float = 60_000) -> None:
    page.wait_for_function(
        "texts => texts.every(t => document.body.innerText.includes(t))",
        arg=list(texts),
        timeout=timeout_ms,
    )


def test_the_train_page_follows_a_run_to_its_end_without_a_reload(tmp_path, chromium_executable):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    runs = tmp_path / "runs"
    trainer = subprocess.Popen(["sleep", "600"])
    try:
        run = RunDir(runs / "run-a")
        run.create({"epochs": 8})
        run.write_status(
            state="running",
            pid=trainer.pid,
            pid_started=process_start_time(trainer.pid),
            epoch=7,
            epochs=8,
            batch=75,
            steps_per_epoch=75,
            device="CPU",
            phase="scoring validation sources",
        )
        lock_for(runs, devices.default_lock_key()).acquire("run-a", trainer.pid)
        env = {"SEGCORE_RUNS_DIR": str(runs), "HF_HUB_OFFLINE": "1"}
        log = ARTIFACTS / "streamlit-train.log"
        with (
            browser.streamlit_server(env, log_path=log) as url,
            browser.chromium(chromium_executable) as chrome,
        ):
            context = chrome.new_context(viewport={"width": 1500, "height": 1100})
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{url}/train")
            browser.wait_for_app(page)
            body_has(page, "run-a · running", "now scoring validation sources")
            start = page.get_by_role("button", name="Start training")
            assert start.is_disabled()
            assert page.get_by_role("button", name="Use this model").count() == 0

            # The trainer finishes: bundle, completed status, its process ends.
            run.bundle_dir.mkdir()
            for name in BUNDLE_FILES:
                (run.bundle_dir / name).write_text("{}")
            run.write_status(state="completed", phase=None, val_dice=0.4531, threshold=0.65)
            trainer.kill()
            trainer.wait()

            body_has(page, "run-a · completed", "Completed: validation Dice 0.453")
            page.get_by_role("button", name="Use this model").wait_for(timeout=30_000)
            browser.wait_for_app(page)
            # the page may read the lock before the kill and the runs after the status:
            # Start is then enabled at the next fragment tick (2 s), so wait for it
            from playwright.sync_api import expect

            expect(start).to_be_enabled(timeout=30_000)
            assert "run-a · running" not in page.inner_text("body")
            assert browser.exceptions(page) == []
            page.screenshot(path=str(ARTIFACTS / "train-run-ended.png"), full_page=True)
            context.close()
    finally:
        trainer.kill()
        trainer.wait()
