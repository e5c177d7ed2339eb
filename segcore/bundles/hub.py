"""Model bundles on the Hugging Face Hub: download (verified) and upload.

A bundle repository on the Hub is an ordinary model repository holding the two bundle files
(``model.keras``, ``card.json``, see :mod:`segcore.bundles.store`) and a ``README.md`` model card
generated from ``card.json`` by :func:`segcore.bundles.readme.render_readme`.

:func:`download_bundle` fetches both files with ``huggingface_hub.hf_hub_download`` into the
normal Hugging Face cache and returns the snapshot folder, which is itself a bundle folder.
Both files come from the same commit (the one ``revision`` resolved to when ``card.json`` was
fetched), and ``model.keras`` is checked against the card's SHA-256, since the Hub client
checks sizes only.

Environment, read **at call time** (huggingface_hub 2.4 reads ``HF_HUB_OFFLINE``,
``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` once, when it is first imported, so setting
them later would otherwise have no effect):

* ``HF_HUB_OFFLINE=1``: use only cached files; nothing is requested from the network.
* ``HF_ENDPOINT``: the Hub (or mirror) to download from.
* ``HF_HUB_CACHE``, else ``HF_HOME``/hub: the cache folder.

Example:
    >>> folder = download_bundle("my-org/nuclei-deeplabv3plus", revision="0123abcd...")
    >>> bundle = segcore.bundles.loading.load_bundle(folder)
    >>> commit = push_bundle("weights/monuseg-v1", "my-org/nuclei-deeplabv3plus")
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from segcore.bundles.card import CARD_FILE
from segcore.bundles.readme import render_readme
from segcore.bundles.store import (
    BUNDLE_FILES,
    MODEL_FILE,
    file_sha256,
    read_card,
    verify_bundle,
)
from segcore.errors import BundleError

log = logging.getLogger(__name__)

README_FILE = "README.md"

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True if ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was at import.

    An explicit ``HF_HUB_OFFLINE`` in the environment wins over the value huggingface_hub
    read at import time.
    """
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value:
            return value.strip().lower() in _TRUE
    return constants.is_offline_mode()


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder from the environment now.

    ``HF_HUB_CACHE``, else the legacy ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    huggingface_hub's default (``~/.cache/huggingface/hub``).
    """
    from huggingface_hub import constants

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` from the environment now (``None``: huggingface_hub's default)."""
    endpoint = os.environ.get("HF_ENDPOINT")
    return endpoint.rstrip("/") if endpoint else None


def _unavailable(repo_id: str, revision: str, filename: str, cache: Path, why: str) -> BundleError:
    return BundleError(
        f"hf://{repo_id}@{revision}: {filename} is not in the Hugging Face cache ({cache}) and "
        f"{why}. Either connect to the network and retry (unset HF_HUB_OFFLINE), or download it "
        f"beforehand on a connected machine (hf download {repo_id} {MODEL_FILE} {CARD_FILE} "
        f"--revision {revision}, then copy the cache), or load a local bundle folder instead"
    )


