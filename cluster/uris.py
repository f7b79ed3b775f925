"""One checker for every request field that names a path or URI.

Used by predict ``url``, fine-tuning ``dataset.uri`` and ``params.resume_from``, batch
``input_uri``/``output_uri`` and model ``artifact_uri``. Accepted forms:

- a path relative to the storage root (outputs: relative to ``<root>/outputs``),
- an absolute path or ``file://`` URI inside the storage root,
- ``package://<python package>`` where a field allows it (model artifacts),
- a URI of a filesystem ``pyarrow.fs`` opens: ``s3://``, ``gs://`` / ``gcs://``,
  ``hdfs://`` / ``viewfs://``, ``abfs://`` / ``abfss://``.

A local path is percent-decoded exactly once, then checked: no NUL, no escape left after
the decoding (double encoding), no leading ``~``, no ``..`` segment, symlinks resolved, the
result inside the storage root. What the checker returns (an absolute plain path, or the
remote URI) is what the reader must open, so no reader decodes again differently.

Files modelyard owns (the registry database and its ``-wal``/``-shm``/``-journal``/``.lock``
files, the key file) are never read or written for a request; outputs go only under
``<root>/outputs``, never into the fine-tuning and checkpoint folders, and no model artifact
may be registered under ``<root>/outputs``, so no output can land on an artifact.
Every refusal is ``InvalidInput`` (422) naming the field.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cluster import errors
from cluster.schemas import PredictRequest
from cluster.settings import KEY_FILE, Settings

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
OUTPUTS_DIR = "outputs"
# Where fine-tuned versions, their run configs and Ray Train checkpoints are written.
OWNED_DIRS = ("finetune", "checkpoints")
DB_COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")
DEFAULT_DB = "registry.db"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_PACKAGE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
FORMS = (
    "a path relative to the storage root, an absolute path or file:// URI inside it, or a URI "
    "of " + ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
)


@dataclass(frozen=True)
class StorageRoot:
    """The storage root and the files in it that modelyard owns."""

    path: Path
    db_path: Path

    @classmethod
    def of(cls, root: str | Path, db_path: str | Path | None = None) -> StorageRoot:
        if not str(root):
            raise errors.InvalidInput("this server has no storage root; local paths are off")
        path = Path(root).resolve()
        db = Path(db_path).resolve() if db_path else path / DEFAULT_DB
        return cls(path, db)

    @property
    def outputs(self) -> Path:
        return self.path / OUTPUTS_DIR

    def owned_files(self) -> dict[Path, str]:
        """Path -> what it is, for the files no request may read or write."""
        owned = {self.path / KEY_FILE: "the admin key file"}
        for db in {self.db_path, self.path / DEFAULT_DB}:
            for suffix in DB_COMPANIONS:
                owned[Path(f"{db}{suffix}")] = "the registry database"
        return owned

    def owned_dirs(self) -> list[Path]:
        return [self.path / d for d in OWNED_DIRS]


def scheme_of(uri: str) -> str:
    """The URI scheme in lower case, '' for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_local(uri: str) -> bool:
    return scheme_of(uri) in ("", "file")


def decode_local(uri: str, field: str) -> str:
    """The local path a plain path or ``file://`` URI names, percent-decoded once."""
    _refuse_nul(uri, field)
    raw = uri
    if scheme_of(uri) == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise errors.InvalidInput(
                f"{field} '{uri}': a file:// URI names a path on this node "
                "(file:///abs/path), not a host"
            )
        if parts.query or parts.fragment:
            raise errors.InvalidInput(f"{field} '{uri}': encode '?' and '#' in a path as %3F, %23")
        raw = parts.path
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise errors.InvalidInput(f"{field} '{uri}' is not UTF-8 once percent-decoded") from None
    _refuse_nul(path, field)
    if _ESCAPE.search(path):
        raise errors.InvalidInput(
            f"{field} '{uri}' is percent-encoded twice; encode a path once (or not at all)"
        )
    if path.startswith("~"):
        raise errors.InvalidInput(
            f"{field} '{uri}': '~' is not expanded; give a path relative to the storage root"
        )
    if ".." in Path(path).parts:
        raise errors.InvalidInput(f"{field} '{uri}' has a '..' segment; give the path without it")
    return path


