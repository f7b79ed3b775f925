"""Resource-style deployment API: list, describe, patch, predict."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cluster.api.deps import ControlDep
from cluster.schemas import DeploymentPublic, DeploymentUpdate, PredictRequest

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.get("")
async def list_deployments(control: ControlDep) -> list[DeploymentPublic]:
    records = await control.call("list_deployments")
    return [await control.describe(r) for r in records]


@router.get("/{name}")
async def describe(name: str, control: ControlDep) -> DeploymentPublic:
    return await control.describe(await control.call("get_deployment", name))


@router.patch("/{name}")
async def patch(name: str, req: DeploymentUpdate, control: ControlDep) -> DeploymentPublic:
    return await control.describe(await control.call("patch_deployment", name, req))


@router.post("/{name}/predict", response_model=None)
async def predict(name: str, req: PredictRequest, control: ControlDep) -> JSONResponse:
    # A plain JSONResponse skips response-model validation on the hot path.
    return JSONResponse(await control.predict(name, req))
