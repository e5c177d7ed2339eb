"""Process-wide and per-session state of the app.

* The **model** is verified once per process by :func:`load_bundle_cached`
  (``st.cache_resource``: card and SHA-256, no TensorFlow) and shared by every session; what
  predicts — the cached fast runtime, else the Keras model — is loaded in the background by
  :mod:`appkit.runtime`, from the end of the server's first page run on (:func:`preload`).
  Switching the active model (:func:`switch_model`) records the new ref with
  :mod:`segcore.analysis.catalog` and replaces both.
* **Analyses** (an image's probabilities; see :class:`segcore.analysis.analyse.ImageAnalysis`)
  are kept in a per-process LRU store, keyed by the model and the image's content, so moving a
  threshold slider, reloading the page or a second browser never re-runs the model for an image
  already predicted. The computation is shared by content, the identity never: the store keeps
  analyses without a name, and :func:`analysis_for` gives each session the analysis under the
  name of its own upload (captions, CSV rows and download names come from it).
* **Memory** is bounded by bytes: the analysis store and :func:`result_store` together hold at
  most :func:`appkit.caches.cache_bytes` (``$SEGCORE_CACHE_MB`` MiB, default 512), dropping
  the least recently used entries first (:class:`appkit.caches.AnalysisStore`); model
  predictions run one at a time per process (:mod:`appkit.gate`). The other caches
  are small and bounded by count: one loaded model, four opened sample sources and
  :mod:`segcore.data.samples`' last 64 synthetic tiles (about 17 MB at 256×256).
* The **sample source** (``"samples"``, ``"synthetic"`` or a dataset folder inside a data root,
  by its root-qualified name: :func:`appkit.access.browser_source`) is per session
  (``st.session_state``).
* The **Predict page's sample choice** (mode, split, sample, random gallery) is per session
  too; its ``st.session_state`` keys are owned here, so other pages and widgets change it only
  through :func:`change_sample_source` and :func:`request_predict`.
* **Evaluation results** are kept per process in :func:`result_store`, under keys built here
  (:func:`split_evaluation`).
* **Which runtime produced the figures** a session was shown for each image is remembered per
  session (:func:`runtime_before`), so that the explorer can say when an image was predicted
  again by a fast runtime once it was ready (the figures then move slightly).
* **The explorer's widgets** (the fragment's sliders, on the Predict and Slides pages) are
  named here (:func:`explorer_keys`), and :func:`show_explorer_values` keeps what the browser
  shows equal to what the server holds after a run that did not draw them (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import streamlit as st

from appkit import access, gate, script_runs
from appkit.caches import AnalysisStore, cache_bytes
from segcore.analysis import catalog
from segcore.data import samples
from segcore.data.datasets import DatasetSplits

SOURCE_KEY = "sample_source"
"""``st.session_state`` key of the session's sample source."""

PREDICT_REQUEST_KEY = "predict_request"
"""``st.session_state`` key set to open a sample in Predict: ``(source, split, sample_id)``."""

PREDICT_MODE_KEY = "predict_mode"
"""``st.session_state`` key of the Predict page's image mode radio (``"Sample"``/``"Upload"``)."""

SAMPLE_SPLIT_KEY = "sample_split"
"""``st.session_state`` key of the Predict page's split selectbox."""

SAMPLE_ID_KEY = "sample_id"
"""``st.session_state`` key of the Predict page's sample selectbox."""

RANDOM_IDS_KEY = "random_ids"
"""``st.session_state`` key of the Predict page's random-sample gallery (a list of ids)."""

RANDOM_SAMPLES = 3
"""How many samples the Predict page's random gallery shows."""

RESULT_CACHE_SHARE = 16
"""Evaluation results get ``1/16`` of the budget (they are small: per-image figures and counts);
analyses the rest."""

MAX_RUNTIMES_SEEN = 64
"""How many images a session remembers the runtime of (:func:`runtime_before`)."""

_RUNTIMES_SEEN_KEY = "_runtimes_seen"
_RUNTIME_BEFORE_KEY = "_runtime_before"
_EXPLORER_DRAWN_KEY = "_explorer_drawn"
_EXPLORER_IN_BROWSER_KEY = "_explorer_in_browser"


