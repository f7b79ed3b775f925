"""Model registry API.

``artifact_uri`` goes through the one path checker before the registry sees it:
``package://<python package>``, a remote URI ``pyarrow.fs`` opens, or a local path inside
the storage root (relative paths are taken from it), not under its outputs folder. The
registry stores the checked form (an absolute path for a local artifact).
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter

from cluster import uris
from cluster.api.deps import ControlDep, get_storage_root
from cluster.schemas import ModelCreate, ModelPublic, ModelVersion, VersionCreate

Req = TypeVar("Req", bound=VersionCreate)

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=201)
async def register(req: ModelCreate, control: ControlDep) -> ModelVersion:
    return await control.call("register_model", checked_artifact(req, get_storage_root()))


@router.get("")
async def list_models(control: ControlDep) -> list[ModelPublic]:
    return await control.call("list_models")


@router.get("/{model_id}")
async def get_model(model_id: str, control: ControlDep) -> ModelPublic:
    return await control.call("get_model", model_id)


@router.post("/{model_id}/versions", status_code=201)
async def add_version(model_id: str, req: VersionCreate, control: ControlDep) -> ModelVersion:
    return await control.call("add_version", model_id, checked_artifact(req, get_storage_root()))


@router.get("/{model_id}/versions")
async def list_versions(model_id: str, control: ControlDep) -> list[ModelVersion]:
    return await control.call("list_versions", model_id)


def checked_artifact(req: Req, storage_root: str) -> Req:
    """``req`` with its ``artifact_uri`` checked and normalized ('' stays: custom models)."""
    if not req.artifact_uri:
        return req
    root = uris.StorageRoot.of(storage_root)
    uri = uris.check_artifact(req.artifact_uri, "artifact_uri", root)
    return req.model_copy(update={"artifact_uri": uri})
