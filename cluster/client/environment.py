"""Where the client connects and with which key when the caller does not say: read from the
same ``MODELYARD_*`` variables, with the same defaults, as the server's settings
(``cluster.defaults``), without importing the server."""

from __future__ import annotations

import os

from cluster import defaults


def _env(name: str) -> str | None:
    # An empty variable counts as unset.
    return os.environ.get(name) or None


def default_url() -> str:
    """``MODELYARD_URL``, else ``http://MODELYARD_HOST:MODELYARD_PORT`` (defaults
    127.0.0.1:8000; a wildcard bind address such as 0.0.0.0 is read as localhost)."""
    if url := _env(defaults.URL_ENV):
        return url.rstrip("/")
    port = _env(defaults.PORT_ENV) or str(defaults.PORT)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{defaults.PORT_ENV} must be a port from 1 to 65535, got {port!r}")
    host = defaults.local_host(_env(defaults.HOST_ENV) or defaults.HOST)
    return f"http://{host}:{int(port)}"


def default_api_key() -> str | None:
    """``MODELYARD_API_KEY``, else the key file under ``MODELYARD_STORAGE_ROOT`` (default
    ``~/.modelyard``) when there is one, else None. A key is never made here: the server
    makes it at its first start."""
    if key := _env(defaults.API_KEY_ENV):
        return key
    path = defaults.key_path(_env(defaults.STORAGE_ROOT_ENV) or defaults.STORAGE_ROOT)
    return path.read_text().strip() if path.is_file() else None