def reader_path(uri: str) -> str:
    """The path a reader opens for a local ``uri`` the checker returned (or a trusted one):
    a plain path as it is, a ``file://`` URI decoded once, as the checker decodes it."""
    return unquote(urlsplit(uri).path) if scheme_of(uri) == "file" else uri


def local_path(uri: str, field: str, root: StorageRoot, base: Path | None = None) -> Path:
    """The absolute, symlink-free path inside the storage root that ``uri`` names; a
    relative path is taken from ``base`` (default: the root)."""
    path = Path(decode_local(uri, field))
    try:
        path = ((base or root.path) / path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise errors.InvalidInput(f"{field} '{uri}' cannot be resolved: {exc}") from None
    if not path.is_relative_to(root.path) or path == root.path:
        raise errors.InvalidInput(
            f"{field} '{uri}' is outside the storage root {root.path}; put the file under it, "
            "give a path relative to it, or use a remote URI (s3://...)"
        )
    return path


def check_remote(uri: str, field: str) -> str:
    _refuse_nul(uri, field)
    _refuse_nul(unquote(uri), field)
    scheme = scheme_of(uri)
    if scheme not in REMOTE_SCHEMES:
        raise errors.InvalidInput(
            f"{field} '{uri}' cannot be opened: scheme '{scheme}' is not accepted; give {FORMS}"
        )
    return uri


def check_input(uri: str, field: str, root: StorageRoot, *, package: bool = False) -> str:
    """What a reader opens for ``uri``: an absolute local path, or the URI itself."""
    scheme = scheme_of(uri)
    if scheme == "package" and package:
        return _check_package(uri, field)
    if not is_local(uri):
        return check_remote(uri, field)
    path = local_path(uri, field, root)
    _refuse_owned_file(path, uri, field, root)
    return str(path)


def check_output(uri: str, field: str, root: StorageRoot) -> str:
    """What a writer writes for ``uri``: a remote URI, or an absolute path under
    ``<root>/outputs`` (where a relative path is taken from)."""
    if not is_local(uri):
        return check_remote(uri, field)
    path = local_path(uri, field, root, base=root.outputs)
    _refuse_owned_file(path, uri, field, root)
    for owned in root.owned_dirs():
        if path.is_relative_to(owned):
            raise errors.InvalidInput(
                f"{field} '{uri}' is inside {owned}, where modelyard keeps fine-tuned models "
                f"and checkpoints; write outputs under {root.outputs}"
            )
    if not path.is_relative_to(root.outputs) or path == root.outputs:
        raise errors.InvalidInput(
            f"{field} '{uri}' is outside {root.outputs}, the storage root's folder for outputs; "
            "give a path relative to it"
        )
    return str(path)


def check_artifact(uri: str, field: str, root: StorageRoot) -> str:
    """A model version's weights: ``package://``, a remote URI, or a local path inside the
    storage root but not under its outputs folder (outputs may be overwritten)."""
    checked = check_input(uri, field, root, package=True)
    if scheme_of(checked) == "package":
        # A version that names a missing package or folder could only fail at deploy time,
        # in every replica it starts; the ingress node installs what the replicas install.
        if importlib.util.find_spec(checked[len("package://") :].split(".")[0]) is None:
            raise errors.InvalidInput(f"{field} '{uri}': no installed package of that name")
        return checked
    if not is_local(checked):
        return checked
    path = Path(checked)
    if path.is_relative_to(root.outputs):
        raise errors.InvalidInput(
            f"{field} '{uri}' is under {root.outputs}, where request outputs are written and "
            "may be replaced; move the artifact elsewhere under the storage root"
        )
    if not path.exists():
        raise errors.InvalidInput(
            f"{field} '{uri}' does not exist; give the file or folder that holds the weights"
        )
    return checked


def _check_package(uri: str, field: str) -> str:
    name = uri[len("package://") :]
    if not _PACKAGE.match(name):
        raise errors.InvalidInput(
            f"{field} '{uri}': package:// takes an importable package name (package://pkg.sub)"
        )
    return uri


def _refuse_owned_file(path: Path, uri: str, field: str, root: StorageRoot) -> None:
    what = root.owned_files().get(path)
    if what is not None:
        raise errors.InvalidInput(
            f"{field} '{uri}' is {what}, which modelyard owns; name another file"
        )


def _refuse_nul(text: str, field: str) -> None:
    if "\x00" in text:
        raise errors.InvalidInput(f"{field} contains a NUL byte")


@dataclass(frozen=True)
class UrlPolicy:
    """What a predict ``url`` may fetch: http(s) only when enabled, never more than
    ``max_bytes``, never longer than ``timeout_s``."""

    http: bool = False
    max_bytes: int = 1 << 20
    timeout_s: float = 10.0


async def fetch_predict_args(url: str, settings: Settings | None) -> dict[str, Any]:
    """``fetch_args`` with the storage root and url policy of ``settings`` (the ingress
    replica's); without settings, no file:// and the default policy."""
    if settings is None:
        return await fetch_args(url, None, UrlPolicy())
    root = StorageRoot.of(settings.root, settings.db_path)
    policy = UrlPolicy(
        settings.predict_url_http, settings.predict_url_max_bytes, settings.predict_url_timeout_s
    )
    return await fetch_args(url, root, policy)


async def fetch_args(url: str, root: StorageRoot | None, policy: UrlPolicy) -> dict[str, Any]:
    """The JSON object of args at a predict ``url``: a ``file://`` URI inside the storage
    root, or http(s) where the policy allows it; ``InvalidInput`` naming ``url`` otherwise."""
    _refuse_nul(url, "url")
    scheme = scheme_of(url)
    if scheme == "file":
        if root is None:
            raise errors.InvalidInput("url: file:// is off here (no storage root); send args")
        path = Path(check_input(url, "url", root))
        body = await asyncio.to_thread(_read_capped, path, policy.max_bytes)
    elif scheme in ("http", "https"):
        if not policy.http:
            raise errors.InvalidInput(
                "url: http(s) documents are off on this server (MODELYARD_PREDICT_URL_HTTP); "
                "send args inline or a file:// URL under the storage root"
            )
        body = await _download_capped(url, policy)
    else:
        raise errors.InvalidInput("url must be a file:// URI under the storage root or http(s)")
    return _parse_args(body)


def _read_capped(path: Path, max_bytes: int) -> bytes:
    if not path.is_file():
        raise errors.InvalidInput(f"url names no readable file ({path.name})")
    with path.open("rb") as f:
        body = f.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return body


async def _download_capped(url: str, policy: UrlPolicy) -> bytes:
    import httpx

    async def download() -> bytes:
        body = bytearray()
        async with (
            httpx.AsyncClient(timeout=policy.timeout_s) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code >= 300:
                raise errors.InvalidInput(f"url answered HTTP {resp.status_code}")
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise _too_large(policy.max_bytes)
        return bytes(body)

    try:
        # httpx's timeout is per read; this bounds the whole download.
        return await asyncio.wait_for(download(), policy.timeout_s)
    except asyncio.TimeoutError:
        raise errors.InvalidInput(
            f"url did not answer in full within {policy.timeout_s:g}s "
            "(MODELYARD_PREDICT_URL_TIMEOUT_S)"
        ) from None
    except httpx.HTTPError as exc:
        raise errors.InvalidInput(f"url could not be fetched: {type(exc).__name__}") from None


def _too_large(max_bytes: int) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"url: the document is over {max_bytes} bytes (MODELYARD_PREDICT_URL_MAX_BYTES); "
        "send the args inline"
    )


def _parse_args(body: bytes) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        args = json.loads(body.decode("utf-8"), parse_constant=refuse)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise errors.InvalidInput(f"url: the document is not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise errors.InvalidInput("url: the document must be a JSON object of args")
    return args


async def with_url_args(req: PredictRequest, settings: Settings | None) -> PredictRequest:
    """``req`` with the args its ``url`` names in place of the url: fetched and checked at
    the edge, so a refusal is a 422 there and a queued request never names a file."""
    if req.url is None:
        return req
    args = await fetch_predict_args(req.url, settings)
    return req.model_copy(update={"args": args, "url": None})
