"""Segmenting a whole slide: :func:`segment_slide`, streamed over the tissue tiles, resumable.

The run, in order:

1. open the slide (:func:`~segcore.slides.reader.open_slide`), find the tissue
   (:func:`~segcore.slides.tissue.slide_tissue`) and plan the tiles
   (:func:`~segcore.slides.grid.plan_grid`): cores of ``core_size`` work pixels that touch
   tissue, each read with a ``halo``;
2. check the run folder (:mod:`segcore.wholeslide.runfolder`): a new one gets ``run.json``;
   one that holds this very run resumes (finished chunks are skipped) or, if complete,
   returns its summary at once; one that holds another run is refused;
3. the tiles of the unfinished chunks stream through a reader thread (read-ahead and
   resampling), the model (this thread) and a nuclei thread (split, measure, outline, write
   each finished chunk's part file) — :mod:`segcore.wholeslide.pipeline`; memory stays
   bounded whatever the slide's size. ``should_stop()`` is asked before each tile: a stopped
   run keeps its finished chunks and returns ``{"state": "stopped", ...}``;
4. the parts are merged in chunk order into the outputs (:mod:`segcore.wholeslide.outputs`,
   :mod:`segcore.wholeslide.density`), ``summary.json`` last.

Any failure (an unreadable region, a full disk, the model) leaves the finished chunks in place
and no ``summary.json``: running again on the same folder resumes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from segcore.bundles.card import software_versions
from segcore.inference.flips import with_flips
from segcore.inference.resolution import DEFAULT_MODEL_PIXEL_SIZE
from segcore.slides.grid import GridTile, SlideGrid, lattice_aligned, plan_grid
from segcore.slides.reader import open_slide
from segcore.slides.tissue import slide_tissue
from segcore.timestamps import utc_now
from segcore.wholeslide import density, outputs, runfolder
from segcore.wholeslide.config import SlideRunConfig
from segcore.wholeslide.equalisation import slide_lut
from segcore.wholeslide.pipeline import Pipeline, Progress, RunSettings

log = logging.getLogger(__name__)

__all__ = ["segment_slide"]

ProgressCallback = Callable[[dict[str, Any]], None]


def _settings(bundle: Any, model: Any, config: SlideRunConfig) -> RunSettings:
    threshold = bundle.threshold if config.threshold is None else config.threshold
    return RunSettings(
        threshold=float(threshold),
        instances=config.instance_config(bundle.instances),
        model_pixel_size=float(bundle.pixel_size or DEFAULT_MODEL_PIXEL_SIZE),
        input_size=int(bundle.input_size),
        preprocess=bundle.preprocess,
        runtime=str(getattr(model, "name", None) or type(model).__name__),
        overlap=config.overlap,
    )


def _note_alignment(grid: SlideGrid) -> None:
    if grid.model_tiles is None or lattice_aligned(grid.core_size, grid.halo, grid.model_tiles):
        return
    size, overlap = grid.model_tiles
    step = size - overlap
    log.info(
        "tiles of %d px with a halo of %d do not put the model's %d-pixel tiles on one lattice "
        "(a core size multiple of %d and a halo >= %d would): nuclei near tile borders may "
        "differ slightly from one run over the whole slide",
        grid.core_size,
        grid.halo,
        size,
        step,
        overlap,
    )


def _chunks(grid: SlideGrid, size: int) -> list[tuple[int, tuple[GridTile, ...]]]:
    tiles = grid.tiles
    return [(k, tiles[start : start + size]) for k, start in enumerate(range(0, len(tiles), size))]


def segment_slide(
    slide_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    bundle: Any,
    model: Any,
    config: SlideRunConfig,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    chunks: tuple[int, int] | None = None,
    equalisation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segments the nuclei of a whole slide's tissue into the run folder ``out_dir``.

    See the module docstring for the steps and :mod:`segcore.wholeslide.outputs` for the
    files.

    Args:
        slide_path: the slide file.
        out_dir: the run folder (created if needed); a folder holding this run's finished
            chunks resumes it.
        bundle: the model's :class:`~segcore.bundles.loading.Bundle` (preprocessing,
            threshold, instance settings, pixel size, input size, ``card.model_sha256``).
        model: what :func:`~segcore.inference.predict.predict_probabilities` runs (a
            :class:`~segcore.inference.runtimes.base.RuntimeModel`, a Keras model, a
            callable); its ``name``, if it has one, is recorded as the runtime. With
            ``config.flips`` it is averaged over its mirror images here
            (:func:`~segcore.inference.flips.with_flips`).
        config: the run's settings.
        progress: called from this thread with ``{"tiles_done", "tiles_total", "nuclei",
            "elapsed_s", "eta_s", "phase"}`` at each phase (``tissue`` — finding it, totals
            still 0 —, ``segmenting``, ``merging``, then ``completed`` or ``stopped``) and
            after each tile (``segmenting``).
        should_stop: asked before each tile; True stops the run (resumable).
        chunks: ``(first, stop)``: compute only the unfinished chunks numbered ``first`` to
            ``stop - 1`` and return without merging (:mod:`segcore.batch` runs the chunks of
            one slide as regions on several workers sharing ``out_dir``, then a last call
            without ``chunks`` merges). ``(0, 0)`` plans the run only (``run.json``, the
            slide's lightness mapping). None (the default): every chunk, then the merge.
        equalisation: the slide's lightness mapping as :func:`~segcore.wholeslide.equalisation
            .slide_lut` gives it (the ``equalisation`` a ``chunks`` call returns), so that
            region calls need not read the histogram windows again; None fits it here. Only
            a mapping this run would fit itself may be given (it is recorded in ``run.json``,
            which a different one does not match).

    Returns:
        The summary (also written as ``summary.json``) with ``"state": "completed"``, or
        ``{"state": "stopped", "tiles_done", "tiles_total", "nuclei", "out_dir"}``, or for
        ``chunks`` ``{"state": "partial", "chunks_total", "tiles_total", "computed",
        "equalisation", "out_dir"}`` (or the summary, when the run was already complete).

    Raises:
        SlideError: the slide cannot be opened or a region read (naming the tile and the
            region), it has no pixel size, the folder holds another run, or the disk is full.
        ConfigError: a bad setting.
    """
    started = time.perf_counter()
    out_dir, slide_path = Path(out_dir), Path(slide_path)
    # Refuses a model without a network to flip (the baseline) before anything is written.
    network = with_flips(model) if config.flips else model
    should_stop = should_stop or (lambda: False)
    with open_slide(slide_path, pixel_size=config.pixel_size) as slide:
        Progress(progress, 0, 0, 0).send("tissue")
        grid, tissue, settings, record = _plan(
            slide, slide_path, bundle, _settings(bundle, model, config), config, equalisation
        )
        span, chunks = chunks, _chunks(grid, config.chunk_tiles)
        # Region calls share the folder with other workers: no removal of their temporaries.
        finished = runfolder.open_run_folder(out_dir, record, clean=span is None)
        if finished is not None:
            log.info("%s: already complete, %d nuclei", out_dir, finished.get("nuclei", 0))
            Progress(progress, len(grid.tiles), len(grid.tiles), finished["nuclei"]).send(
                "completed"
            )
            return finished
        done = runfolder.finished_chunks(out_dir, len(chunks))
        todo = [item for item in chunks if item[0] not in done]
        if span is not None:
            todo = [item for item in todo if span[0] <= item[0] < span[1]]
        report = Progress(progress, len(grid.tiles), _tiles_in(chunks, done), sum(done.values()))
        report.send("segmenting")
        pipeline = Pipeline(
            slide, grid, out_dir, network, settings, config.read_ahead, report, tissue
        )
        log.info(
            "%s: %d tissue tiles in %d chunks, %d to compute (%s)",
            slide_path.name,
            len(grid.tiles),
            len(chunks),
            sum(len(tiles) for _, tiles in todo),
            settings.runtime,
        )
        completed = pipeline.run(todo, should_stop)
        if completed and span is not None:
            return {
                "state": "partial",
                "chunks_total": len(chunks),
                "tiles_total": len(grid.tiles),
                "computed": pipeline.computed,
                "equalisation": settings.equalisation,
                "seconds": round(time.perf_counter() - started, 3),
                "out_dir": str(out_dir),
            }
        if not completed:
            report.send("stopped")
            done = runfolder.finished_chunks(out_dir, len(chunks))
            return {
                "state": "stopped",
                "tiles_done": _tiles_in(chunks, done),
                "tiles_total": len(grid.tiles),
                "nuclei": sum(done.values()),
                "seconds": round(time.perf_counter() - started, 3),
                "out_dir": str(out_dir),
            }
        report.send("merging")
        summary = _finish(out_dir, slide, grid, tissue, chunks, record, config, pipeline, started)
    report.nuclei = summary["nuclei"]
    report.send("completed")
    return summary


