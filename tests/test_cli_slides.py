"""``python -m segcore slide ...``: info on each format, runs (one slide, several, Ctrl-C then
the same command again), and bad input as one line with exit status 2."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from devtools.slides import write_aperio_tiff, write_ome_tiff, write_plain_tiff
from segcore.cli import main
from segcore.cli.slides_cmd import TileBar, summary_line
from segcore.data.synthetic import generate_tile
from tests.conftest import REPO

OUTPUTS = ("nuclei.geojson.gz", "nuclei.csv", "density.npy", "density.png")


def tissue_on_glass(height: int, width: int, box: tuple[int, int, int, int], seed: int = 1):
    """White glass with synthetic H&E (one 256² tile repeated) inside ``box`` (x, y, w, h)."""
    rgb = np.full((height, width, 3), 255, np.uint8)
    tile, _ = generate_tile(np.random.default_rng(seed), 256)
    x, y, w, h = box
    reps = (h // 256 + 1, w // 256 + 1, 1)
    rgb[y : y + h, x : x + w] = np.tile(tile, reps)[:h, :w]
    return rgb


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """An Aperio SVS (0.25 µm/px, 40×, 2 levels), an OME-TIFF (0.5 µm/px), a plain TIFF without
    a pixel size, a truncated SVS and a text file named .svs."""
    folder = tmp_path_factory.mktemp("slides")
    rgb = tissue_on_glass(1024, 2048, (512, 256, 1024, 512))
    paths = {
        "svs": write_aperio_tiff(folder / "aperio.svs", rgb, levels=(1, 4)),
        "ome": write_ome_tiff(folder / "ome.ome.tif", rgb, mpp=0.5, levels=(1, 2)),
        "plain": write_plain_tiff(folder / "plain.tif", rgb),
    }
    data = paths["svs"].read_bytes()
    paths["truncated"] = folder / "truncated.svs"
    paths["truncated"].write_bytes(data[: len(data) // 3])
    paths["text"] = folder / "notes.svs"
    paths["text"].write_text("not a slide\n")
    return paths


def run_cli(capsys, *argv):
    status = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return status, out, err


def test_info_on_each_format(slides, capsys):
    status, out, _ = run_cli(capsys, "slide", "info", slides["svs"])
    assert status == 0
    assert "aperio (read with openslide)" in out and "2048 × 1024 px at level 0" in out
    assert "levels      2: 2048 × 1024 (1×), 512 × 256 (4×)" in out
    assert "0.25 µm/px (from openslide.mpp-x)" in out and "objective   40×" in out
    assert "% of the slide, 0.0" in out and "mm²" in out

    status, out, _ = run_cli(capsys, "slide", "info", slides["ome"])
    assert status == 0 and "ome-tiff (read with tifffile)" in out
    assert "0.5 µm/px (from OME PhysicalSizeX)" in out and "objective   not recorded" in out

    status, out, _ = run_cli(capsys, "slide", "info", slides["plain"])
    assert status == 0 and "unknown: the file records none; give it with --pixel-size" in out
    assert "area unknown without a pixel size" in out


def test_info_json_with_a_given_pixel_size(slides, capsys):
    status, out, _ = run_cli(capsys, "slide", "info", slides["plain"], "--json", "--pixel-size", 1)
    assert status == 0
    facts = json.loads(out)
    assert facts["width"] == 2048 and facts["height"] == 1024 and len(facts["levels"]) == 1
    assert facts["pixel_size"] == 1.0 and facts["pixel_size_source"] == "given"
    tissue = facts["tissue"]
    assert tissue["fraction"] == pytest.approx(0.25, abs=0.03)  # the 1024 × 512 box
    area = tissue["fraction"] * 2048 * 1024 * 1.0**2 / 1e6  # µm² → mm² at 1 µm/px
    assert tissue["area_mm2"] == pytest.approx(area, rel=1e-6)
    assert 0 < tissue["threshold"] < 1


def test_info_does_not_import_tensorflow(slides):
    code = (
        "import sys; from segcore.cli import main; "
        f"assert main(['slide', 'info', {str(slides['svs'])!r}]) == 0; "
        "print('TF', any(m in sys.modules for m in ('tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("TF False")


def test_bad_input_is_one_line_and_status_2(slides, tmp_path, capsys):
    out = tmp_path / "out"
    svs = slides["svs"]
    cases = [
        (["info", slides["text"]], "notes.svs: not a slide"),
        (["info", slides["truncated"]], "truncated.svs: truncated"),
        (["info", tmp_path / "missing.svs"], "missing.svs: no such slide file"),
        (["info", svs, "--pixel-size", "abc"], "--pixel-size 'abc': not a number"),
        (["run", slides["plain"], "--out", out], "plain.tif: the slide records no pixel size"),
        (["run", slides["text"], "--out", out], "notes.svs: not a slide"),
        (["run", slides["truncated"], "--out", out], "truncated.svs: truncated"),
        (["run", svs, "--out", out, "--pixel-size", "0"], "--pixel-size 0 µm/px is out of range"),
        (["run", svs, "--out", out, "--region", "1,2,3"], "--region '1,2,3': give X,Y,W,H"),
        (["run", svs, "--out", out, "--region", "0,0,-4,4"], "--region '0,0,-4,4'"),
        (["run", svs, "--out", out, "--region", "9000,0,8,8"], "starts outside the slide"),
        (["run", svs, "--out", out, "--threshold", "1.5"], "--threshold 1.5: give a probability"),
        (["run", svs, svs, "--out", out], "would both write aperio/ in --out"),
        (["run", svs, "--out", svs / "x"], "cannot write there (Not a directory)"),
        (["run", svs, "--out", out, "--model", tmp_path / "no-model"], "no-model"),
        (["resume", tmp_path], "not a run folder (no job.json)"),
    ]
    for argv, expected in cases:
        status, printed, err = run_cli(capsys, "slide", *argv)
        assert status == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, (expected, err)
        assert printed == ""
    assert not out.exists() or list(out.iterdir()) == []  # nothing written by a bad run


def test_run_one_slide_into_the_folder_and_several_into_subfolders(slides, tmp_path, capsys):
    out = tmp_path / "one"
    argv = ["slide", "run", slides["svs"], "--model", "baseline", "--out", out]
    status, printed, err = run_cli(capsys, "-q", *argv)
    assert status == 0, err
    assert printed.startswith("aperio.svs: ") and " nuclei in 0.0" in printed
    assert "mm² of tissue" in printed and "MP/s" in printed and printed.count("\n") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert all((out / name).is_file() for name in OUTPUTS)
    assert f"{summary['nuclei']:,} nuclei" in printed and summary["nuclei"] > 20
    assert summary["runtime"] and summary["config"]["region"] is None

    many = tmp_path / "many"
    region = "512,256,512,512"
    argv = ["slide", "run", slides["svs"], slides["ome"], "--model", "baseline", "--out", many]
    status, printed, err = run_cli(capsys, *argv, "--region", region, "--threshold", "0.4")
    assert status == 0, err
    assert printed.count("\n") == 2 and "tiles" in err  # a progress bar on stderr
    for stem in ("aperio", "ome.ome"):
        summary = json.loads((many / stem / "summary.json").read_text())
        assert summary["config"]["region"] == [512, 256, 512, 512]
        assert summary["config"]["threshold"] == 0.4


def test_flips_need_a_network_and_are_refused_for_the_baseline_before_anything(
    slides, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["slide", "run", slides["svs"], "--model", "baseline", "--out", out, "--flips"]
    status, printed, err = run_cli(capsys, "-q", *argv)
    assert status == 2 and printed == ""
    assert "flips" in err and "baseline" in err and err.count("\n") == 1, err
    assert not (out / "run.json").exists()


def test_a_full_disk_during_a_run_is_one_line(slides, tmp_path, capsys, monkeypatch):
    import errno

    import segcore.wholeslide.segment as segment

    def full(slide, out, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "parts"))

    monkeypatch.setattr(segment, "segment_slide", full)
    out = tmp_path / "out"
    argv = ["slide", "run", slides["svs"], "--model", "baseline", "--out", out]
    status, printed, err = run_cli(capsys, "-q", *argv)
    assert status == 2 and printed == "" and err.count("\n") == 1
    assert err.startswith(f"error: {out}: disk full (No space left on device)")
    assert "run the same command again" in err


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt) during the test, whatever pytest was
    started with (a shell starting it in the background leaves SIGINT ignored); the previous
    one afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_chunks_and_the_same_command_resumes(
    tmp_path, capsys, monkeypatch, python_sigint
):
    import segcore.wholeslide.segment as segment

    rgb = tissue_on_glass(2048, 2048, (128, 128, 1792, 1792), seed=4)
    slide = write_aperio_tiff(tmp_path / "big.svs", rgb, levels=(1, 4))
    real = segment.segment_slide

    def small_chunks(*args, config, **kwargs):  # 16 tiles in chunks of 2
        config = dataclasses.replace(config, core_size=512, halo=48, chunk_tiles=2)
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(segment, "segment_slide", small_chunks)
    real_bar = TileBar.__call__

    def ctrl_c_after_five_tiles(bar, info):
        real_bar(bar, info)
        if info.get("tiles_done") == 5:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "out"
    argv = ["-q", "slide", "run", slide, "--model", "baseline", "--out", out]
    monkeypatch.setattr(TileBar, "__call__", ctrl_c_after_five_tiles)
    status, printed, err = run_cli(capsys, *argv)
    assert status == 130 and printed == ""
    assert "stopped after" in err and "run the same command again" in err
    assert not (out / "summary.json").exists()
    kept = sorted(p.name for p in (out / "parts").iterdir())
    assert kept and len(kept) < 8, kept
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back

    monkeypatch.setattr(TileBar, "__call__", real_bar)
    status, printed, _ = run_cli(capsys, *argv)
    assert status == 0 and "big.svs: " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["tiles_computed"] < summary["tiles"] == 16
    alone = tmp_path / "alone"
    assert run_cli(capsys, *argv[:-1], alone)[0] == 0
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (alone / name).read_bytes(), name


def test_tile_bar_and_summary_line(tmp_path):
    import io

    stream = io.StringIO()
    bar = TileBar("s.svs", quiet=False, stream=stream)
    for done in range(21):
        bar({"tiles_done": done, "tiles_total": 20, "nuclei": 1000 * done, "eta_s": 75 - done})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # one per tenth when not a terminal
    assert lines[1] == f"s.svs [==={'.' * 27}] 2/20 tiles, 2,000 nuclei, ETA 1 min 13 s"
    assert lines[-1].endswith("20/20 tiles, 20,000 nuclei")
    quiet = io.StringIO()
    TileBar("s.svs", quiet=True, stream=quiet)({"tiles_done": 1, "tiles_total": 2})
    assert quiet.getvalue() == ""
    summary = {"nuclei": 12345, "tissue_mm2": 2.5, "density_per_mm2": 4938.0, "seconds": 61.2}
    summary["timings"] = {"megapixels_per_s": 1.234}
    assert summary_line("s.svs", tmp_path, summary) == (
        "s.svs: 12,345 nuclei in 2.50 mm² of tissue (4,938/mm²) in 61.2 s (1.23 MP/s) "
        f"-> {tmp_path}"
    )
