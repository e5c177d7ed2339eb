"""Loading a bundle for inference: resolve the ref, verify the hash, load the Keras model.

Importing this module does not import TensorFlow; :func:`load_bundle` does, and
:func:`verified_bundle` (the same checks, no model loaded) does not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segcore.bundles.card import ModelCard
from segcore.bundles.refs import resolve_bundle_ref
from segcore.bundles.store import MODEL_FILE, read_card, verify_bundle
from segcore.data.preprocessing import PreprocessConfig
from segcore.errors import BundleError
from segcore.inference.classical import BASELINE_REF, ClassicalBaseline
from segcore.inference.instances import InstanceConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    """A loaded bundle: the model and its card.

    Args:
        path: Path | None. The bundle folder (for ``hf://`` refs, the snapshot folder in the
            Hugging Face cache); ``None`` for the classical baseline, which has no files.
        card: ModelCard. The parsed ``card.json``.
        model: keras.Model. The loaded model (uncompiled unless asked otherwise), or the
            :class:`~segcore.inference.classical.ClassicalBaseline`; ``None`` for a bundle
            verified but not loaded (:func:`verified_bundle`).
    """

    path: Path | None
    card: ModelCard
    model: keras.Model | ClassicalBaseline | None

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the model was trained with."""
        return self.card.preprocess_config

    @property
    def threshold(self) -> float:
        """The probability threshold chosen on validation data."""
        return self.card.threshold

    @property
    def instances(self) -> InstanceConfig:
        """How the mask becomes nuclei (the card's, chosen on validation tiles)."""
        return self.card.instance_config

    @property
    def pixel_size(self) -> float | None:
        """µm per pixel the model was trained at (``None``: unknown, taken as 0.25)."""
        return self.card.pixel_size

    @property
    def input_size(self) -> int:
        """The training tile side in pixels."""
        return self.card.input_size


def baseline_bundle() -> Bundle:
    """The classical baseline dressed as a bundle (threshold 0.5 = Otsu's mask), so every
    command and page that takes a model can take it."""
    baseline = ClassicalBaseline()
    card = ModelCard(
        name="classical-hematoxylin-otsu",
        threshold=0.5,
        training={
            "method": f"{baseline.name}: rgb2hed hematoxylin, Gaussian sigma {baseline.sigma:g}, "
            "Otsu over the whole image; no training"
        },
        licence="not applicable (no weights)",
    )
    return Bundle(path=None, card=card, model=baseline)


def _load_failure(model_path: Path, card: ModelCard, exc: Exception) -> str:
    """The message of a model Keras would not load: an unsafe one (Python code in a ``Lambda``
    layer or a serialised lambda, refused by ``safe_mode``) is named as such; anything else
    may be a layer this segcore does not know."""
    if "safe_mode" in str(exc) or "arbitrary code execution" in str(exc):
        return (
            f"{model_path}: refused — the model holds Python code (a Lambda layer or a "
            "serialised Python lambda), which could run anything when loaded, so segcore "
            "loads bundles in Keras's safe mode and refuses it. Rebuild the model without "
            "Lambda layers (a layer class registered with "
            "keras.saving.register_keras_serializable instead) and save the bundle again"
        )
    return (
        f"{model_path}: Keras could not load the model ({exc.__class__.__name__}: "
        f"{str(exc)[:300]}). The bundle may need a newer segcore "
        f"(it was saved with {card.versions or 'unknown versions'})"
    )


def verified_bundle(
    ref: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None
) -> Bundle:
    """The bundle of ``ref`` checked as :func:`load_bundle` checks it — resolved, card read,
    SHA-256 of ``model.keras`` verified — but not loaded: ``model`` is ``None`` (no
    TensorFlow). ``"baseline"`` gives :func:`baseline_bundle`.

    Raises:
        BundleError: the ref does not resolve, a file is missing, the card is invalid or the
            hash differs.
    """
    if isinstance(ref, str) and ref == BASELINE_REF:
        return baseline_bundle()
    path = resolve_bundle_ref(ref, weights_dir=weights_dir)
    return Bundle(path=path, card=verify_bundle(path, read_card(path)), model=None)


def load_bundle(
    ref: str | os.PathLike,
    *,
    weights_dir: str | os.PathLike | None = None,
    compile: bool = False,
) -> Bundle:
    """Loads a bundle: resolves the ref, reads the card, verifies the hash, loads the model.

    The SHA-256 of ``model.keras`` is checked against the card *before* the file is opened.
    The model is loaded with ``keras.saving.load_model(..., safe_mode=True)`` after importing
    :mod:`segcore.network.layers` and :mod:`segcore.network.keras_metrics`, which register the
    custom objects.

    Args:
        ref: a folder path, a name under ``weights_dir``, or ``"hf://org/name@revision"``
            (see :func:`resolve_bundle_ref`; without ``@revision`` the ``main`` branch is used,
            which is unpinned, so pin a commit hash where results must be reproducible); or
            ``"baseline"`` for :func:`baseline_bundle` (a reserved name).
        weights_dir: where bare names are looked up, defaults to
            :data:`segcore.bundles.store.DEFAULT_WEIGHTS_DIR`.
        compile: passed to ``load_model``. Bundles are saved without optimizer and compile
            configuration, so the model is uncompiled either way; call ``model.compile`` to
            fine-tune it.

    Returns:
        The :class:`Bundle`.

    Raises:
        BundleError: the ref does not resolve, a file is missing, the card is invalid, the
            hash differs, or Keras cannot load the model.
    """
    bundle = verified_bundle(ref, weights_dir=weights_dir)
    if bundle.path is None:
        return bundle
    path, card = bundle.path, bundle.card

    import keras

    import segcore.network.keras_metrics
    import segcore.network.layers  # noqa: F401 - registers the custom layers

    model_path = path / MODEL_FILE
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=compile)
    except Exception as exc:
        raise BundleError(_load_failure(model_path, card, exc)) from exc
    log.info("loaded bundle %s from %s", card.name, path)
    return Bundle(path=path, card=card, model=model)
