"""``python -m segcore slide ...``: a whole slide's facts, its segmentation, and the job process.

    slide info SLIDE [--pixel-size UM] [--json]
        vendor and format, backend, level-0 size, levels, pixel size (and where it came from),
        objective power, tissue fraction and area. Never loads TensorFlow.
    slide run SLIDE... --out DIR [--region X,Y,W,H] [--runtime R] [--pixel-size UM]
              [--model REF] [--threshold T] [--quiet]
        segments each slide (:func:`segcore.wholeslide.segment.segment_slide`): one slide into
        DIR, several into DIR/<slide stem>/. Ctrl-C stops after the current tile, keeping the
        finished chunks; the same command again resumes.
    slide resume JOB_DIR
        runs a background job in this process (what :mod:`segcore.wholeslide.jobs` spawns).

Every input is checked before the model is loaded: the slides open and know their pixel size
(else ``--pixel-size`` is asked for, never guessed), ``--region`` and ``--pixel-size`` parse,
the output folders can be written. A bad one is one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from segcore.cli.common import FLIPS_HELP, check_unique_stems, output_folder, runtime_model
from segcore.errors import ConfigError, SlideError
from segcore.inference.runtimes.base import CHOICES, default_runtime

INTERRUPTED = 130
"""Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)."""


def add_slides(commands) -> None:
    """Registers ``slide`` with its actions ``info``, ``run`` and ``resume``."""
    slide = commands.add_parser(
        "slide",
        help="whole-slide images: info, run (segment), resume",
        description="Whole-slide images: their facts (info), their segmentation into nuclei "
        "(run) and a background job's process (resume). 'python -m segcore slide ACTION --help' "
        "lists an action's options.",
    )
    actions = slide.add_subparsers(dest="slide_action", required=True, metavar="ACTION")
    pixel_help = (
        "µm per level-0 pixel (40× ≈ 0.25, 20× ≈ 0.5), for slides that record none or a "
        "wrong one. Default: the slide's own"
    )
    info = actions.add_parser("info", help="levels, pixel size, tissue fraction and area")
    info.add_argument("slide", help="the slide file (SVS, NDPI, MRXS, SCN, BIF, OME-TIFF, ...)")
    info.add_argument("--pixel-size", metavar="UM", help=pixel_help)
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(func=cmd_info)

    run = actions.add_parser("run", help="segment whole slides: nuclei, table, density, summary")
    run.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (distinct names)")
    run.add_argument("--out", required=True, help="output folder (one slide) or parent folder")
    run.add_argument("--region", metavar="X,Y,W,H", help="only this level-0 box of each slide")
    run.add_argument(
        "--runtime",
        default=default_runtime(),
        choices=CHOICES,
        help="what runs the network (see 'python -m segcore predict --help'). Default: "
        "$SEGCORE_RUNTIME, else auto",
    )
    run.add_argument("--pixel-size", metavar="UM", help=pixel_help)
    run.add_argument("--model", default="default", help="bundle (default: weights/default)")
    run.add_argument("--threshold", metavar="T", help="default: the bundle's threshold")
    run.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    run.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )
    run.set_defaults(func=cmd_run)

    resume = actions.add_parser(
        "resume", help="run or resume a slide job's folder (what the app's jobs run)"
    )
    resume.add_argument("job_dir", metavar="JOB_DIR", help="the job folder (runs/slides/<id>)")
    resume.set_defaults(func=cmd_resume)


# --- checks made before anything is loaded --------------------------------------------------


def _number(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: not a number") from None


def _pixel_size(text: str | None) -> float | None:
    from segcore.inference.resolution import check_pixel_size

    value = _number(text, "--pixel-size")
    return None if value is None else check_pixel_size(value, what="--pixel-size")


def _threshold(text: str | None) -> float | None:
    value = _number(text, "--threshold")
    if value is not None and not 0 <= value <= 1:
        raise ConfigError(f"--threshold {text}: give a probability in [0, 1]")
    return value


def _region(text: str | None) -> tuple[int, int, int, int] | None:
    """``--region X,Y,W,H`` as integers (level-0 pixels), or None."""
    if text is None:
        return None
    try:
        x, y, w, h = (int(part) for part in text.split(","))
    except ValueError:
        x = y = w = h = -1
    if min(x, y) < 0 or min(w, h) <= 0:
        raise ConfigError(
            f"--region {text!r}: give X,Y,W,H in level-0 pixels, whole numbers with x, y >= 0 "
            "and w, h > 0 (e.g. 0,0,4096,4096)"
        )
    return x, y, w, h


def _check_slide(path: str, pixel_size: float | None, region) -> None:
    """Opens ``path`` (a :class:`SlideError` naming it if it is no readable slide) and checks
    that it has a pixel size and that ``region`` lies on it."""
    from segcore.slides.reader import open_slide

    with open_slide(path, pixel_size=pixel_size) as slide:
        info = slide.info
    if info.pixel_size is None:
        raise SlideError(
            f"{path}: the slide records no pixel size; pass --pixel-size UM (µm per level-0 "
            "pixel: about 0.25 at 40×, 0.5 at 20×)"
        )
    if region is not None and (region[0] >= info.width or region[1] >= info.height):
        raise SlideError(
            f"{path}: --region {','.join(map(str, region))} starts outside the slide "
            f"({info.width} × {info.height} px at level 0)"
        )


# --- info ------------------------------------------------------------------------------------


def slide_facts(path: str, pixel_size: float | None) -> dict[str, Any]:
    """``SlideInfo.to_dict()`` of the slide plus ``tissue``: ``fraction``, ``area_mm2`` (None
    without a pixel size) and the ``threshold`` the mask used."""
    from segcore.slides.reader import open_slide
    from segcore.slides.tissue import slide_tissue

    with open_slide(path, pixel_size=pixel_size) as slide:
        _, tissue = slide_tissue(slide)
        facts = slide.info.to_dict()
    um = facts["pixel_size"]
    facts["tissue"] = {
        "fraction": tissue.fraction,
        "area_mm2": None if um is None else tissue.area_mm2(um),
        "threshold": tissue.threshold,
    }
    return facts


def _mm2(area: float) -> str:
    return f"{area:.2f} mm²" if area >= 1 else f"{area:.4f} mm²"


def _info_lines(facts: dict[str, Any]) -> list[str]:
    levels = ", ".join(
        f"{lv['width']} × {lv['height']} ({lv['downsample']:g}×)" for lv in facts["levels"]
    )
    um, power, tissue = facts["pixel_size"], facts["objective_power"], facts["tissue"]
    pixel = (
        f"{um:g} µm/px (from {facts['pixel_size_source']})"
        if um is not None
        else "unknown: the file records none; give it with --pixel-size UM"
    )
    area = (
        _mm2(tissue["area_mm2"])
        if tissue["area_mm2"] is not None
        else "area unknown without a pixel size"
    )
    return [
        f"slide       {facts['path']}",
        f"format      {facts['format']} (read with {facts['backend']})",
        f"size        {facts['width']} × {facts['height']} px at level 0",
        f"levels      {len(facts['levels'])}: {levels}",
        f"pixel size  {pixel}",
        f"objective   {f'{power:g}×' if power else 'not recorded'}",
        f"tissue      {100 * tissue['fraction']:.1f} % of the slide, {area} "
        f"(threshold {tissue['threshold']:.3f})",
    ]


def cmd_info(args: argparse.Namespace) -> int:
    facts = slide_facts(args.slide, _pixel_size(args.pixel_size))
    print(json.dumps(facts, indent=2) if args.json else "\n".join(_info_lines(facts)))
    return 0


# --- run -------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TileBar:
    """``segment_slide``'s progress on stderr: tiles done / total, nuclei and the ETA, redrawn
    in place on a terminal, else one line per tenth of the tiles.

    Args:
        name: the slide's name, at the start of the line.
        quiet: draw nothing (the figures are still kept in :attr:`info`).
        stream: where to draw, defaults to ``sys.stderr``.
    """

    def __init__(self, name: str, quiet: bool, stream=None):
        self.name, self.quiet = name, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.info: dict[str, Any] = {}
        self._tenth = -1
        self._drawn = False

    def __call__(self, info: dict[str, Any]) -> None:
        self.info.update(info)
        done, total = self.info.get("tiles_done"), self.info.get("tiles_total")
        if self.quiet or done is None or not total:
            return
        filled = 30 * done // total
        eta = self.info.get("eta_s")
        line = (
            f"{self.name} [{'=' * filled}{'.' * (30 - filled)}] {done}/{total} tiles, "
            f"{self.info.get('nuclei') or 0:,} nuclei"
            + (f", ETA {_duration(eta)}" if eta is not None and done < total else "")
        )
        if self.stream.isatty():
            print(f"\r{line}\x1b[K", end="", file=self.stream, flush=True)
            self._drawn = True
        elif 10 * done // total > self._tenth:
            self._tenth = 10 * done // total
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Ends the redrawn line."""
        if self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False


