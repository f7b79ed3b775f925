"""The ingress replica's own objects: its control plane, the admin key's digest, its settings.

Serve wraps the FastAPI app per replica, so these live here, set once by the ``Ingress``
constructor, rather than on ``app.state``. Every component of the ingress reads its values
from here, none from the replica's environment. The module imports nothing of the control
plane, so the predict path, auth and the routes' dependencies (``cluster.api.deps``) can
all read it without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.api.control import ControlPlane
    from cluster.settings import Settings

_replica: dict[str, object] = {}


def configure(control: ControlPlane, key_digest: str, settings: Settings | None = None) -> None:
    _replica["control"] = control
    _replica["key_digest"] = key_digest
    _replica["settings"] = settings


def get_control() -> ControlPlane:
    return _replica["control"]  # type: ignore[return-value]


def get_key_digest() -> str:
    return _replica["key_digest"]  # type: ignore[return-value]


def get_settings() -> Settings | None:
    """The ingress replica's settings; None elsewhere (tests that configure none): then no
    local path is accepted."""
    return _replica.get("settings")  # type: ignore[return-value]


def get_storage_root() -> str:
    settings = get_settings()
    return str(settings.root) if settings is not None else ""
