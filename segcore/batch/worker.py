"""What a batch worker does: hold the model once, and run the tasks the engine sends it.

A worker is a plain class (:class:`SegmentWorker`); :mod:`segcore.batch.cluster` makes it a
Ray actor. Its tasks:

* :meth:`SegmentWorker.slide_plan` — ``segment_slide(..., chunks=(0, 0))``: opens the slide,
  finds the tissue, plans the grid, fits the slide's one lightness mapping and writes
  ``run.json`` (or finds the run complete); returns the number of chunks and the mapping;
* :meth:`SegmentWorker.slide_region` — ``segment_slide(..., chunks=(first, stop),
  equalisation=...)``: the unfinished chunks of one region (a run of consecutive chunks of the
  slide's grid: tissue cores in row-major order), written as part files into the slide's run
  folder, which the workers share;
* :meth:`SegmentWorker.slide_finish` — ``segment_slide(...)`` once every region is done:
  every chunk is there, so it only merges (the outputs of ``slide run``, byte for byte: the
  same grid, the same mapping, nuclei kept by the tile whose core holds their centroid);
* :meth:`SegmentWorker.image` — one image's ``predict --instances`` files and a
  ``summary.json`` (written last) in its own folder.

Every task is idempotent: run again (a retry after the worker was killed, a re-run of the
batch), it skips what is finished and never leaves a file that looks finished when it is not.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.inference.runtimes.base import AUTO
from segcore.timestamps import utc_now
from segcore.wholeslide.config import SlideRunConfig

log = logging.getLogger(__name__)

__all__ = ["IMAGE_OVERLAP", "ModelSpec", "SegmentWorker", "image_summary"]

IMAGE_OVERLAP = 64
"""Model-tile overlap for images: ``predict``'s default, so the files are the same."""

IMAGE_BATCH = 8
"""Model tiles per batch for images (``predict``'s default)."""


@dataclass(frozen=True)
class ModelSpec:
    """The model a batch runs, as each worker loads it.

    Args:
        ref: a bundle ref (folder, name under ``weights/``, ``hf://...``, ``baseline``).
        runtime: the runtime asked for (``auto``: each worker's fastest gated one).
    """

    ref: str = "default"
    runtime: str = AUTO

    def card(self):
        """The bundle's card (cheap: no model loaded), for the driver's identity checks."""
        from segcore.bundles.loading import baseline_bundle
        from segcore.bundles.refs import resolve_bundle_ref
        from segcore.bundles.store import read_card
        from segcore.inference.classical import BASELINE_REF

        if str(self.ref) == BASELINE_REF:
            return baseline_bundle().card
        return read_card(resolve_bundle_ref(self.ref))

    def load(self) -> tuple[Any, Any]:
        """``(bundle, model)``: the bundle and its network in the asked runtime — as ``slide
        run`` opens them (:func:`segcore.wholeslide.model.open_slide_model`): from the runtime
        cache without TensorFlow when a gated runtime is there, else with Keras."""
        from segcore.wholeslide.model import open_slide_model

        return open_slide_model(self.ref, self.runtime)


