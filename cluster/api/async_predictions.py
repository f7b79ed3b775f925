"""Results of queued predictions."""

from __future__ import annotations

from fastapi import APIRouter

from cluster.api.deps import ControlDep
from cluster.schemas import AsyncTaskPublic

router = APIRouter(prefix="/async-tasks", tags=["predictions"])


@router.get("/{task_id}")
async def get_async_task(task_id: str, control: ControlDep) -> AsyncTaskPublic:
    """PENDING, then SUCCESS with the result or FAILURE with the error and traceback.
    ``attempts`` counts tries that failed and were retried; a request ends FAILURE after
    async_max_attempts of them, or when still PENDING after async_pending_ttl_s."""
    return await control.call("get_async", task_id)
