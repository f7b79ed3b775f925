"""Task-style deployment API: deploy, delete and their status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cluster.api.deps import ControlDep
from cluster.schemas import DeleteRequest, DeployRequest, Page, Task

router = APIRouter(tags=["deploy"])


@router.post("/deploy", status_code=202)
async def deploy(req: DeployRequest, control: ControlDep) -> Task:
    return await control.submit("create_deploy_task", req, req.wait_for, req.timeout_s)


@router.get("/deploy/{task_id}")
async def deploy_task(task_id: str, control: ControlDep) -> Task:
    return await control.call("get_task", task_id, "deploy")


@router.get("/deploy-status/{model_id}")
async def deploy_status(model_id: str, control: ControlDep) -> Task:
    return await control.call("latest_task", "deploy", model_id)


@router.post("/delete", status_code=202)
async def delete(req: DeleteRequest, control: ControlDep) -> Task:
    return await control.submit("create_delete_task", req, "none", 0)


@router.get("/delete/{task_id}")
async def delete_task(task_id: str, control: ControlDep) -> Task:
    return await control.call("get_task", task_id, "delete")


@router.get("/delete-status/{model_id}")
async def delete_status(model_id: str, control: ControlDep) -> Task:
    return await control.call("latest_task", "delete", model_id)


@router.get("/tasks")
async def list_tasks(
    control: ControlDep,
    kind: str | None = None,
    status: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    """Every task (deploy, delete, rollout), oldest first, with a total count."""
    return await control.call("list_tasks", kind, status, offset, limit)


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, control: ControlDep) -> Task:
    return await control.call("get_task", task_id)