def summary_line(name: str, out: Path, summary: dict[str, Any]) -> str:
    """One line per finished slide: nuclei, tissue mm², density, seconds and megapixels (of
    tile cores, at the slide's pixel size) per second of this call, and the folder."""
    nuclei, mm2 = summary.get("nuclei") or 0, summary.get("tissue_mm2")
    density, seconds = summary.get("density_per_mm2"), summary.get("seconds")
    mps = (summary.get("timings") or {}).get("megapixels_per_s")
    parts = [f"{name}: {nuclei:,} nuclei"]
    if mm2 is not None:
        parts.append(f"in {_mm2(mm2)} of tissue")
    if density is not None:
        parts.append(f"({density:,.0f}/mm²)")
    if seconds is not None:
        parts.append(f"in {seconds:.1f} s")
    if mps is not None:
        parts.append(f"({mps:.2f} MP/s)")
    return " ".join(parts) + f" -> {out}"


def _out_folders(args: argparse.Namespace) -> list[Path]:
    """The output folder of each slide (made and checked writable)."""
    if len(args.slides) == 1:
        return [output_folder(args.out)]
    root = output_folder(args.out)
    return [output_folder(root / Path(name).stem) for name in args.slides]


def _segment(name: str, out: Path, job: dict[str, Any], stop) -> dict[str, Any]:
    """Segments one slide; a full disk or an unwritable output is a one-line error."""
    from segcore.atomic import is_disk_full
    from segcore.wholeslide.segment import segment_slide

    bar = TileBar(Path(name).name, job["quiet"])
    try:
        result = segment_slide(name, out, **job["run"], progress=bar, should_stop=stop.is_set)
    except OSError as exc:
        what = "disk full" if is_disk_full(exc) else "cannot write the outputs"
        raise SlideError(
            f"{out}: {what} ({exc.strerror or exc}) while segmenting {name}; the finished "
            "chunks are kept: fix it and run the same command again"
        ) from exc
    finally:
        bar.close()
    result.setdefault("tiles_done", bar.info.get("tiles_done"))
    result.setdefault("tiles_total", bar.info.get("tiles_total"))
    return result


