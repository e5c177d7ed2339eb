"""Drive the real app in a real browser: `streamlit run app.py` + Debian Chromium (Playwright).

Used by ``tests/test_browser.py`` and ``benchmarks/bench_browser.py``. Playwright's own browser
download cannot work here (no internet), so Chromium comes from Debian (``apt-get install
chromium``; ``scripts/install-test-deps.sh`` does it) and is found at ``$CHROMIUM`` or on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
"""Flags for headless Chromium here: without the networking ones it keeps dialling Google."""


def chromium_path() -> str | None:
    """Debian's Chromium: ``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(
    env: dict[str, str] | None = None, log_path: Path | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Starts ``streamlit run app.py`` on a free 127.0.0.1 port; yields its URL.

    Waits for ``/_stcore/health``; stops the server (SIGTERM, then SIGKILL) on exit.
    """
    port = free_port()
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed below
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1",
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextlib.contextmanager
def chromium(executable: str) -> Iterator:
    """A headless Chromium browser (Playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# --- page helpers ------------------------------------------------------------------------------


def wait_for_app(page, timeout_ms: float = 120_000) -> None:
    """Waits until the script run finished (no "running" indicator) and the page has content."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && document.querySelector('[data-testid="stMain"] h1');
        }""",
        timeout=timeout_ms,
    )


def exceptions(page) -> list[str]:
    """Texts of the exception boxes on the page."""
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def metric_values(page, label: str) -> list[str]:
    """Values of the ``st.metric`` read-outs whose label is exactly ``label``, in page order."""
    return page.evaluate(
        """(label) => Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
            .filter(m => m.querySelector('[data-testid="stMetricLabel"]')
                          ?.innerText.trim() === label)
            .map(m => m.querySelector('[data-testid="stMetricValue"]').innerText.trim())""",
        label,
    )


def slider_handle(page, label: str):
    """The keyboard-focusable range input of the ``st.slider`` labelled ``label``.

    Streamlit's slider (React Aria) keeps an ``<input type="range" aria-label=label>`` under its
    thumb; focus it and press the arrow keys to move by one step. Its value is ``value()``.
    """
    return page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label="{label}"]')


def slider_value(page, label: str) -> float:
    """The current value of the ``st.slider`` labelled ``label``."""
    return float(slider_handle(page, label).input_value())


_METRIC_IS = """([label, value]) =>
    Array.from(document.querySelectorAll('[data-testid="stMetric"]')).some(m =>
        m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === label
        && m.querySelector('[data-testid="stMetricValue"]')?.innerText.trim() === value)"""


def wait_for_metric(page, label: str, value: str, timeout_ms: float = 60_000) -> None:
    """Waits until some ``st.metric`` labelled ``label`` shows exactly ``value``."""
    page.wait_for_function(_METRIC_IS, arg=[label, value], timeout=timeout_ms, polling="raf")