@st.cache_resource(max_entries=1, show_spinner="Loading the model…")
def load_bundle_cached(ref: str):
    """The :class:`segcore.bundles.loading.Bundle` of ``ref`` verified (card, SHA-256 of
    ``model.keras``) but not loaded — ``model`` is None, no TensorFlow — once per process (one
    at a time); the classical baseline as it is. What predicts for it is
    :func:`predicting_model`.

    Raises:
        BundleError: the ref does not resolve, or the bundle is incomplete or altered.
    """
    from segcore.bundles.loading import verified_bundle

    return verified_bundle(ref)


def predicting_model(bundle):
    """What predicts for ``bundle``: the active model in the app's runtime
    (:mod:`appkit.runtime`: the cached fast runtime, else Keras until the fast one is prepared
    in the background), or the classical baseline itself. Waits, with a spinner, while the
    model is still being loaded.

    Raises:
        SegcoreError: the model could not be loaded.
    """
    if bundle.path is None:
        return bundle.model
    builder = _runtime_builder(bundle)
    if builder.usable:
        return builder.model()
    with st.spinner("Loading the model…"):
        _import_while_waiting()
        return builder.model()


PAGE_MODULES = (
    "pandas",
    "pyarrow",
    "plotly.subplots",
    "plotly.io",
    "scipy.optimize",
    "scipy.fft",
)
"""Modules the Predict page's first drawing imports on its way (the nuclei table through pandas
and Arrow, the histograms' subplots and the figures' JSON, the nuclei matched against the ground
truth through ``scipy.optimize``): :func:`predicting_model` imports them while the model is
still being opened. That work (OpenVINO compiling; on a fresh clone the gate's predictions)
mostly runs outside the GIL, so the imports overlap it rather than follow it: the first Predict
page was complete 0.4–1.0 s sooner on the 2-core VM (``benchmarks/bench_browser.py
--first-predict``, ``docs/benchmarks.md``)."""


def _import_while_waiting() -> None:
    import importlib

    for name in PAGE_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _runtime_builder(bundle, delay: float = 0.0):
    from appkit import runtime

    requested, _ = runtime.requested_runtime()
    ref = f"{bundle.path}@{bundle.card.model_sha256}"
    return runtime.runtime_builder(ref, requested, bundle, delay)


def _prediction_done(bundle) -> None:
    """Tells ``bundle``'s runtime builder, at the end of this run, that a prediction has been
    shown: a fast runtime's build waits for the first one, so that it slows neither the
    prediction nor the page that shows it."""
    if bundle.path is not None:
        script_runs.call_after_run(_runtime_builder(bundle).prediction_done)


_PRELOADED: set[str] = set()
"""The active refs :func:`preload` has started loading in this process."""


def preload() -> None:
    """Starts loading the active model and its runtime in the background (:mod:`appkit.runtime`)
    once the current script run has ended, so the first visit to Predict finds it ready or on
    its way. ``app.py`` calls it after every page run (:func:`appkit.navigation.run`): the
    server's first page — the landing page, usually — starts it, after the browser has been
    told that page is complete (:func:`appkit.script_runs.call_after_run`), so the page is
    not slowed by it; a page that needs the model starts it itself anyway. Once per active
    ref and process."""
    script_runs.call_after_run(_preload_now)


def _preload_now() -> None:
    """:func:`preload`'s work, at the end of a run: the active model verified (card, SHA-256)
    and its runtime builder made (started). Nothing for a model that would have to be
    downloaded first (``hf://``: the page that needs it loads it, with a spinner) or that
    cannot be verified (that page shows why)."""
    from segcore.bundles.loading import verified_bundle
    from segcore.bundles.refs import HF_SCHEME
    from segcore.errors import SegcoreError

    ref = active_ref()
    if ref in _PRELOADED or ref.startswith(HF_SCHEME):
        return
    _PRELOADED.add(ref)
    try:
        bundle = verified_bundle(ref)  # not load_bundle_cached: its spinner needs a live run
    except SegcoreError:
        return
    if bundle.path is not None:
        from appkit.runtime import PRELOAD_DELAY_S

        _runtime_builder(bundle, PRELOAD_DELAY_S)


def runtime_status(bundle) -> str | None:
    """The line saying which runtime runs ``bundle`` (and what is being prepared), or ``None``
    for the classical baseline. Waits, with a spinner, while the model is still being loaded
    (the line then says what predicts; one that failed to load says why)."""
    from appkit import runtime
    from segcore.errors import SegcoreError

    if bundle.path is None:
        return None
    _, warning = runtime.requested_runtime()
    builder = _runtime_builder(bundle)
    if not builder.usable:
        with contextlib.suppress(SegcoreError):  # the prediction shows the error
            predicting_model(bundle)
    return builder.status() + (f" {warning}" if warning else "")


