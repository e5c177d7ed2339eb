"""The streamed part of a whole-slide run: tiles flow from a reader thread through the model
(the calling thread) to a nuclei thread that also writes each finished chunk's part file.

* :class:`TileReader` reads and resamples the next ``read_ahead`` tiles
  (:func:`~segcore.wholeslide.tiles.read_tile_image`) into a bounded queue;
* :class:`Pipeline` runs the model on one tile at a time
  (:func:`~segcore.inference.predict.predict_probabilities` on the whole box, in the model's
  own tiles) and hands the probabilities to a one-thread executor that splits, measures and
  outlines the tile's nuclei (:func:`~segcore.wholeslide.tiles.tile_nuclei`), keeps them as
  part-file lines and writes each chunk's part once its tiles are done, while the model runs
  on the next tile. At most :data:`POST_PENDING` tasks wait for that thread before the model
  waits, so about ``read_ahead + 4`` boxes are alive at once, whatever the slide's size.

On a 2-core machine the model's runtime already uses both cores, so the nuclei thread mostly
competes with it: ``SEGCORE_SLIDE_POST_THREAD=0`` runs the nuclei step in the model's thread
instead (see :data:`POST_THREAD_ENV`). Either way the outputs are the same bytes.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.data.preprocessing import PreprocessConfig, enhance_with_lut
from segcore.errors import SlideError
from segcore.inference.instances import InstanceConfig
from segcore.inference.predict import predict_probabilities
from segcore.slides.grid import GridTile, SlideGrid
from segcore.wholeslide import outputs
from segcore.wholeslide.equalisation import as_lut
from segcore.wholeslide.tiles import (
    TISSUE_MARGIN_CELLS,
    read_tile_image,
    tile_nuclei,
    tissue_in_box,
)

log = logging.getLogger(__name__)

__all__ = [
    "POST_PENDING",
    "POST_THREAD_ENV",
    "Pipeline",
    "Progress",
    "RunSettings",
    "TileReader",
]

POST_PENDING = 2
"""Tasks (tiles and chunk writes) allowed to wait for the nuclei thread before the model
waits."""

POST_THREAD_ENV = "SEGCORE_SLIDE_POST_THREAD"
"""Environment variable: ``0`` splits the nuclei in the model's thread, anything else (the
default) in a thread of their own."""


def _tile_error(grid: SlideGrid, tile: GridTile, exc: SlideError) -> SlideError:
    x, y, w, h = tile.box
    x0, y0 = grid.to_level0(x, y)
    w0, h0 = w / grid.scale, h / grid.scale
    return SlideError(
        f"tile {tile.index} (row {tile.row}, column {tile.col}; level-0 region x={x0:g}, "
        f"y={y0:g}, {w0:g}×{h0:g}): {exc}"
    )


class TileReader:
    """Reads the boxes of ``tiles``, in order, ``depth`` tiles ahead in a thread of its own.

    The queue holds at most ``depth`` images, so memory stays bounded; with ``depth == 0``
    each tile is read by :meth:`next` itself. An error while reading (an unreadable region:
    :class:`~segcore.errors.SlideError` naming the tile and the region) is raised by
    :meth:`next` for that tile.

    Args:
        slide: the open slide.
        grid: the grid the tiles belong to.
        tiles: the tiles to read, in the order :meth:`next` will ask for them.
        depth: tiles read ahead.

    Attributes:
        timings: ``read_s`` (reading and resampling) and ``wait_read_s`` (time :meth:`next`
            waited), in seconds.
    """

    def __init__(self, slide: Any, grid: SlideGrid, tiles: list[GridTile], depth: int):
        self._slide, self._grid, self._tiles = slide, grid, list(tiles)
        self.timings: dict[str, float] = {"read_s": 0.0, "wait_read_s": 0.0}
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        self._position = 0
        if depth > 0 and self._tiles:
            self._thread = threading.Thread(target=self._work, name="slide-reader", daemon=True)
            self._thread.start()

    def _read(self, tile: GridTile) -> np.ndarray | SlideError:
        started = time.perf_counter()
        try:
            return read_tile_image(self._slide, self._grid, tile.box)
        except SlideError as exc:
            return _tile_error(self._grid, tile, exc)
        finally:
            self.timings["read_s"] += time.perf_counter() - started

    def _work(self) -> None:
        for tile in self._tiles:
            if self._stop.is_set():
                return
            item = (tile, self._read(tile))
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item[1], SlideError):
                return

    def next(self, tile: GridTile) -> np.ndarray:
        """The image of ``tile``, which must be the next tile of the list.

        Raises:
            SlideError: its region could not be read.
        """
        expected = self._tiles[self._position]
        if tile.index != expected.index:
            raise ValueError(f"tiles asked out of order: {tile.index}, expected {expected.index}")
        self._position += 1
        if self._thread is None:
            result = self._read(tile)
        else:
            started = time.perf_counter()
            _, result = self._queue.get()
            self.timings["wait_read_s"] += time.perf_counter() - started
        if isinstance(result, SlideError):
            raise result
        return result

    def close(self) -> None:
        """Stops the thread (tiles not yet asked for are not read)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(0.05)


