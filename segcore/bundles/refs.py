"""Bundle refs: the names users give a model, resolved to a local bundle folder.

* a folder path (``Path`` or string with a path separator): ``"runs/exp1/bundle"``;
* a bare name: a folder under ``weights/`` of the repository (or ``weights_dir``),
  e.g. :data:`DEFAULT_BUNDLE`;
* ``"hf://org/name@revision"``: a Hugging Face Hub model repository, downloaded into the
  normal Hugging Face cache by :func:`segcore.bundles.hub.download_bundle`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from segcore.bundles.card import CARD_FILE
from segcore.bundles.hub import download_bundle
from segcore.bundles.store import DEFAULT_WEIGHTS_DIR, MODEL_FILE, list_bundles
from segcore.errors import BundleError

DEFAULT_BUNDLE = "default"
"""The bundle that serves when no model is named."""

HF_SCHEME = "hf://"
"""Prefix of Hugging Face Hub refs."""

_REPO_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_ref(text: str) -> str:
    """``"org/name@rev"`` as typed by a user, as the ref ``"hf://org/name@rev"`` (kept if it
    already has the scheme); checked by :func:`parse_hf_ref`.

    Raises:
        BundleError: not of the form ``[hf://]org/name[@revision]``.
    """
    text = text.strip()
    ref = text if text.startswith(HF_SCHEME) else HF_SCHEME + text
    parse_hf_ref(ref)
    return ref


def parse_hf_ref(ref: str) -> tuple[str, str]:
    """Splits ``"hf://org/name@revision"`` into ``("org/name", "revision")``.

    The revision is optional and defaults to ``"main"``, which is *unpinned*: the bundle
    changes when the repository does. Pin a commit hash for reproducible results.

    Raises:
        BundleError: not of the form ``hf://org/name[@revision]``.
    """
    if not ref.startswith(HF_SCHEME):
        raise BundleError(f"{ref!r} is not a Hugging Face ref (hf://org/name@revision)")
    repo_id, at, revision = ref[len(HF_SCHEME) :].partition("@")
    if not _REPO_ID_RE.fullmatch(repo_id) or (at and not revision):
        raise BundleError(
            f"{ref!r}: expected hf://org/name@revision, e.g. "
            "hf://my-org/nuclei-deeplabv3plus@0123456789abcdef0123456789abcdef01234567"
        )
    return repo_id, revision or "main"


def resolve_bundle_ref(
    ref: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None
) -> Path:
    """Turns a bundle ref into a local bundle folder (downloading ``hf://`` refs).

    Refs, checked in this order:

    * ``"hf://org/name@revision"``: downloaded with :func:`segcore.bundles.hub.download_bundle` into
      the Hugging Face cache (``HF_HUB_CACHE``/``HF_HOME``; offline with ``HF_HUB_OFFLINE=1``).
      ``@revision`` may be left out and then means ``main``, which is unpinned; pinning a
      commit hash is recommended.
    * a ``Path``, or a string containing a path separator or starting with ``~`` or ``.``: a
      folder path.
    * a bare name: ``weights_dir / name`` if that folder exists, otherwise ``./name``.

    Only the folder's existence is checked here; :func:`load_bundle` checks its contents.

    Args:
        ref: the ref.
        weights_dir: where bare names are looked up, defaults to :data:`DEFAULT_WEIGHTS_DIR`.

    Returns:
        The bundle folder.

    Raises:
        BundleError: the folder does not exist, or the download failed.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    if isinstance(ref, str) and ref.startswith(HF_SCHEME):
        repo_id, revision = parse_hf_ref(ref)
        return download_bundle(repo_id, revision)
    text = os.fspath(ref)
    if not text:
        raise BundleError("empty bundle ref; give a folder, a name under weights/ or hf://...")
    is_name = (
        isinstance(ref, str)
        and "/" not in text
        and os.sep not in text
        and not text.startswith(("~", "."))
    )
    if is_name:
        candidates = [weights_dir / text, Path(text)]
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        available = ", ".join(path.name for path, _ in list_bundles(weights_dir)) or "none"
        raise BundleError(
            f"bundle {text!r} not found: looked for {candidates[0]} and {candidates[1].resolve()}. "
            f"Bundles in {weights_dir}: {available}. Train and save one with "
            "segcore.bundles.store.save_bundle, or give a folder path or hf://org/name@revision"
        )
    path = Path(text).expanduser()
    if not path.is_dir():
        raise BundleError(
            f"{path}: bundle folder not found; give a folder holding {MODEL_FILE} and {CARD_FILE}"
        )
    return path