def _slide_model(ref: str, runtime: str, quiet: bool):
    """``(bundle, model)``: the gated runtime from the cache without TensorFlow when there is
    one (:func:`segcore.wholeslide.model.open_slide_model`), else as ``predict`` opens it."""
    from segcore.wholeslide.model import open_slide_model

    opened = []

    def opener(bundle, requested):
        opened.append(True)
        return runtime_model(bundle, requested, quiet)

    bundle, model = open_slide_model(ref, runtime, opener=opener)
    if not opened and not quiet:
        print(f"runtime: {model.describe()}", file=sys.stderr)
    return bundle, model


def cmd_run(args: argparse.Namespace) -> int:
    from segcore.wholeslide.config import SlideRunConfig
    from segcore.wholeslide.job_runner import stop_on_signals

    quiet = getattr(args, "quiet", False)
    pixel_size, region = _pixel_size(args.pixel_size), _region(args.region)
    config = SlideRunConfig(
        threshold=_threshold(args.threshold),
        pixel_size=pixel_size,
        region=region,
        runtime=args.runtime,
        flips=args.flips,
    )
    check_unique_stems(
        args.slides, writes="{stem}/ in --out", fix="run them into different --out folders"
    )
    for name in args.slides:
        _check_slide(name, pixel_size, region)
    outs = _out_folders(args)
    bundle, model = _slide_model(args.model, args.runtime, quiet)
    job = {"quiet": quiet, "run": {"bundle": bundle, "model": model, "config": config}}
    try:
        with stop_on_signals(signal.SIGINT, signal.SIGTERM) as stop:
            for name, out in zip(args.slides, outs, strict=True):
                result = _segment(name, out, job, stop)
                if result.get("state") == "stopped":
                    print(
                        f"{name}: stopped after {result['tiles_done']} of "
                        f"{result['tiles_total']} tiles; the finished chunks are kept in {out}: "
                        "run the same command again to go on",
                        file=sys.stderr,
                    )
                    return INTERRUPTED
                print(summary_line(Path(name).name, out, result), flush=True)
    except KeyboardInterrupt:
        message = "interrupted: the finished chunks are kept; run the same command again to go on"
        print(message, file=sys.stderr)
        return INTERRUPTED
    return 0


# --- resume ----------------------------------------------------------------------------------


def cmd_resume(args: argparse.Namespace) -> int:
    from segcore.wholeslide.job_runner import run_slide_job

    status = run_slide_job(args.job_dir)
    reason = f" ({status['reason']})" if status.get("reason") else ""
    print(f"{args.job_dir}: {status.get('state')}{reason}")
    return 0
