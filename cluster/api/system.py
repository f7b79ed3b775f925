"""Health, cluster view, metrics, and the registry rows set aside (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from cluster.api.deps import ControlDep
from cluster.schemas import ClusterPublic
from cluster.schemas.nodes import QuarantinedRow

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@public.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/cluster")
async def cluster(control: ControlDep) -> ClusterPublic:
    return await control.cluster()


@router.get("/admin/quarantine")
async def quarantine(control: ControlDep) -> list[QuarantinedRow]:
    """Registry rows that could not be read at start, kept as they were stored."""
    return await control.call("list_quarantine")


@public.get("/metrics", response_class=PlainTextResponse)
async def metrics(control: ControlDep) -> str:
    return control.metrics.render()
