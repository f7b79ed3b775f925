"""The ``MODELYARD_*`` names and defaults that the server's ``Settings`` and the client
share: where the server listens and where its admin key file lies.

Standard library only: the client (``cluster.client.environment``) reads these without the
server's dependencies (pydantic-settings, Ray, torch), and ``cluster.settings`` builds its
fields from the same constants, so the two cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

ENV_PREFIX = "MODELYARD_"
URL_ENV = f"{ENV_PREFIX}URL"  # the client's own: the server has no URL setting
# The server's Settings fields host, port, storage_root and api_key, read by pydantic-settings
# under the same prefix.
HOST_ENV = f"{ENV_PREFIX}HOST"
PORT_ENV = f"{ENV_PREFIX}PORT"
STORAGE_ROOT_ENV = f"{ENV_PREFIX}STORAGE_ROOT"
API_KEY_ENV = f"{ENV_PREFIX}API_KEY"

LOCALHOST = "127.0.0.1"
HOST = LOCALHOST  # the server binds to this machine only unless told otherwise
PORT = 8000
STORAGE_ROOT = "~/.modelyard"
KEY_FILE = "admin.key"
WILDCARD_HOSTS = ("0.0.0.0", "::")
DEFAULT_URL = f"http://{HOST}:{PORT}"


def local_host(host: str) -> str:
    """The host a client on the server's node connects to: localhost for a wildcard bind."""
    return LOCALHOST if host in WILDCARD_HOSTS else host


def key_path(storage_root: str | Path) -> Path:
    """The admin key file under a storage root (``~`` expanded, made absolute)."""
    return Path(storage_root).expanduser().resolve() / KEY_FILE
