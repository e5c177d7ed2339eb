"""Server memory under sustained use: many browser sessions uploading new images, round after round.

Run: ``python benchmarks/bench_soak.py [--sessions 10] [--rounds 10] [--size 1000]``

One ``streamlit run app.py`` on 127.0.0.1 and headless Chromium (Debian's, via Playwright; one
browser per 5 sessions) with ``--sessions`` browser contexts, each its own Streamlit session on the
Predict page's Upload mode. Each round, every session uploads an image it has not uploaded before
(all at once, so the server predicts them concurrently) and the round ends when every page shows
its prediction. The server's resident memory (RSS, from ``psutil``) is recorded before the first
round (model loaded and warmed on one sample) and after each round, with the slowest upload of the
round; a final line gives the growth per round over the second half.

Images: ``--size``² crops of the MoNuSeg test tiles when ``../shared/data/monuseg`` (or
``$SEGCORE_MONUSEG``) exists, else synthetic tiles, flipped and rotated into distinct files so that
each upload is new content (a cache miss: a prediction, then an analysis to keep). With the caches
bounded by bytes (``appkit.state``; ``SEGCORE_CACHE_MB``, default 512), RSS should level off once
the analysis store is full instead of growing with every round.

The server runs without Streamlit's file watcher: with it, a source file edited during the soak
(in the working tree) makes Streamlit drop the app's modules from ``sys.modules`` at the next
script run while other sessions' runs are importing them (``KeyError: 'appkit'`` in the server
log, a blank page here, and the round never ends).

``--cache-mb`` sets ``SEGCORE_CACHE_MB`` for the server; ``--json`` writes the rows to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools import browser


def base_images(size: int) -> list:
    """``uint8`` RGB ``size``² images: crops of MoNuSeg test tiles, else synthetic tiles."""
    from segcore.data.images import read_image
    from segcore.data.synthetic import generate_tile

    monuseg = Path(os.environ.get("SEGCORE_MONUSEG", browser.REPO.parent / "shared/data/monuseg"))
    tiles = sorted((monuseg / "test" / "images").glob("*.tif"))
    images = [read_image(path)[:size, :size] for path in tiles[:12]]
    images = [image for image in images if image.shape[:2] == (size, size)]
    return images or [generate_tile([31, i], size)[0] for i in range(4)]


def write_upload(folder: Path, bases: list, session: int, round_: int) -> Path:
    """A PNG of new content for ``session`` in ``round_``: a base image, flipped and rotated,
    with one pixel marking the pair (so that no two files have the same bytes)."""
    import cv2
    import numpy as np

    index = round_ * 1000 + session
    image = np.rot90(bases[index % len(bases)], k=(index // len(bases)) % 4)
    if (index // (4 * len(bases))) % 2:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    image[0, 0] = (session % 256, round_ % 256, 7)
    path = folder / f"s{session:02d}_r{round_:02d}.png"
    cv2.imwrite(str(path), image[..., ::-1])
    return path


def server_process(url: str):
    """The ``psutil.Process`` listening on ``url``'s port (the Streamlit server)."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN":
            return psutil.Process(connection.pid)
    raise RuntimeError(f"no process listens on port {port}")


def rss_mb(process) -> float:
    return process.memory_info().rss / 2**20


SESSIONS_PER_BROWSER = 5
"""Sessions per Chromium process: with more than 6 pages on one host in one browser, the
uploads of the 7th and later never left the browser here (Chromium's per-host connection pool
is shared by its contexts), so larger soaks use several browsers."""


def open_sessions(chrome, url: str, count: int) -> list:
    """``count`` pages, each in its own browser context (its own Streamlit session), on the
    Predict page's Upload mode."""
    pages = []
    for _ in range(count):
        context = chrome.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(600_000)
        page.goto(f"{url}/predict")
        browser.wait_for_app(page, timeout_ms=600_000)
        page.get_by_text("Upload", exact=True).click()
        browser.wait_for_app(page, timeout_ms=600_000)
        pages.append(page)
    return pages


def upload_round(pages: list, files: list[Path]) -> float:
    """Sets every page's image uploader to its file, then waits for every prediction; returns
    the seconds until the last one was shown."""
    start = time.perf_counter()
    for page, path in zip(pages, files, strict=True):
        page.locator('[data-testid="stFileUploader"] input[type="file"]').nth(0).set_input_files(
            str(path)
        )
    for page, path in zip(pages, files, strict=True):
        page.wait_for_function(
            """(name) => Array.from(
                    document.querySelectorAll('[data-testid="stCaptionContainer"]'))
                .some(c => c.innerText.includes(name + ' — '))""",
            arg=path.name,
            timeout=600_000,
        )
        browser.wait_for_app(page, timeout_ms=600_000)
    return time.perf_counter() - start


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of one upload each")
    parser.add_argument("--size", type=int, default=1000, help="image side in pixels")
    parser.add_argument("--cache-mb", type=float, help="SEGCORE_CACHE_MB for the server")
    parser.add_argument("--json", type=Path, help="write the per-round rows here")
    args = parser.parse_args()
    executable = browser.chromium_path()
    if executable is None:
        sys.exit("Chromium not found: run scripts/install-test-deps.sh or set CHROMIUM")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; browser {executable}")
    print(f"{args.sessions} sessions × {args.rounds} rounds of {args.size}² uploads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {
            "SEGCORE_RUNS_DIR": str(folder / "runs"),
            "HF_HUB_OFFLINE": "1",
            "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",  # see the module docstring
        }
        if args.cache_mb is not None:
            env["SEGCORE_CACHE_MB"] = str(args.cache_mb)
        bases = base_images(args.size)
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(browser.streamlit_server(env))
            server = server_process(url)
            playwright = stack.enter_context(sync_playwright())
            pages = []  # the first session loads the model
            for start in range(0, args.sessions, SESSIONS_PER_BROWSER):
                chrome = playwright.chromium.launch(
                    executable_path=executable, headless=True, args=browser.CHROMIUM_ARGS
                )
                stack.callback(chrome.close)
                count = min(SESSIONS_PER_BROWSER, args.sessions - start)
                pages += open_sessions(chrome, url, count)
            rows.append({"round": 0, "rss_mb": rss_mb(server), "seconds": 0.0})
            print(f"round  0 (sessions open): RSS {rows[-1]['rss_mb']:7.0f} MB")
            for round_ in range(1, args.rounds + 1):
                files = [write_upload(folder, bases, s, round_) for s in range(args.sessions)]
                seconds = upload_round(pages, files)
                errors = sum(len(browser.exceptions(page)) for page in pages)
                rows.append({"round": round_, "rss_mb": rss_mb(server), "seconds": seconds})
                print(
                    f"round {round_:2d}: RSS {rows[-1]['rss_mb']:7.0f} MB, all {args.sessions} "
                    f"predictions shown in {seconds:6.1f} s"
                    + (f", {errors} exceptions on the pages" if errors else "")
                )
                for path in files:
                    path.unlink()
    half = rows[len(rows) // 2 :]
    if len(half) >= 2:
        slope = (half[-1]["rss_mb"] - half[0]["rss_mb"]) / (half[-1]["round"] - half[0]["round"])
        print(
            f"RSS: {rows[0]['rss_mb']:.0f} MB with the sessions open, {rows[-1]['rss_mb']:.0f} MB "
            f"after round {rows[-1]['round']}, peak {max(r['rss_mb'] for r in rows):.0f} MB; "
            f"{slope:+.0f} MB per round over rounds {half[0]['round']}–{half[-1]['round']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
