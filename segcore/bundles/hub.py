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
* ``HF_HUB_ETAG_TIMEOUT``: seconds to wait for the Hub's first answer, defaults to 10.

Without a network, huggingface_hub retries each request with a growing wait (about 24 s and a
warning per try) before it falls back to the cache. So :func:`download_bundle` first asks the
Hub once, with no retry (:func:`hub_unreachable`); when no answer comes, it takes the files from
the cache alone, as in offline mode, or fails at once with one message that says why.
huggingface_hub's own warnings are kept out of the output while a bundle downloads: the error
says what went wrong, once.

Example:
    >>> folder = download_bundle("my-org/nuclei-deeplabv3plus", revision="0123abcd...")
    >>> bundle = segcore.bundles.loading.load_bundle(folder)
    >>> commit = push_bundle("weights/monuseg-v1", "my-org/nuclei-deeplabv3plus")
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
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


DEFAULT_PROBE_TIMEOUT_S = 10.0
"""Seconds :func:`hub_unreachable` waits for an answer (``HF_HUB_ETAG_TIMEOUT`` overrides it:
huggingface_hub's own wait for a file's metadata)."""


def probe_timeout() -> float:
    """``HF_HUB_ETAG_TIMEOUT`` from the environment now (seconds), else
    :data:`DEFAULT_PROBE_TIMEOUT_S`."""
    try:
        value = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_PROBE_TIMEOUT_S)
    except ValueError:
        return DEFAULT_PROBE_TIMEOUT_S
    return value if value > 0 else DEFAULT_PROBE_TIMEOUT_S


def hub_unreachable(
    repo_id: str, filename: str, revision: str, endpoint: str | None, timeout: float | None = None
) -> str | None:
    """Asks the Hub once for ``filename``'s headers, without retries; returns why no answer
    came (``"ConnectError: [Errno 111] Connection refused"``), or None when one did (any HTTP
    status: a missing repository or a login it needs is for the download itself to report).

    Goes through huggingface_hub's own HTTP client, so its proxies and client settings apply.

    Args:
        repo_id: ``"org/name"``.
        filename: a file of the repository.
        revision: the revision asked for.
        endpoint: the Hub URL, None for huggingface_hub's default.
        timeout: seconds to wait, defaults to :func:`probe_timeout`.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        get_session().head(url, timeout=timeout or probe_timeout(), follow_redirects=False)
    except Exception as exc:  # any failure to get an answer: unreachable
        return f"{exc.__class__.__name__}: {exc}"
    return None


_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_level = logging.NOTSET


@contextlib.contextmanager
def quiet_hub_logging() -> Iterator[None]:
    """Within the block, huggingface_hub logs errors only: no warning per retry (the caller
    reports the outcome once). Nested and concurrent blocks restore the level set before the
    first of them."""
    global _quiet_users, _quiet_level
    hub_logger = logging.getLogger("huggingface_hub")
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_level = hub_logger.level
            hub_logger.setLevel(max(logging.ERROR, _quiet_level))
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0:
                hub_logger.setLevel(_quiet_level)


def _unavailable(
    repo_id: str, revision: str, filename: str, cache: Path, why: str, offline: bool = True
) -> BundleError:
    retry = "connect to the network and retry" + (" (unset HF_HUB_OFFLINE)" if offline else "")
    return BundleError(
        f"hf://{repo_id}@{revision}: {filename} is not in the Hugging Face cache ({cache}) and "
        f"{why}. Either {retry}, or download it "
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
    unreachable: str | None = None,
) -> Path:
    """One file of the repository, from the cache or the Hub; with ``unreachable`` (why the
    Hub gave no answer) from the cache only, as when ``offline``."""
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
        with quiet_hub_logging():
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    repo_type="model",
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    token=token,
                    local_files_only=offline or unreachable is not None,
                    etag_timeout=probe_timeout(),
                    library_name="segcore",
                    library_version=__version__,
                )
            )
    except LocalEntryNotFoundError as exc:
        if offline:
            why = "offline mode is on (HF_HUB_OFFLINE)"
        else:
            why = (
                f"the Hub ({endpoint or 'huggingface.co'}) could not be reached "
                f"({unreachable or exc})"
            )
        raise _unavailable(repo_id, revision, filename, cache_dir, why, offline) from exc
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
            not cached (after one try of at most ``HF_HUB_ETAG_TIMEOUT`` seconds, default 10,
            not huggingface_hub's retries), repository/revision/file not found, an invalid
            card, or a SHA-256 mismatch (the bad file is then removed from the cache, so a
            retry downloads it again).
    """
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    endpoint = endpoint or hub_endpoint()
    offline = hub_offline()
    # One question without retries first: with no network, the cache alone, at once.
    unreachable = None if offline else hub_unreachable(repo_id, CARD_FILE, revision, endpoint)
    if unreachable is not None:
        log.debug("the Hub (%s) gave no answer (%s): cache only", endpoint, unreachable)
    options = {
        "cache_dir": cache,
        "endpoint": endpoint,
        "token": token,
        "offline": offline,
        "unreachable": unreachable,
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