@dataclass(frozen=True)
class RunSettings:
    """The model's settings a run uses, resolved (the config's where given, else the model's).

    Args:
        threshold: probability threshold.
        instances: the :class:`~segcore.inference.instances.InstanceConfig`.
        model_pixel_size: µm per pixel the model works at.
        input_size: side of the model's own tiles.
        preprocess: the model's :class:`~segcore.data.preprocessing.PreprocessConfig`.
        runtime: the name of what runs the model.
        overlap: pixels shared by the model's neighbouring tiles in a box.
        equalisation: the slide's one lightness mapping
            (:func:`~segcore.wholeslide.equalisation.slide_lut`), or None: each tile is
            preprocessed over itself.
    """

    threshold: float
    instances: InstanceConfig
    model_pixel_size: float
    input_size: int
    preprocess: PreprocessConfig
    runtime: str
    overlap: int = 32
    equalisation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The settings that shape the results, as JSON values (``runtime`` aside)."""
        return {
            "threshold": self.threshold,
            "instances": self.instances.to_dict(),
            "model_pixel_size": self.model_pixel_size,
            "input_size": self.input_size,
            "preprocess": self.preprocess.to_dict(),
            "equalisation": self.equalisation,
            "tissue_margin_cells": TISSUE_MARGIN_CELLS,
        }


def _post_thread_wanted() -> bool:
    return os.environ.get(POST_THREAD_ENV, "1") != "0"


class Pipeline:
    """The streamed part of a run: reader thread → model → nuclei thread → part files.

    Args:
        slide: the open slide.
        grid: the run's grid.
        out_dir: the run folder (part files go to its ``parts/``).
        model: what :func:`~segcore.inference.predict.predict_probabilities` runs.
        settings: the resolved :class:`RunSettings`.
        read_ahead: tiles read ahead of the model.
        progress: the run's :class:`Progress`, told of each finished tile.
        tissue: the slide's :class:`~segcore.slides.tissue.TissueMask`: the model skips the
            parts of a box farther than :data:`~segcore.wholeslide.tiles.TISSUE_MARGIN_CELLS`
            mask cells from tissue (their probability is 0); None predicts whole boxes.

    Attributes:
        timings: seconds spent per stage (``read_s``, ``wait_read_s``, ``model_s``,
            ``nuclei_s``, ``wait_nuclei_s``, ``write_s``).
        computed: tiles computed so far by this pipeline.
    """

    def __init__(self, slide, grid, out_dir, model, settings, read_ahead, progress, tissue=None):
        self.slide, self.grid, self.out_dir, self.tissue = slide, grid, out_dir, tissue
        self.model, self.settings = model, settings
        self.read_ahead, self.report = read_ahead, progress
        self.timings = collections.Counter()
        self.computed = 0  # tiles computed by this call

    def _model(self, tile: GridTile, image):
        started = time.perf_counter()
        preprocess, lut = self.settings.preprocess, as_lut(self.settings.equalisation)
        where = None
        if self.tissue is not None:
            where = tissue_in_box(self.tissue, self.grid, tile.box, TISSUE_MARGIN_CELLS)
        probabilities = predict_probabilities(
            self.model,
            image if lut is None else enhance_with_lut(image, lut, preprocess),
            preprocess,
            tile_size=self.settings.input_size,
            overlap=self.settings.overlap,
            already_enhanced=lut is not None,
            where=where,
        )
        self.timings["model_s"] += time.perf_counter() - started
        return probabilities

    def _nuclei(self, tile: GridTile, image, probabilities) -> outputs.EncodedTile:
        result = tile_nuclei(
            tile,
            image,
            probabilities,
            grid=self.grid,
            threshold=self.settings.threshold,
            instances=self.settings.instances,
        )
        self.timings["nuclei_s"] += result.seconds
        return outputs.encode_tile(result)

    def _write(self, chunk: int, results: list[Future], started: float) -> None:
        began = time.perf_counter()
        tiles = [future.result() for future in results]  # done: same worker, FIFO
        path = outputs.part_path(self.out_dir, chunk)
        outputs.write_part(path, chunk, tiles, time.perf_counter() - started)
        self.timings["write_s"] += time.perf_counter() - began
        log.debug("chunk %d written: %s", chunk, path.name)

    def run(self, chunks: list[tuple[int, tuple[GridTile, ...]]], should_stop) -> bool:
        """Computes the given chunks and writes their part files.

        Args:
            chunks: ``(chunk index, its tiles)`` in order.
            should_stop: asked before each tile.

        Returns:
            True when every chunk is written; False when stopped (the chunks finished by then
            are written; the one in progress is dropped).

        Raises:
            Whatever a stage raised (an unreadable region, the model, a full disk), after
            the threads have stopped and the chunks finished by then are written.
        """
        tiles = [tile for _, chunk_tiles in chunks for tile in chunk_tiles]
        reader = TileReader(self.slide, self.grid, tiles, self.read_ahead)
        post = ThreadPoolExecutor(1, "slide-nuclei") if _post_thread_wanted() else None
        pending: collections.deque[tuple[str, Future]] = collections.deque()

        def submit(kind: str, function, *args) -> Future:
            if post is not None:
                future = post.submit(function, *args)
            else:
                future = Future()
                future.set_result(function(*args))
            pending.append((kind, future))
            self._settle(pending, POST_PENDING)
            return future

        try:
            for chunk, chunk_tiles in chunks:
                started, results = time.perf_counter(), []
                for tile in chunk_tiles:
                    if should_stop():
                        self._settle(pending, 0)
                        return False
                    image = reader.next(tile)
                    probabilities = self._model(tile, image)
                    results.append(submit("tile", self._nuclei, tile, image, probabilities))
                    del image, probabilities
                submit("chunk", self._write, chunk, results, started)
            self._settle(pending, 0)
            return True
        finally:
            reader.close()
            self.timings.update(reader.timings)
            if post is not None:
                post.shutdown(wait=True)

    def _settle(self, pending: collections.deque, keep: int) -> None:
        """Collects finished work (oldest first), waiting until at most ``keep`` remain."""
        while pending and (len(pending) > keep or pending[0][1].done()):
            kind, future = pending.popleft()
            if not future.done():
                waited = time.perf_counter()
                future.result()
                self.timings["wait_nuclei_s"] += time.perf_counter() - waited
            result = future.result()  # raises the worker's error
            if kind == "tile":
                self.computed += 1
                self.report.tile_done(result.nuclei)


class Progress:
    """A run's progress, sent to its ``progress(dict)`` callback.

    Args:
        callback: called with ``{"tiles_done", "tiles_total", "nuclei", "elapsed_s",
            "eta_s", "phase"}``, or None.
        total: tiles in the run.
        done: tiles already done (finished chunks of an earlier call).
        nuclei: their nuclei.
    """

    def __init__(self, callback, total: int, done: int, nuclei: int):
        self.callback, self.total, self.done, self.nuclei = callback, total, done, nuclei
        self.started = time.perf_counter()
        self.computed = 0

    def send(self, phase: str) -> None:
        """Reports the state; the ETA extrapolates this call's time per computed tile."""
        if self.callback is None:
            return
        elapsed = time.perf_counter() - self.started
        left = self.total - self.done
        eta = elapsed / self.computed * left if self.computed else None
        self.callback(
            {
                "tiles_done": self.done,
                "tiles_total": self.total,
                "nuclei": self.nuclei,
                "elapsed_s": round(elapsed, 3),
                "eta_s": None if eta is None else round(eta, 1),
                "phase": phase,
            }
        )

    def tile_done(self, nuclei: int) -> None:
        """Counts a finished tile and its nuclei, and reports."""
        self.done += 1
        self.computed += 1
        self.nuclei += nuclei
        self.send("segmenting")