class SegmentWorker:
    """Holds one model and runs slide plans, slide regions, slide merges and images.

    Args:
        spec: what :meth:`ModelSpec.load` gives (anything with ``load() -> (bundle, model)``).
        config: the slides' :class:`SlideRunConfig` as a dict.
        pixel_size: µm per pixel given for every input (slides: level 0), or None.
    """

    def __init__(self, spec: Any, config: dict[str, Any], pixel_size: float | None = None):
        self.bundle, self.model = spec.load()
        self.config = SlideRunConfig.from_dict(config)
        self.pixel_size = pixel_size

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def _segment(self, slide: str, out_dir: str, **kwargs) -> dict[str, Any]:
        from segcore.wholeslide.segment import segment_slide

        return segment_slide(
            slide, out_dir, bundle=self.bundle, model=self.model, config=self.config, **kwargs
        )

    def slide_plan(self, slide: str, out_dir: str) -> dict[str, Any]:
        """Plans a slide's run in ``out_dir`` (see the module docstring)."""
        return self._segment(slide, out_dir, chunks=(0, 0))

    def slide_region(
        self, slide: str, out_dir: str, chunks: tuple[int, int], equalisation: dict | None
    ) -> dict[str, Any]:
        """Computes the unfinished chunks ``first .. stop - 1`` of a planned slide."""
        return self._segment(slide, out_dir, chunks=tuple(chunks), equalisation=equalisation)

    def slide_finish(self, slide: str, out_dir: str, equalisation: dict | None) -> dict[str, Any]:
        """Merges a slide whose chunks are all done (computing any that are not)."""
        return self._segment(slide, out_dir, equalisation=equalisation)

    def image(self, path: str, out_dir: str, identity: dict[str, Any]) -> dict[str, Any]:
        """Writes one image's files and its ``summary.json`` into ``out_dir``.

        Args:
            path: the image file.
            out_dir: its folder (made if missing).
            identity: the image's identity (:func:`~segcore.wholeslide.runfolder
                .slide_identity`), recorded in the summary.
        """
        from segcore.analysis.image_files import write_instance_files, write_probability_files
        from segcore.batch.inputs import given_settings
        from segcore.data.images import read_image
        from segcore.inference.flips import with_flips
        from segcore.inference.resolution import image_pixel_size
        from segcore.inference.scale import PIXEL_SIZE_WHEN_UNKNOWN, predict_at_given_pixel_size
        from segcore.wholeslide.outputs import SUMMARY_FILE, write_json

        started = time.perf_counter()
        folder, stem = Path(out_dir), Path(path).stem
        (folder / SUMMARY_FILE).unlink(missing_ok=True)  # whatever happens next, not finished
        folder.mkdir(parents=True, exist_ok=True)
        image = read_image(path)
        pixel_size = self.pixel_size if self.pixel_size is not None else image_pixel_size(path)
        if pixel_size is None:  # nothing says: as ``predict`` does (auto)
            pixel_size = PIXEL_SIZE_WHEN_UNKNOWN
        bundle = self.bundle
        threshold = bundle.threshold if self.config.threshold is None else self.config.threshold
        tiling = {
            "tile_size": bundle.input_size,
            "overlap": IMAGE_OVERLAP,
            "batch_size": IMAGE_BATCH,
        }
        # auto measures the nuclei at the bundle's threshold, as ``predict`` does
        model = with_flips(self.model) if self.config.flips else self.model
        probs, pixel_size, estimate = predict_at_given_pixel_size(
            model,
            image,
            bundle.preprocess,
            pixel_size=pixel_size,
            threshold=bundle.threshold,
            model_pixel_size=bundle.pixel_size,
            **tiling,
        )
        write_probability_files(folder, stem, probs, threshold)
        nuclei = write_instance_files(folder, stem, probs, image, bundle, threshold, pixel_size)
        summary = image_summary(
            identity, bundle, self.model, image.shape, pixel_size, threshold, nuclei
        )
        summary["config"] = given_settings(self.config)
        if estimate is not None:
            summary["pixel_size_estimate"] = estimate.describe()
        summary["seconds"] = round(time.perf_counter() - started, 3)
        summary["input"]["path"] = str(path)
        write_json(folder / SUMMARY_FILE, summary)
        return summary


def image_summary(identity, bundle, model, shape, pixel_size, threshold, nuclei) -> dict:
    """An image's ``summary.json``: its identity, the model, the nuclei and their density over
    the whole image's area (at its pixel size, else the model's)."""
    from segcore.inference.resolution import grid_pixel_size

    um = grid_pixel_size(pixel_size, bundle.pixel_size)
    area_mm2 = shape[0] * shape[1] * (um / 1000.0) ** 2
    card = bundle.card
    return {
        "state": "completed",
        "kind": "image",
        "nuclei": int(nuclei),
        "tissue_mm2": round(area_mm2, 6),
        "density_per_mm2": round(nuclei / area_mm2, 3) if area_mm2 > 0 else None,
        "width": int(shape[1]),
        "height": int(shape[0]),
        "pixel_size": um,
        "threshold": float(threshold),
        "runtime": str(getattr(model, "name", None) or type(model).__name__),
        "model": card.name,
        "model_sha256": card.model_sha256 or None,
        "input": dict(identity),
        "finished": utc_now(),
    }
