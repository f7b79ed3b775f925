"""FastAPI dependency aliases shared by the route modules.

Serve wraps the FastAPI app per replica, so per-replica objects live here, set once by the
``Ingress`` constructor, rather than on ``app.state``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cluster.control import ControlPlane

_replica: dict[str, object] = {}


def configure(control: ControlPlane, key_digest: str, storage_root: str = "") -> None:
    _replica["control"] = control
    _replica["key_digest"] = key_digest
    _replica["storage_root"] = storage_root


def get_storage_root() -> str:
    return _replica["storage_root"]  # type: ignore[return-value]


async def get_control() -> ControlPlane:
    control: ControlPlane = _replica["control"]  # type: ignore[assignment]
    control.router.start()  # needs the running event loop, which __init__ may not have
    return control


def get_key_digest() -> str:
    return _replica["key_digest"]  # type: ignore[return-value]


ControlDep = Annotated[ControlPlane, Depends(get_control)]