def active_ref() -> str:
    """The active model's ref (see :func:`segcore.analysis.catalog.active_ref`)."""
    return catalog.active_ref()


def active_bundle():
    """The active model's bundle, loaded on first use and cached for the process.

    Raises:
        BundleError: the bundle cannot be loaded (the caller shows the message).
    """
    return load_bundle_cached(active_ref())


def switch_model(ref: str):
    """Makes ``ref`` the active model for every session and drops the loaded one.

    Returns:
        The new model's card.

    The bundle is verified (:func:`load_bundle_cached`: card, SHA-256 of ``model.keras``) and
    loaded (:func:`predicting_model`: its gated runtime from the cache, else Keras), then
    recorded (:func:`segcore.analysis.catalog.set_active_ref`); when either fails, the active
    model stays as it was.

    Raises:
        ViewerModeError: viewer mode is on (:func:`appkit.access.require_editor`).
        BundleError: ``ref`` is not a valid bundle (it does not resolve, its card is invalid,
            ``model.keras`` fails its hash or does not load), or the runs folder is read-only;
            nothing changes.
    """
    access.require_editor("Switching the active model")
    predicting_model(load_bundle_cached(ref))  # raises before anything is recorded
    return catalog.set_active_ref(ref, load=False)  # the hash is checked again, cheaply


