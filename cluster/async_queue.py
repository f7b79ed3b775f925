"""The durable queue behind ``POST /v1/deployments/{name}/async-predict``.

``AsyncQueue`` is part of the registry actor's state: every queued prediction is written
to SQLite before its id is returned, so a registry restart loses none. Workers claim
tasks under a lease; a task whose worker died (or whose lease was lost with a registry
restart) is claimed again, so delivery is at least once. Results are kept for
``result_ttl_s`` and then purged.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from cluster import errors
from cluster.schemas import AsyncTask, PredictRequest, utcnow
from cluster.store import Store

TABLE = "async_tasks"


class AsyncQueue:
    def __init__(self, store: Store, result_ttl_s: float) -> None:
        self._store = store
        self._ttl = timedelta(seconds=result_ttl_s)
        self._tasks: dict[str, AsyncTask] = dict(store.load(TABLE, AsyncTask))
        self._pending: list[str] = [k for k, t in self._tasks.items() if t.status == "PENDING"]
        self._leases: dict[str, float] = {}

    def enqueue(self, deployment: str, req: PredictRequest) -> AsyncTask:
        task = AsyncTask(task_id=f"async-{uuid.uuid4().hex}", deployment=deployment, request=req)
        self._put(task)
        self._pending.append(task.task_id)
        return task

    def claim(self, limit: int, lease_s: float) -> list[AsyncTask]:
        """Up to ``limit`` pending tasks, oldest first, leased for ``lease_s`` seconds."""
        now = time.monotonic()
        out = []
        for task_id in self._pending:
            if len(out) >= limit:
                break
            if self._leases.get(task_id, 0.0) <= now:
                self._leases[task_id] = now + lease_s
                out.append(self._tasks[task_id])
        return out

    def release(self, task_id: str) -> None:
        """Give a claimed task back (e.g. the deployment answered 429); it is retried."""
        self._leases.pop(task_id, None)

    def complete(self, task_id: str, **fields: Any) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.status != "PENDING":
            return  # a duplicate delivery finished it first
        done = task.model_copy(update={**fields, "completed_at": utcnow()})
        self._put(AsyncTask.model_validate(done.model_dump()))
        self._leases.pop(task_id, None)
        self._pending.remove(task_id)
        self.purge()

    def get(self, task_id: str) -> AsyncTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise errors.NotFound(f"no async task '{task_id}' (results expire after a while)")
        return task

    def purge(self) -> None:
        cutoff = utcnow() - self._ttl
        for task_id, task in list(self._tasks.items()):
            if task.completed_at is not None and task.completed_at < cutoff:
                del self._tasks[task_id]
                self._store.delete(TABLE, task_id)

    def _put(self, task: AsyncTask) -> None:
        self._tasks[task.task_id] = task
        self._store.put(TABLE, task.task_id, task)
