"""What a command-line user sees: help written for users, one plain progress bar on stderr, and
no TensorFlow start-up noise (``segcore.cli.quiet``) while errors still show."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from segcore.cli import build_parser
from segcore.cli.common import Progress
from segcore.cli.quiet import _QuietFinder, filter_lines
from tests.conftest import REPO, TINY_MODEL, write_png

ANSI = re.compile(r"\x1b\[")
NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "cpu_feature_guard",
    "To enable the following instructions",
    "failed call to cuInit",
    "I0000 ",
    "W0000 ",
)
"""Lines (parts of them) that TensorFlow writes on a CPU-only machine and a user must not see."""

# What TensorFlow 2.21 writes on import and first device look-up on a 2-core VM without CUDA.
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796570128.049663   14096 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796570128.050111   14096 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796570128.111574   14096 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
W0000 00:00:1796570300.207227   15765 auto_shard.cc:559] The `assert_cardinality` transformation is not handled.
E0000 00:00:1796570131.983498   14096 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1796570131.983498   14096 some_op.cc:12] a real error
\t [[{{node SomeNode}}]]
a line of Python's own
"""  # noqa: E501


def test_start_up_noise_is_dropped_and_errors_are_kept():
    lines = START_UP.splitlines(keepends=True)
    kept = "".join(filter_lines(lines, 2))
    assert kept == (
        "E0000 00:00:1796570131.983498   14096 some_op.cc:12] a real error\n"
        "\t [[{{node SomeNode}}]]\n"
        "a line of Python's own\n"
    )
    at_warnings = "".join(filter_lines(lines, 1))
    assert "auto_shard" in at_warnings and "a real error" in at_warnings
    assert "cuInit" not in at_warnings and "InitializeLog" not in at_warnings
    assert "".join(filter_lines(lines, 0)) == START_UP  # TF_CPP_MIN_LOG_LEVEL=0: every line


def test_a_failed_cuinit_shows_where_a_cuda_driver_was_found():
    """A GPU machine whose driver fails: that error is the user's business."""
    line = "E0000 00:00:1.5   7 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_UNKNOWN\n"
    assert filter_lines([line], 2) == [line]


def write_fake_tensorflow(folder, name: str, *, fail: bool) -> None:
    """A package that writes TensorFlow-like start-up lines to file descriptor 2 on import (and
    on its first device look-up), then raises if ``fail``."""
    package = folder / name
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os, types\n"
        f"os.write(2, {START_UP.encode()!r})\n"
        "def _look():\n"
        "    os.write(2, b'I0000 00:00:1.5   7 gpu.cc:1] looked at the devices\\n')\n"
        "    return []\n"
        "config = types.SimpleNamespace(list_physical_devices=_look)\n"
        + ("raise RuntimeError('broken install')\n" if fail else "")
    )


@pytest.mark.parametrize("fail", [False, True])
def test_the_first_import_is_quiet_and_a_failed_one_shows_everything(
    tmp_path, monkeypatch, capfd, fail
):
    name = f"fake_tf_{'failing' if fail else 'ok'}"
    write_fake_tensorflow(tmp_path, name, fail=fail)
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = _QuietFinder(2, name=name)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    try:
        if fail:
            with pytest.raises(RuntimeError, match="broken install"):
                __import__(name)
        else:
            __import__(name)
    finally:
        sys.modules.pop(name, None)
    assert finder not in sys.meta_path  # once only
    err = capfd.readouterr().err
    if fail:  # the user needs every detail
        assert START_UP in err
    else:
        assert err == (
            "E0000 00:00:1796570131.983498   14096 some_op.cc:12] a real error\n"
            "\t [[{{node SomeNode}}]]\n"
            "a line of Python's own\n"
        )


