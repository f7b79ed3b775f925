"""The async queue as the registry serves it: each deployment's state decides its tasks.

``AsyncQueue`` knows tasks, not deployments; here a deleted deployment's tasks end FAILURE,
a stopped or failed one's wait unclaimed (until their TTL, holding no worker slot), and a
lease outlives the deployment's own request timeout.
"""

from __future__ import annotations

from typing import Any

from cluster.registry.async_queue import AsyncQueue
from cluster.registry.deployments import DeploymentStore
from cluster.schemas import AsyncTask, AsyncTaskPublic, PredictRequest


class AsyncPredictions:
    def __init__(self, queue: AsyncQueue, deployments: DeploymentStore) -> None:
        self._queue = queue
        self._deployments = deployments

    def enqueue(self, name: str, req: PredictRequest) -> AsyncTask:
        """Safe to run twice (Ray re-runs it after a crash): a request with a request_id
        already queued for ``name`` answers its task."""
        self._deployments.get(name)
        return self._queue.enqueue(name, req)

    def claim(self, limit: int, lease_s: float) -> list[AsyncTask]:
        """Claimable tasks, fairly across deployments. A deleted deployment's tasks end
        FAILURE here; a stopped or failed one's wait (until their TTL) unclaimed, so they
        hold no worker slot."""
        waiting, leases = [], {}
        for name in self._queue.deployments():
            record = self._deployments.find(name)
            if record is None:
                self._queue.fail_deployment(name, f"deployment '{name}' was deleted")
            elif record.status in ("STOPPED", "FAILED", "DELETING"):
                waiting.append(name)
            else:
                # A lease outlives the prediction (its timeout, and the one resend when its
                # replica dies), so a slow answer is not counted as a lost worker.
                leases[name] = max(lease_s, 2 * record.config.request_timeout_s + 10)
        return self._queue.claim(limit, lease_s, skip=waiting, lease_for=leases)

    def release(
        self, task_id: str, error: str | None = None, deployment_unready: bool = False
    ) -> None:
        """Give a claimed task back. ``deployment_unready``: its deployment was not ready or
        full (the deployment is paused, the task's attempts are not spent); ``error``: the
        try failed and may succeed later (an attempt is counted, with back-off)."""
        if deployment_unready:
            self._queue.defer(task_id)
        elif error is not None:
            self._queue.retry(task_id, error)
        else:
            self._queue.release(task_id)

    def complete(self, task_id: str, **fields: Any) -> None:
        self._queue.complete(task_id, **fields)

    def get(self, task_id: str) -> AsyncTaskPublic:
        return AsyncTaskPublic.of(self._queue.get(task_id))
