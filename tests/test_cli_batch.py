"""``python -m segcore batch`` on the command line: one-line refusals (exit status 2) before
anything starts — a cluster that does not answer, Ray missing, bad options — and the
progress bar. The batch itself is tested in tests/test_batch.py."""

from __future__ import annotations

import io
import socket
import sys
import time

import cv2
import pytest

from segcore.cli import main
from segcore.cli.batch_cmd import BatchBar
from segcore.data.synthetic import generate_tile


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "tile.png"
    cv2.imwrite(str(path), generate_tile([3, 0], 64)[0][..., ::-1])
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("form", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_address_that_does_not_answer_is_one_line_and_status_2(image, tmp_path, capsys, form):
    pytest.importorskip("ray")
    address = form.format(port=free_port())
    started = time.monotonic()
    status = main(["batch", str(image), "--out", str(tmp_path / "out"), "--ray", address])
    assert status == 2 and time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --ray {address}: no Ray cluster answers at 127.0.0.1:"
                   f"{address.rsplit(':', 1)[1]} (Connection refused within 10 s); start one "
                   "(ray start --head) or check the address"]  # fmt: skip
    assert not (tmp_path / "out" / "tile").exists()


def test_without_ray_it_says_how_to_install_it(image, tmp_path, capsys, monkeypatch):
    from segcore.batch.cluster import RAY_VERSION

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    status = main(["batch", str(image), "--out", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: batch needs Ray") and f"pip install ray=={RAY_VERSION}" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", "0"], "--workers 0: give at least 1"),
        (["--region-tiles", "0"], "--region-tiles 0: give at least 1"),
        (["--cpus-per-worker", "-1"], "--cpus-per-worker -1: give a positive number"),
        (["--pixel-size", "abc"], "--pixel-size 'abc': not a number"),
        (["--model", "no-such-bundle"], "no-such-bundle"),
        (["--model", "baseline", "--flips"], "--flips: test-time flips apply to a network"),
    ],
)
def test_bad_options_are_refused_before_ray_starts(image, tmp_path, capsys, flags, said):
    pytest.importorskip("ray")
    status = main(["batch", str(image), "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: ") and said in err and "\n" not in err


def test_the_progress_bar_counts_inputs_and_regions():
    stream = io.StringIO()
    bar = BatchBar(quiet=False, stream=stream)
    info = {"inputs_done": 0, "inputs_total": 4, "regions_done": 0, "regions_total": 0}
    bar({**info, "failed": 0})
    bar({**info, "failed": 0})  # unchanged: not drawn again
    bar({**info, "inputs_done": 2, "regions_done": 3, "regions_total": 8, "failed": 1})
    lines = stream.getvalue().splitlines()
    assert lines == [
        f"batch [{'.' * 30}] 0/4 inputs",
        f"batch [{'=' * 15}{'.' * 15}] 2/4 inputs, 3/8 slide regions, 1 failed",
    ]
