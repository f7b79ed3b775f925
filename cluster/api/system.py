"""Health, cluster view and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from cluster.api.deps import ControlDep
from cluster.schemas import ClusterPublic

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@public.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/cluster")
async def cluster(control: ControlDep) -> ClusterPublic:
    return await control.cluster()


@public.get("/metrics", response_class=PlainTextResponse)
async def metrics(control: ControlDep) -> str:
    return control.metrics.render()
