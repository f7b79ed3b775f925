"""Task-style deployment API: deploy, delete and their status."""

from __future__ import annotations

from fastapi import APIRouter

from cluster.api.deps import ControlDep
from cluster.schemas import DeleteRequest, DeployRequest, Task

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
