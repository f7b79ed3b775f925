"""FastAPI dependency aliases over the ingress replica's objects (``cluster.ingress.context``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cluster.api.control import ControlPlane
from cluster.ingress import context

# Plain reads of the replica's settings, for the routes that check paths against them.
get_settings = context.get_settings
get_storage_root = context.get_storage_root


async def get_control() -> ControlPlane:
    control = context.get_control()
    control.router.start()  # needs the running event loop, which __init__ may not have
    return control


ControlDep = Annotated[ControlPlane, Depends(get_control)]