def every_parser(parser: argparse.ArgumentParser, name: str = "python -m segcore"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from every_parser(sub, f"{name} {command}")


def test_help_is_written_for_users(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    text = parser.format_help()
    assert "Segment cell nuclei in H&E-stained" in text
    assert "python -m segcore COMMAND --help" in text and "README.md" in text
    assert "SEGCORE_DEBUG=1" in text
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in commands.choices:  # each command on one line with its summary
        assert re.search(rf"^    {re.escape(command)} +\S", text, re.MULTILINE), command
    for name, sub in every_parser(parser):
        help_text = sub.format_help()
        assert "`" not in help_text, name  # no ``literals`` or `markdown`
        assert not re.search(r":(func|mod|class|data|meth|attr):", help_text), name
        assert "TrainConfig" not in help_text, name
        for action in sub._actions:
            if action.help is None and action.option_strings:
                pytest.fail(f"{name} {action.option_strings[0]}: no help")


def run_segcore(*args: str, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m segcore ARGS`` as a user runs it: no ``TF_CPP_MIN_LOG_LEVEL`` of the suite's
    (nor ``SEGCORE_DEBUG``), output captured (not a terminal)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SEGCORE_DEBUG")
    }
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "segcore", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr)
    for noise in NOISE:
        assert noise not in result.stderr, result.stderr


def test_help_in_a_process_is_plain():
    result = run_segcore("--help")
    assert_quiet(result)
    assert result.stdout.startswith("usage: python -m segcore") and result.stderr == ""
    assert "``" not in result.stdout and ":func:" not in result.stdout


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from segcore.bundles.card import ModelCard
    from segcore.bundles.store import save_bundle
    from segcore.data.preprocessing import PreprocessConfig
    from segcore.network.model import build_deeplabv3plus

    model = build_deeplabv3plus(**TINY_MODEL)
    card = ModelCard(
        name="tiny", input_size=64, preprocess=PreprocessConfig().to_dict(), threshold=0.5
    )
    return save_bundle(model, tmp_path_factory.mktemp("bundles") / "tiny", card)


@pytest.mark.slow
def test_keras_commands_show_no_tensorflow_noise_and_one_plain_progress_bar(tiny_bundle, tmp_path):
    from segcore.data.synthetic_set import generate_dataset

    data = generate_dataset(tmp_path / "synth", count=3, size=64, seed=1)
    model = ["--model", str(tiny_bundle), "--runtime", "keras", "--overlap", "16"]
    evaluated = run_segcore("evaluate", *model, "--data", str(data), "--split", "train")
    assert_quiet(evaluated)
    assert "pooled" in evaluated.stdout and "evaluated " in evaluated.stderr

    image = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    tile = write_png(tmp_path / "tile.png", image)
    out = tmp_path / "out"
    predicted = run_segcore("predict", *model, "--pixel-size", "0.25", "--out", str(out), str(tile))
    assert_quiet(predicted)
    assert predicted.stdout == ""  # the bar is not on stdout
    bars = [line for line in predicted.stderr.splitlines() if "tiles" in line]
    assert len(bars) == 1 and bars[0].endswith(" s") and "\r" not in predicted.stderr, bars
    assert (out / "tile_mask.png").is_file()


@pytest.mark.slow
@pytest.mark.slow
def test_errors_still_show_after_tensorflow_is_loaded(tiny_bundle, tmp_path):
    model = ["--model", str(tiny_bundle), "--runtime", "keras"]
    failed = run_segcore("evaluate", *model, "--data", str(tmp_path / "none"))
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("error: "), failed.stderr
    for noise in NOISE:
        assert noise not in failed.stderr, failed.stderr


def test_segcore_debug_turns_the_filter_off(monkeypatch):
    from segcore.cli.quiet import debug_requested, quiet_tensorflow

    environ = {"SEGCORE_DEBUG": "1"}
    assert debug_requested(environ) and not quiet_tensorflow(environ)
    assert "TF_CPP_MIN_LOG_LEVEL" not in environ
    assert not debug_requested({"SEGCORE_DEBUG": "0"}) and not debug_requested({})


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_plain_line_off_a_terminal():
    stream = io.StringIO()
    bar = Progress("tile.png (90×100)", quiet=False, stream=stream)
    for done in (8, 16, 20):
        bar(done, 20)
    bar(20, 20)  # a repeated last call draws nothing more
    text = stream.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and not ANSI.search(text)
    assert text.startswith("tile.png (90×100) [" + "=" * 30 + "] 20/20 tiles in ")


def test_progress_is_redrawn_on_a_terminal_and_silent_when_quiet():
    terminal = FakeTerminal()
    bar = Progress("tile.png", quiet=False, stream=terminal)
    bar(10, 20)
    bar(20, 20)
    text = terminal.getvalue()
    assert text.startswith("\rtile.png [" + "=" * 15 + "." * 15 + "] 10/20 tiles, ETA")
    assert text.endswith("\n") and text.count("\n") == 1 and text.count("\r") == 2
    quiet = io.StringIO()
    Progress("tile.png", quiet=True, stream=quiet)(20, 20)
    assert quiet.getvalue() == ""