def _download(
    repo_id: str,
    filename: str,
    revision: str,
    *,
    cache_dir: Path,
    endpoint: str | None,
    token: str | bool | None,
    offline: bool,
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from segcore.version import __version__

    where = f"hf://{repo_id}@{revision}"
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                repo_type="model",
                cache_dir=cache_dir,
                endpoint=endpoint,
                token=token,
                local_files_only=offline,
                library_name="segcore",
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError as exc:
        why = (
            "offline mode is on (HF_HUB_OFFLINE)"
            if offline
            else f"the Hub ({endpoint or 'huggingface.co'}) could not be reached ({exc})"
        )
        raise _unavailable(repo_id, revision, filename, cache_dir, why) from exc
    except GatedRepoError as exc:
        raise BundleError(
            f"{where}: the repository is gated; accept its conditions on the Hub and pass a "
            "token (or run `hf auth login`)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise BundleError(
            f"{where}: repository not found (or private: pass a token or run `hf auth login`)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise BundleError(f"{where}: revision {revision!r} not found in the repository") from exc
    except RemoteEntryNotFoundError as exc:
        raise BundleError(
            f"{where}: the repository has no {filename}, so it is not a segcore bundle"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise BundleError(
            f"{where}: downloading {filename} failed ({exc.__class__.__name__}: {exc})"
        ) from exc


def _evict(path: Path) -> None:
    """Removes a cached file (snapshot link and blob) so the next download fetches it again."""
    blob = path.resolve()
    for target in {path, blob}:
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:  # pragma: no cover - best effort
            log.warning("could not remove %s from the Hugging Face cache: %s", target, exc)


def download_bundle(
    repo_id: str,
    revision: str = "main",
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Downloads a bundle from the Hugging Face Hub (or finds it in the cache) and verifies it.

    ``card.json`` is fetched first; ``model.keras`` is then fetched from the commit the card
    came from, so both files belong together even if a branch moves in between. When
    ``revision`` is a commit hash and both files are cached, nothing is requested at all.

    Args:
        repo_id: ``"org/name"`` of a model repository.
        revision: a commit hash (recommended: reproducible), a tag or a branch; defaults to
            ``"main"``, which is unpinned.
        cache_dir: the Hugging Face cache folder, defaults to :func:`hub_cache_dir`.
        endpoint: the Hub URL, defaults to ``HF_ENDPOINT`` or huggingface.co.
        token: Hub token for private repositories; ``None`` uses the saved login, ``False``
            sends none.

    Returns:
        The snapshot folder in the cache holding ``model.keras`` and ``card.json`` (a bundle
        folder for :func:`segcore.bundles.loading.load_bundle`).

    Raises:
        BundleError: offline (``HF_HUB_OFFLINE=1``) and not cached, the Hub unreachable and
            not cached, repository/revision/file not found, an invalid card, or a SHA-256
            mismatch (the bad file is then removed from the cache, so a retry downloads it
            again).
    """
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    options = {
        "cache_dir": cache,
        "endpoint": endpoint or hub_endpoint(),
        "token": token,
        "offline": hub_offline(),
    }
    card_path = _download(repo_id, CARD_FILE, revision, **options)
    commit = card_path.parent.name
    model_path = _download(
        repo_id, MODEL_FILE, commit if _COMMIT_RE.fullmatch(commit) else revision, **options
    )
    folder = card_path.parent
    if model_path.parent != folder:  # pragma: no cover - defensive, same commit by construction
        raise BundleError(
            f"hf://{repo_id}@{revision}: {CARD_FILE} and {MODEL_FILE} resolved to different "
            f"snapshots ({folder}, {model_path.parent}); pin a commit hash and retry"
        )
    try:
        verify_bundle(folder)
    except BundleError as exc:
        if "sha256 mismatch" in str(exc):
            _evict(model_path)
            raise BundleError(
                f"hf://{repo_id}@{revision}: downloaded {MODEL_FILE} does not match the sha256 "
                f"in {CARD_FILE} ({exc}). The file was removed from the cache; if the error "
                "repeats, the repository itself is inconsistent"
            ) from exc
        raise
    log.info("bundle hf://%s@%s is in %s", repo_id, revision, folder)
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)


def push_bundle(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    api: Any = None,
) -> str:
    """Uploads a bundle to a Hugging Face Hub model repository in one commit.

    The bundle is verified first (a corrupt bundle is never published). The repository is
    created if needed (``exist_ok``; the visibility of an existing one is not changed), and
    ``model.keras``, ``card.json`` and a ``README.md`` generated by :func:`render_readme` are
    uploaded with ``HfApi.upload_folder`` from a temporary staging folder, so nothing is
    written into the bundle folder.

    Args:
        folder: the bundle folder.
        repo_id: ``"org/name"`` of the target model repository.
        token: Hub token with write access; ``None`` uses the saved login.
        revision: branch to commit to (created from ``main`` if missing); ``None`` is ``main``.
        private: create the repository as private, defaults to False.
        api: an ``HfApi``-like object (for tests or custom endpoints); defaults to
            ``HfApi(endpoint=HF_ENDPOINT, token=token)``.

    Returns:
        The commit hash of the upload; load the bundle with
        ``load_bundle(f"hf://{repo_id}@{commit}")``.

    Raises:
        BundleError: the bundle is invalid, or the Hub refused the upload.
    """
    folder = Path(folder)
    card = verify_bundle(folder, read_card(folder))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(
                repo_id, branch=revision, token=token, repo_type="model", exist_ok=True
            )
        with tempfile.TemporaryDirectory(prefix="segcore-push-") as staging:
            staging = Path(staging)
            for name in BUNDLE_FILES:
                _link_or_copy(folder / name, staging / name)
            if file_sha256(staging / MODEL_FILE) != card.model_sha256:  # pragma: no cover
                raise BundleError(f"{folder / MODEL_FILE}: changed while preparing the upload")
            (staging / README_FILE).write_text(render_readme(card, repo_id), encoding="utf-8")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                repo_type="model",
                revision=revision,
                token=token,
                commit_message=f"Upload segcore bundle {card.name}",
                allow_patterns=[*BUNDLE_FILES, README_FILE],
            )
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(
            f"uploading {folder} to {repo_id} failed ({exc.__class__.__name__}: {exc}); "
            "check the token's write access and the network"
        ) from exc
    commit = getattr(info, "oid", None) or str(info)
    log.info("pushed %s to %s: %s", folder, repo_id, getattr(info, "commit_url", commit))
    return commit
