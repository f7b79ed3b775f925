"""Model registry API."""

from __future__ import annotations

from fastapi import APIRouter

from cluster.api.deps import ControlDep
from cluster.schemas import ModelCreate, ModelPublic, ModelVersion, VersionCreate

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=201)
async def register(req: ModelCreate, control: ControlDep) -> ModelVersion:
    return await control.call("register_model", req)


@router.get("")
async def list_models(control: ControlDep) -> list[ModelPublic]:
    return await control.call("list_models")


@router.get("/{model_id}")
async def get_model(model_id: str, control: ControlDep) -> ModelPublic:
    return await control.call("get_model", model_id)


@router.post("/{model_id}/versions", status_code=201)
async def add_version(model_id: str, req: VersionCreate, control: ControlDep) -> ModelVersion:
    return await control.call("add_version", model_id, req)


@router.get("/{model_id}/versions")
async def list_versions(model_id: str, control: ControlDep) -> list[ModelVersion]:
    return await control.call("list_versions", model_id)
