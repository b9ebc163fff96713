"""Hugging Face Hub ids → local files, through ``huggingface_hub`` and its cache.

``resolve("microsoft/bitnet-b1.58-2B-4T-gguf")`` returns the path of the repo's I2_S GGUF;
``resolve("microsoft/bitnet-b1.58-2B-4T")`` returns the snapshot folder of a safetensors repo
(config.json, *.safetensors, the index, tokenizer files). Files land in the standard HF cache
(``HF_HUB_CACHE`` / ``cache_dir``), so a second call needs no network.

Offline mode (``HF_HUB_OFFLINE=1``, read at call time) only looks in the cache. A string that
names an existing local path never touches the network. Without a connection (one quick probe of
the Hub's endpoint per process, `hub_reachable`, instead of huggingface_hub's five retries) the
cache is used as in offline mode, and a miss is one error saying both: no such local path, and
no such repo in the cache.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from pathlib import Path
from typing import Iterable

from bitnet_lab.errors import HubError

# What a safetensors checkpoint needs besides its weights (docs/formats.md#7-hugging-face-safetensors-layouts,
# docs/formats.md#8-tokenizer-metadata).
SNAPSHOT_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)

# owner/name, each part HF-legal: letters, digits, '-', '_', '.', not starting with '.'/'-'.
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
# Suffixes that mark a string as a (missing) file path rather than a repo id.
_FILE_SUFFIXES = (".gguf", ".safetensors", ".json", ".bin", ".model")


def is_repo_id(s: str | os.PathLike) -> bool:
    """True when ``s`` looks like ``owner/name`` and is not an existing local path.

    An existing file or folder always wins (no network); strings with a file suffix, ``..``,
    a leading ``/``, ``./`` or ``~`` are paths."""
    if isinstance(s, Path):
        return False
    s = os.fspath(s)
    if Path(s).expanduser().exists():
        return False
    if s.startswith(("/", "./", "~", "../")) or ".." in s or "\\" in s:
        return False
    if s.lower().endswith(_FILE_SUFFIXES):
        return False
    return bool(_REPO_RE.match(s))


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as set now. huggingface_hub reads it once, at its import, so its own
    constant can be stale (e.g. set while it was first imported, unset since): the environment
    is the only source of that constant, so we read the environment itself."""
    env = os.environ.get("HF_HUB_OFFLINE", "")
    return env.strip().upper() in ("1", "ON", "YES", "TRUE")


PROBE_TIMEOUT_S = 3.0


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the Hub's endpoint answers at all: one HEAD request with a short timeout (through
    huggingface_hub's own HTTP session, so proxies and ``HF_ENDPOINT`` apply), once per process.
    False for any failure (DNS, refused, timeout): the caller then works from the cache alone."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - any failure means "no Hub from here"
        return False


def choose_gguf(files: Iterable[str], filename: str | None = None) -> str | None:
    """The GGUF to use among ``files``: ``filename`` if given, else the one I2_S file
    (name containing ``i2_s``/``i2s``), else the only GGUF. None when there is no GGUF; HubError
    when the choice is ambiguous."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if filename is not None:
        return filename if filename in files else None
    if not ggufs:
        return None
    i2s = [f for f in ggufs if re.search(r"i2[_-]?s", Path(f).name.lower())]
    if len(i2s) == 1:
        return i2s[0]
    if len(i2s) == 0 and len(ggufs) == 1:
        return ggufs[0]
    cands = i2s or ggufs
    raise HubError(
        f"the repo has {len(cands)} candidate GGUF files ({', '.join(cands)}); "
        "pass filename= (CLI: --hf-file) to pick one"
    )


def _guidance(repo_id: str) -> str:
    return (
        f"To use {repo_id!r}: connect to the network and unset HF_HUB_OFFLINE (or set it to 0); "
        f"or run `bitnet-lab download {repo_id}` on a machine with network and copy the HF cache "
        "(~/.cache/huggingface/hub) here; or pass a local path to the .gguf file or to the "
        "checkpoint folder instead of a repo id."
    )


def _no_hub_why() -> str:
    return "offline mode: HF_HUB_OFFLINE=1" if offline_mode() else "no connection to the Hub"


def _hub_call(fn, _repo: str, _what: str, **kw):
    """Call a huggingface_hub function, turning its exceptions into HubError with guidance."""
    from huggingface_hub import errors as hf_errors

    try:
        return fn(**kw)
    except hf_errors.LocalEntryNotFoundError as e:
        raise HubError(f"{_repo!r}: no such local file or folder, and not in the Hugging Face cache as a Hub "
                       f"repo ({_no_hub_why()}). {_guidance(_repo)}") from e
    except hf_errors.GatedRepoError as e:
        raise HubError(f"{_repo!r} is gated: accept its licence on huggingface.co and log in "
                       f"(`hf auth login`) first ({e})") from e
    except hf_errors.RepositoryNotFoundError as e:
        raise HubError(f"{_repo!r}: no such local file or folder, and no Hub repo of that name (or it is "
                       f"private): check the spelling ({' '.join(str(e).split()[:12])} ...)") from e
    except hf_errors.RevisionNotFoundError as e:
        raise HubError(f"{_repo!r} has no revision {kw.get('revision')!r} ({e})") from e
    except hf_errors.EntryNotFoundError as e:
        raise HubError(f"{_repo!r} has no file {kw.get('filename')!r} ({e})") from e
    except hf_errors.OfflineModeIsEnabled as e:
        raise HubError(f"cannot reach the Hub for {_repo!r}: offline mode is on. {_guidance(_repo)}") from e
    except hf_errors.HfHubHTTPError as e:
        raise HubError(f"Hub request for {_repo!r} failed: {e}. {_guidance(_repo)}") from e
    except _network_errors() as e:  # DNS failure, refused connection, timeout, disk
        raise HubError(f"cannot fetch {_what} of {_repo!r}: {e}. {_guidance(_repo)}") from e


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures: OSError/ConnectionError, plus the HTTP client's own error base class
    (huggingface_hub re-exports it as ``errors.HTTPError``; it is not an OSError)."""
    from huggingface_hub import errors as hf_errors

    extra = getattr(hf_errors, "HTTPError", None)
    return (OSError, ConnectionError) + ((extra,) if isinstance(extra, type) else ())


