"""Fine-tuning tasks: create (idempotent), list, get, restart, cancel, logs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from cluster import errors, uris
from cluster.api.deps import ControlDep, get_storage_root
from cluster.schemas import FineTuneCreate, FineTuneRestart, Page, Task, TaskStatus

router = APIRouter(prefix="/fine-tuning/task", tags=["fine-tuning"])


@router.post("", status_code=202)
async def create(req: FineTuneCreate, control: ControlDep) -> Task:
    """Validate the dataset, then queue the task; the same idempotency_key gives the same task."""
    req = await asyncio.to_thread(validate_dataset, req, get_storage_root())
    task = await control.call("create_finetune_task", req)
    control.operator.kick.remote()
    return task


@router.get("")
async def list_tasks(
    control: ControlDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: TaskStatus | None = None,
) -> Page:
    return await control.call("list_tasks", "fine_tuning", status, offset, limit)


@router.get("/{task_id}")
async def get(task_id: str, control: ControlDep) -> Task:
    return await control.call("get_task", task_id, "fine_tuning")


@router.put("/{task_id}/restart", status_code=202)
async def restart(task_id: str, control: ControlDep, req: FineTuneRestart | None = None) -> Task:
    """Resume from the latest checkpoint under a new run (``from_scratch`` starts over)."""
    from_scratch = req.from_scratch if req is not None else False
    task = await control.call("restart_finetune", task_id, from_scratch)
    control.operator.kick.remote()
    return task


@router.put("/{task_id}/cancel")
async def cancel(task_id: str, control: ControlDep) -> Task:
    """Stop the Ray Job (its training actors and placement groups go with it)."""
    return await control.operator_call("cancel_finetune", task_id)


@router.get("/{task_id}/logs")
async def logs(task_id: str, control: ControlDep) -> dict[str, str]:
    await control.call("get_task", task_id, "fine_tuning")
    return {"task_id": task_id, "logs": await control.operator_call("finetune_logs", task_id)}


def validate_dataset(req: FineTuneCreate, storage_root: str) -> FineTuneCreate:
    """``req`` with ``dataset.uri`` and ``params.resume_from`` in the form the job opens
    (through the one path checker), once every line of the dataset is valid."""
    from train_jobs.data import load_pairs, split_pairs

    root = uris.StorageRoot.of(storage_root)
    if req.dataset.uri is not None:
        uri = uris.check_input(req.dataset.uri, "dataset.uri", root)
        req = req.model_copy(update={"dataset": req.dataset.model_copy(update={"uri": uri})})
    if req.params.resume_from is not None:
        resume = uris.check_input(req.params.resume_from, "params.resume_from", root)
        req = req.model_copy(
            update={"params": req.params.model_copy(update={"resume_from": resume})}
        )
    try:
        pairs = load_pairs(uri=req.dataset.uri, pairs=req.dataset.pairs)
        split_pairs(pairs, req.params.eval_fraction, req.params.seed)
    except ValueError as exc:
        raise errors.InvalidInput(f"dataset: {exc}") from None
    return req