@st.cache_resource
def analysis_store() -> AnalysisStore:
    """The process-wide store of image analyses: :func:`cache_bytes` less the results' share."""
    budget = cache_bytes()
    return AnalysisStore(budget - budget // RESULT_CACHE_SHARE)


@st.cache_resource
def result_store() -> AnalysisStore:
    """The process-wide store of evaluation results (per model, source, split, threshold):
    ``1/``:data:`RESULT_CACHE_SHARE` of :func:`cache_bytes`, at most 8 results."""
    return AnalysisStore(cache_bytes() // RESULT_CACHE_SHARE, max_items=8)


def sample_source() -> str:
    """This session's sample source: :func:`segcore.data.samples.default_source` (the built-in
    real samples on a fresh clone) until the user picks another."""
    return st.session_state.setdefault(SOURCE_KEY, samples.default_source())


def set_sample_source(source: str) -> None:
    """Sets this session's sample source (the Predict page's sample choice is kept)."""
    st.session_state[SOURCE_KEY] = source


def change_sample_source(source: str) -> None:
    """Sets this session's sample source and forgets the Predict page's chosen sample and
    random gallery, which belonged to the previous source."""
    set_sample_source(source)
    st.session_state.pop(SAMPLE_ID_KEY, None)
    st.session_state.pop(RANDOM_IDS_KEY, None)


def request_predict(source: str, split_name: str, sample_id: str) -> None:
    """Asks the Predict page to open ``sample_id`` of ``split_name`` of ``source`` on its next
    run (:func:`apply_predict_request`); the caller then switches to that page."""
    st.session_state[PREDICT_REQUEST_KEY] = (source, split_name, sample_id)


def apply_predict_request() -> None:
    """The Predict page's first step: applies a pending :func:`request_predict` (source, split,
    sample mode and sample), if any, once."""
    request = st.session_state.pop(PREDICT_REQUEST_KEY, None)
    if request is None:
        return
    source, split_name, sample_id = request
    set_sample_source(source)
    st.session_state[SAMPLE_SPLIT_KEY] = split_name
    st.session_state[PREDICT_MODE_KEY] = "Sample"
    st.session_state[SAMPLE_ID_KEY] = sample_id


def default_sample(ids: list[str]) -> None:
    """Makes the Predict page's chosen sample the first of ``ids`` unless it is one of them."""
    if st.session_state.get(SAMPLE_ID_KEY) not in ids:
        st.session_state[SAMPLE_ID_KEY] = ids[0]


def choose_sample(sample_id: str) -> None:
    """Makes ``sample_id`` the Predict page's chosen sample (a button callback)."""
    st.session_state[SAMPLE_ID_KEY] = sample_id


def pick_random_samples(ids: list[str]) -> None:
    """Fills the Predict page's gallery with :data:`RANDOM_SAMPLES` ids drawn from ``ids``
    (:func:`segcore.data.samples.random_picks`; a button callback)."""
    picks = samples.random_picks(len(ids), RANDOM_SAMPLES)
    st.session_state[RANDOM_IDS_KEY] = [ids[i] for i in picks]


def random_samples(ids: list[str]) -> list[str]:
    """The Predict page's gallery: the drawn ids that are still in ``ids``, in drawn order."""
    return [i for i in st.session_state.get(RANDOM_IDS_KEY, []) if i in ids]


def open_source_cached(source: str) -> DatasetSplits:
    """:func:`segcore.data.samples.open_source` within the data roots
    (:func:`appkit.access.data_roots`), once per process, source and roots.

    Raises:
        DatasetError: the generic refusal for a folder outside the roots, or the dataset's
            problems with files named relative to their root.
    """
    return _open_source_cached(source, access.data_roots())


@st.cache_resource(max_entries=4, show_spinner="Opening the dataset…")
def _open_source_cached(source: str, roots: tuple) -> DatasetSplits:
    return samples.open_source(source, roots=roots)


def model_key(bundle) -> tuple[str, str]:
    """What identifies a loaded model in cache keys: its folder and its file's hash (read from
    the bundle itself, so no file is read again)."""
    if bundle.path is None:  # the classical baseline: no files
        return (bundle.card.name, "")
    return (str(bundle.path), bundle.card.model_sha256)


@dataclasses.dataclass(frozen=True)
class ExplorerKeys:
    """The ``st.session_state`` keys of an explorer's widgets (:func:`explorer_keys`).

    Attributes:
        threshold_a: the Threshold A slider.
        threshold_b: the Threshold B slider.
        opacity: the overlay opacity slider.
        min_area: the minimum nucleus area slider.
        split_depth: the split depth slider.
        table_page: the nucleus table's page number.
    """

    threshold_a: str
    threshold_b: str
    opacity: str
    min_area: str
    split_depth: str
    table_page: str


def explorer_keys(model_id: str, image: str, page: str = "") -> ExplorerKeys:
    """The explorer's widget keys: the sliders per model (they start at the model's threshold and
    nucleus setting), the table's page per image (``image``: its name's stem); ``page`` prefixes
    them for a page other than Predict (``"slides"``), so each page keeps its own."""
    prefix = f"{page}_" if page else ""
    return ExplorerKeys(
        threshold_a=f"{prefix}thr_a_{model_id}",
        threshold_b=f"{prefix}thr_b_{model_id}",
        opacity=f"{prefix}opacity",
        min_area=f"{prefix}min_area_{model_id}",
        split_depth=f"{prefix}split_depth_{model_id}",
        table_page=f"{prefix}page_{image}",
    )


def begin_page_run() -> None:
    """Every full script run's first step (:func:`appkit.navigation.page_header`): notes
    which explorer (if any) the previous run drew, for :func:`show_explorer_values`.
    Fragment reruns do not call it."""
    st.session_state[_EXPLORER_IN_BROWSER_KEY] = st.session_state.pop(_EXPLORER_DRAWN_KEY, None)


def show_explorer_values(keys: ExplorerKeys) -> None:
    """The explorer's first step: makes the browser show the values the server holds.

    Why: a run that ends in ``st.stop()`` before the explorer (the uploader emptied while a new
    file replaces the old one, an error, another page) keeps the explorer's widget values on the
    server (Streamlit drops unseen widgets only after a run that completes), while the browser
    drops those widgets; when they come back the browser would draw them at their defaults
    while the page computes with the kept values — Threshold A's slider at 0.56 above the
    read-out "Threshold A = 0.71". So after a run that did not draw the explorer, every kept
    value is written back through ``st.session_state``, which Streamlit sends to the browser
    with the widget; the user's thresholds survive a new image, and slider and read-out agree.
    """
    if st.session_state.get(_EXPLORER_IN_BROWSER_KEY) != keys.threshold_a:
        for key in dataclasses.astuple(keys):
            if key in st.session_state:
                st.session_state[key] = st.session_state[key]
    st.session_state[_EXPLORER_IN_BROWSER_KEY] = keys.threshold_a  # this explorer, drawn
    st.session_state[_EXPLORER_DRAWN_KEY] = keys.threshold_a


def upload_limit_mb() -> int:
    """The largest upload the server accepts, in MB (``server.maxUploadSize`` in
    ``.streamlit/config.toml``). The browser refuses a larger file before sending it, so the
    page never sees it: say the limit up front."""
    return int(st.get_option("server.maxUploadSize"))


@contextlib.contextmanager
def progress_bar(text: str) -> Iterator[Callable[[float, str], None]]:
    """A progress bar shown while the block runs (removed after, even on error); yields
    ``show(fraction, text)`` to move it."""
    bar = st.progress(0.0, text=text)
    try:
        yield lambda fraction, message: bar.progress(fraction, text=message)
    finally:
        bar.empty()


def analysis_for(
    bundle,
    key: tuple,
    name: str,
    load: Callable[[], tuple],
    pixel_size: float | str | None = None,
    flips: bool = False,
):
    """The stored analysis of ``key`` for this model, else one made now with a progress bar
    (and stored), under this session's ``name``.

    The store holds analyses without a name (:meth:`ImageAnalysis.named
    <segcore.analysis.analyse.ImageAnalysis.named>` with ``""``): two sessions uploading the
    same bytes share the prediction, and each sees only the name it uploaded. The key names
    the runtime that predicts now, so once a fast runtime is ready the image is predicted
    again; the session then learns which runtime it was shown before (:func:`runtime_before`).

    Args:
        bundle: the loaded bundle (:func:`active_bundle`).
        key: identifies the image (its content digest, or its sample description).
        name: the image's name in this session, for captions, CSV rows and download names.
        load: returns ``(image, truth_or_None)``; called only when nothing is stored.
        pixel_size: the image's µm per pixel (``None``: the model's; ``"auto"``: estimated
            from its nuclei, :mod:`segcore.inference.scale`); part of the key.
        flips: average the model over the image's mirror images (four network calls per
            tile; :func:`~segcore.analysis.analyse.analyse_image`); part of the key.

    Raises:
        SegcoreError: ``load`` or the prediction failed (nothing is stored).
    """
    from segcore.analysis.analyse import analyse_image

    model = predicting_model(bundle)
    image_key = (*model_key(bundle), *key, pixel_size, flips)
    full_key = (*image_key, getattr(model, "name", ""))  # the image in the runtime of now
    store = analysis_store()
    found = store.get(full_key)
    if found is not None:
        _note_runtime(image_key, name, found.runtime)
        return found.named(name)
    image, truth = load()
    with (
        progress_bar(f"Predicting {name}…") as show,
        gate.prediction_slot(lambda: show(0.0, f"{name}: waiting for another prediction…")),
    ):
        found = store.get(full_key)  # another session may have predicted it while this one waited
        if found is not None:
            _note_runtime(image_key, name, found.runtime)
            return found.named(name)
        analysis = analyse_image(
            model,
            image,
            bundle.preprocess,
            truth,
            name=name,
            model_name=bundle.card.name,
            tile_size=bundle.input_size,
            progress=lambda done, total: show(done / total, f"{name}: tile {done} of {total}"),
            pixel_size=pixel_size,
            model_pixel_size=bundle.pixel_size,
            instances=bundle.instances,
            threshold=bundle.threshold,
            flips=flips,
        )
        # stored before the slot is given up: a session waiting for it then finds the result
        store.put(full_key, analysis.named(""))  # content only: no session's name is kept
    _prediction_done(bundle)
    _note_runtime(image_key, name, analysis.runtime)
    return analysis


def _note_runtime(image: tuple, name: str, runtime: str) -> None:
    """Records, for this session, that the figures of ``image`` (model, image key and pixel
    size), shown under ``name``, come from ``runtime``; when this session was shown figures of
    the same image from another runtime before (Keras, before the fast runtime was ready),
    :func:`runtime_before` names it from now on."""
    seen = st.session_state.setdefault(_RUNTIMES_SEEN_KEY, {})
    last, before = seen.pop(image, (runtime, None))
    if last != runtime:
        before = last
    seen[image] = (runtime, before)  # the most recent last
    befores = st.session_state.setdefault(_RUNTIME_BEFORE_KEY, {})
    befores.pop(name, None)
    if before is not None:
        befores[name] = before
    for kept in (seen, befores):
        while len(kept) > MAX_RUNTIMES_SEEN:
            kept.pop(next(iter(kept)))


def runtime_before(analysis) -> str | None:
    """The runtime whose figures this session was shown before for the image of ``analysis``
    when it differs from the one that produced ``analysis`` (the image was predicted again once
    a fast runtime was ready, and the figures moved slightly), else ``None``."""
    before = st.session_state.get(_RUNTIME_BEFORE_KEY, {}).get(analysis.name)
    return before if before and before != analysis.runtime else None


def runtime_name(bundle) -> str:
    """The runtime that predicts for ``bundle`` now (``"keras"`` until a fast one is ready,
    then e.g. ``"openvino-int8"``), as :attr:`ImageAnalysis.runtime
    <segcore.analysis.analyse.ImageAnalysis.runtime>` names it; ``""`` for the classical
    baseline."""
    from segcore.inference.runtimes.base import RuntimeModel

    model = predicting_model(bundle)
    return model.name if isinstance(model, RuntimeModel) else ""


def upload_pixel_size(image_bytes: bytes):
    """What an uploaded file's metadata (TIFF, OME) records about its pixel size: a
    :class:`~segcore.inference.resolution.RecordedPixelSize` (``value`` None when it records
    none, or one out of range — ``note`` then says so). Never raises: a file that cannot be read
    (damaged, a decompression bomb) records nothing, and reading the upload refuses it."""
    import io

    from segcore.inference.resolution import read_pixel_size

    return read_pixel_size(io.BytesIO(image_bytes))


def source_pixel_size(splits: DatasetSplits) -> float | None:
    """µm per pixel a dataset folder declares in its ``dataset.json``, or None."""
    from segcore.data.datasets import dataset_pixel_size
    from segcore.errors import DatasetError

    try:
        return dataset_pixel_size(splits.root)
    except DatasetError:
        return None


def sample_analysis(
    bundle,
    sample_set,
    sample_id: str,
    pixel_size: float | str | None = None,
    flips: bool = False,
):
    """:func:`analysis_for` one sample of a :class:`~segcore.data.datasets.SampleSet`, by id."""
    index = sample_set.ids.index(sample_id)
    key = ("sample", sample_set.describe(index))
    return analysis_for(
        bundle, key, sample_id, lambda: sample_set.load_truth(index), pixel_size, flips
    )


def _evaluation_key(
    bundle, model, splits: DatasetSplits, split_name: str, threshold: float
) -> tuple:
    """The :func:`result_store` key of one evaluation: model, the runtime ``model`` runs it in,
    dataset, split and threshold."""
    runtime = getattr(model, "name", "")
    return (*model_key(bundle), runtime, str(splits.root), split_name, float(threshold))


def split_evaluation(
    bundle, splits: DatasetSplits, split_name: str, threshold: float, *, run: bool = False
):
    """The :func:`segcore.evaluation.evaluate.evaluate` result of one split at ``threshold``.

    Results are kept in :func:`result_store`, so each is computed once per model, dataset,
    split and threshold.

    Args:
        bundle: the loaded bundle (:func:`active_bundle`).
        splits: the opened sample source (:func:`open_source_cached`).
        split_name: ``"train"``, ``"val"`` or ``"test"``.
        threshold: the threshold of the per-image metrics.
        run: when nothing is stored, evaluate now (with a progress bar) and store the result;
            without it, return ``None``.

    Returns:
        The :class:`~segcore.evaluation.evaluate.EvaluationResult`, or ``None`` (not stored
        and not ``run``).

    Raises:
        SegcoreError: a sample could not be read or predicted (nothing is stored).
    """
    from segcore.evaluation.evaluate import evaluate

    model = predicting_model(bundle)  # once: the key names the runtime that evaluates
    key = _evaluation_key(bundle, model, splits, split_name, threshold)
    result = result_store().get(key)
    if result is not None or not run:
        return result
    with (
        progress_bar("Evaluating…") as show,
        gate.prediction_slot(lambda: show(0.0, "Waiting for another prediction…")),
    ):
        result = result_store().get(key)  # another session may have run it while this waited
        if result is not None:
            return result
        result = evaluate(
            model,
            splits.split(split_name),
            bundle.preprocess,
            threshold=threshold,
            tile_size=bundle.input_size,
            progress=lambda done, total, sample: show(done / total, f"{sample} ({done}/{total})"),
            pixel_size=source_pixel_size(splits),
            model_pixel_size=bundle.pixel_size,
            instances=bundle.instances,
        )
        result_store().put(key, result)  # before the slot is given up (see analysis_for)
    _prediction_done(bundle)
    return result