def _list_files(repo_id: str, revision: str | None, cache_dir, offline: bool) -> tuple[list[str], Path | None]:
    """The repo's file list, and (offline) the cached snapshot folder it came from."""
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    if offline:
        snap = Path(_hub_call(hf.snapshot_download, repo_id, "the cached snapshot", repo_id=repo_id,
                              revision=revision, cache_dir=cache_dir, local_files_only=True))
        files = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
        return files, snap
    api = hf.HfApi()
    try:
        files = _hub_call(api.list_repo_files, repo_id, "the file list", repo_id=repo_id, revision=revision)
    except HubError as e:
        if not isinstance(e.__cause__, _network_errors()) or isinstance(e.__cause__, hf_errors.HfHubHTTPError):
            raise
        # The connection broke after the probe: huggingface_hub itself serves cached files then;
        # so do we (a miss says there is no connection).
        return _list_files(repo_id, revision, cache_dir, offline=True)
    return list(files), None


def resolve(
    repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    filename: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local path for ``repo_id``: a GGUF file, or a safetensors snapshot folder.

    - an existing local path is returned as is (never the network);
    - a repo with ``*.gguf`` files → the I2_S one (or ``filename``), downloaded with
      ``hf_hub_download``;
    - else the safetensors snapshot (SNAPSHOT_PATTERNS) with ``snapshot_download``;
    - offline (``HF_HUB_OFFLINE=1``) or without network, only the cache is used; a miss raises
      HubError saying what to do.
    """
    import huggingface_hub as hf

    p = Path(os.fspath(repo_id)).expanduser()
    if p.exists():
        return p
    repo_id = os.fspath(repo_id)
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is neither an existing local path nor a Hub repo id (owner/name)")
    # no network: the cache alone, as in offline mode, without huggingface_hub's retries
    offline = offline_mode() or not hub_reachable()
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)

    files, snap = _list_files(repo_id, revision, cache_dir, offline)
    cached = snap is not None  # the listing came from the local cache (offline or no network)
    wants_gguf = filename is None or filename.lower().endswith(".gguf")
    gguf_name = choose_gguf(files, filename) if wants_gguf else None
    if filename is not None and wants_gguf and gguf_name is None:
        raise HubError(f"{repo_id!r} has no file {filename!r}" + (" in the local cache" if cached else "")
                       + f"; it has: {', '.join(sorted(files)[:20])}")
    if gguf_name is not None:
        if snap is not None:
            return snap / gguf_name
        return Path(_hub_call(hf.hf_hub_download, repo_id, gguf_name, repo_id=repo_id, filename=gguf_name,
                              revision=revision, cache_dir=cache_dir))

    patterns = list(SNAPSHOT_PATTERNS) + ([filename] if filename else [])
    wanted = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    if not any(f.endswith(".safetensors") for f in wanted) or "config.json" not in wanted:
        where = "the cached snapshot of " if cached else ""
        raise HubError(
            f"{where}{repo_id!r} has neither a GGUF file nor a safetensors checkpoint with config.json "
            f"(files: {', '.join(sorted(files)[:20])}{' …' if len(files) > 20 else ''})"
            + (f" ({_no_hub_why()}). {_guidance(repo_id)}" if cached else "")
        )
    if snap is not None:
        return snap
    return Path(_hub_call(hf.snapshot_download, repo_id, "the safetensors snapshot", repo_id=repo_id,
                          revision=revision, cache_dir=cache_dir, allow_patterns=patterns))


def download(repo_id: str, **kw) -> Path:
    """Fetch ``repo_id`` into the HF cache now (what ``bitnet-lab download`` runs); see resolve."""
    if offline_mode():
        raise HubError(f"cannot download {repo_id!r}: HF_HUB_OFFLINE is set. {_guidance(repo_id)}")
    if not hub_reachable():
        raise HubError(f"cannot download {repo_id!r}: no connection to the Hub ({_endpoint()}). "
                       f"{_guidance(repo_id)}")
    return resolve(repo_id, **kw)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
