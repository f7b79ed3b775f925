"""FastAPI dependency aliases shared by the route modules.

Serve wraps the FastAPI app per replica, so per-replica objects live here, set once by the
``Ingress`` constructor, rather than on ``app.state``: the control plane, the admin key's
digest and the replica's ``Settings`` (every component of the ingress reads its values from
these, none from the replica's environment).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cluster.api.control import ControlPlane
from cluster.settings import Settings

_replica: dict[str, object] = {}


def configure(control: ControlPlane, key_digest: str, settings: Settings | None = None) -> None:
    _replica["control"] = control
    _replica["key_digest"] = key_digest
    _replica["settings"] = settings


def get_settings() -> Settings | None:
    """The ingress replica's settings; None elsewhere (the async worker's control plane,
    tests that configure none): then no local path is accepted."""
    return _replica.get("settings")  # type: ignore[return-value]


def get_storage_root() -> str:
    settings = get_settings()
    return str(settings.root) if settings is not None else ""


async def get_control() -> ControlPlane:
    control: ControlPlane = _replica["control"]  # type: ignore[assignment]
    control.router.start()  # needs the running event loop, which __init__ may not have
    return control


def get_key_digest() -> str:
    return _replica["key_digest"]  # type: ignore[return-value]


ControlDep = Annotated[ControlPlane, Depends(get_control)]