def _plan(slide, slide_path: Path, bundle, settings: RunSettings, config, equalisation=None):
    """``(grid, tissue, settings, run record)``: the tissue found, the tiles planned, the
    slide's lightness mapping (``equalisation`` if given) added to the settings, the run
    described."""
    _, tissue = slide_tissue(slide, config.tissue)
    grid = plan_grid(
        slide.info,
        tissue,
        model_pixel_size=settings.model_pixel_size,
        core_size=config.core_size,
        halo=config.halo,
        region=config.region,
        model_tiles=(settings.input_size, settings.overlap),
    )
    _note_alignment(grid)
    if equalisation is None:
        equalisation = slide_lut(slide, grid, tissue, settings.preprocess)
    settings = replace(settings, equalisation=equalisation)
    record = runfolder.run_record(
        slide_path, bundle, config, settings.to_dict(), settings.runtime, grid
    )
    return grid, tissue, settings, record


def _tiles_in(chunks: list[tuple[int, tuple[GridTile, ...]]], done: dict[int, int]) -> int:
    return sum(len(tiles) for k, tiles in chunks if k in done)


def _merge(out_dir: Path, slide, grid: SlideGrid, tissue, chunks) -> dict[str, Any]:
    """Merges the parts into the nuclei files and the heat map; returns the figures."""
    parts = [outputs.part_path(out_dir, k) for k, _ in chunks]
    edge_nuclei = sum(outputs.read_part_header(path).get("edge_nuclei", 0) for path in parts)
    counter = density.DensityCounter(tissue.mask.shape, tissue.downsample)
    nuclei = outputs.merge_parts(out_dir, parts, counter.add)
    cell_um = tissue.downsample * float(slide.info.pixel_size)
    visible = runfolder.visible_cells(tissue, grid.region, (slide.info.width, slide.info.height))
    per_mm2 = density.density_per_mm2(counter.counts, cell_um)
    rgba, top = density.density_picture(per_mm2, visible, cell_um)
    density.write_density(out_dir, per_mm2, rgba)
    return {
        "nuclei": nuclei,
        "edge_nuclei": edge_nuclei,
        "tissue_mm2": float(visible.sum()) * (cell_um / 1000.0) ** 2,
        "density": {
            "cell_um": cell_um,
            "shape": list(per_mm2.shape),
            "png_top_per_mm2": round(top, 3),
            "png_smoothing_um": density.DENSITY_SMOOTHING_UM,
        },
    }


