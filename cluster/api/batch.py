"""Batch predictions: a JSONL file through a deployment's model version, as a tracked task.

``POST /v1/deployments/{name}/batch-predictions`` answers 202 with a ``batch_prediction``
task; ``GET /v1/tasks/{id}`` (or ``/v1/batch-predictions/{id}``) shows its progress.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from cluster.api.deps import ControlDep, get_storage_root
from cluster.jobs.batch_io import check_request
from cluster.schemas import BatchPredictCreate, Page, Task

router = APIRouter(tags=["batch predictions"])
KIND = "batch_prediction"


@router.post("/deployments/{name}/batch-predictions", status_code=202)
async def create(name: str, req: BatchPredictCreate, control: ControlDep) -> Task:
    """Check both URIs, then queue a Ray Data job over the model version the deployment
    serves now; output rows keep the input's order and ids."""
    req = await asyncio.to_thread(check_request, req, get_storage_root())
    task = await control.call("create_batch_task", name, req)
    control.operator.kick.remote()
    return task


@router.get("/deployments/{name}/batch-predictions")
async def list_for_deployment(
    name: str,
    control: ControlDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    return await control.call("list_batch_tasks", name, offset, limit)


@router.get("/batch-predictions/{task_id}")
async def get(task_id: str, control: ControlDep) -> Task:
    return await control.call("get_task", task_id, KIND)


@router.put("/batch-predictions/{task_id}/cancel")
async def cancel(task_id: str, control: ControlDep) -> Task:
    """Stop the job; it leaves no output file."""
    return await control.operator_call("cancel_batch", task_id)