def _finish(out_dir, slide, grid, tissue, chunks, record, config, pipeline, started) -> dict:
    """Merges the parts into the outputs and writes ``summary.json`` (last)."""
    merging = time.perf_counter()
    merged = _merge(out_dir, slide, grid, tissue, chunks)
    pipeline.timings["merge_s"] += time.perf_counter() - merging
    nuclei, tissue_mm2 = merged["nuclei"], merged["tissue_mm2"]
    level0_um = float(slide.info.pixel_size)
    seconds = time.perf_counter() - started
    core_pixels = sum(t.core[2] * t.core[3] for t in grid.tiles) / grid.scale**2
    summary = {
        "state": "completed",
        "nuclei": nuclei,
        "tissue_mm2": round(tissue_mm2, 6),
        "density_per_mm2": round(nuclei / tissue_mm2, 3) if tissue_mm2 > 0 else None,
        "seconds": round(seconds, 3),
        "tiles": len(grid.tiles),
        "tiles_computed": pipeline.computed,
        "resumed": pipeline.computed < len(grid.tiles),
        "megapixels": round(core_pixels / 1e6, 3),
        "tissue_megapixels": round(tissue_mm2 / (level0_um / 1000.0) ** 2 / 1e6, 3),
        "edge_nuclei": merged["edge_nuclei"],
        "runtime": record["model"]["runtime"],
        "flips": config.flips,
        "model": record["model"]["name"],
        "model_sha256": record["model"]["sha256"],
        "slide": {**record["slide"], "info": slide.info.to_dict()},
        "grid": {k: v for k, v in grid.to_dict().items() if k != "tile_indices"},
        "config": config.to_dict(),
        "settings": record["settings"],
        "density": merged["density"],
        "outputs": list(outputs.OUTPUT_FILES),
        "timings": _timings(pipeline, core_pixels, seconds),
        "finished": utc_now(),
        "versions": software_versions(),
    }
    outputs.write_json(out_dir / outputs.SUMMARY_FILE, summary)
    shutil.rmtree(out_dir / outputs.PARTS_DIR, ignore_errors=True)
    return summary


def _timings(pipeline: Pipeline, core_pixels: float, seconds: float) -> dict[str, Any]:
    """Seconds per stage of this call, and throughputs (megapixels of tile cores per s)."""
    timings = {name: round(value, 3) for name, value in sorted(pipeline.timings.items())}
    computed = pipeline.computed
    share = computed / max(len(pipeline.grid.tiles), 1)
    model_s = pipeline.timings.get("model_s", 0.0)
    if computed:
        timings["per_tile_s"] = round(seconds / computed, 3)
        timings["model_per_tile_s"] = round(model_s / computed, 3)
    timings["megapixels_per_s"] = round(core_pixels * share / 1e6 / seconds, 3) if seconds else None
    timings["model_megapixels_per_s"] = (
        round(core_pixels * share / 1e6 / model_s, 3) if model_s else None
    )
    return timings
