"""The control plane's use cases, called by the thin HTTP routes: deploy, roll out, patch,
describe, and the bounded registry and operator calls behind them.

``ControlPlane`` takes its gateways (registry and operator actor handles, the router) in
its constructor and does one thing per method. Predictions are not its work: they go
through ``cluster.ingress.predict``, which it holds for the routes that need one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from cluster import errors
from cluster.actor_gateway import operator_gateway, registry_gateway
from cluster.errors import unwrap
from cluster.ingress.metrics import Metrics
from cluster.ingress.predict import PredictService
from cluster.ingress.routing import Router
from cluster.operator import capacity
from cluster.operator import serve_state as serving
from cluster.schemas import (
    FINAL_TASK_STATES,
    ClusterPublic,
    DeploymentPublic,
    DeploymentRecord,
    DeploymentUpdate,
    RolloutOptions,
    SetVersionRequest,
    Task,
)
from cluster.settings import ASYNC_WORKER_ACTOR, NAMESPACE, Settings

logger = logging.getLogger("modelyard.control")
T = TypeVar("T")
# Serve's controller and the GCS answer the allocation and cluster views; they get a bound
# of their own, like the registry, so a busy controller gives a 503 rather than a hang.
SERVE_READ_TIMEOUT_S = 10.0


def _reached(wait_for: str, task: Task) -> bool:
    if wait_for == "none" or task.status in FINAL_TASK_STATES:
        return True
    state = task.detail.get("allocation_state")
    if wait_for == "starting":
        return task.status != "pending"
    if wait_for == "started":
        return state in ("started", "fully_allocated")
    return state == "fully_allocated"


async def _bounded(aw: Awaitable[T], what: str, timeout_s: float = SERVE_READ_TIMEOUT_S) -> T:
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        raise errors.Unavailable(
            f"{what} did not answer within {timeout_s:g}s; retry shortly", retry_after_s=2.0
        ) from None


class ControlPlane:
    """``predictions`` is the predict path's service (``cluster.ingress.predict``), which
    the predict route calls directly; ``predict`` is its one method, for the other callers
    (the embeddings route, the async worker). ``settings`` are the ingress replica's."""

    def __init__(
        self,
        registry: Any,
        operator: Any,
        router: Router,
        metrics: Metrics,
        settings: Settings | None = None,
    ) -> None:
        # One gateway per actor, shared with the router, so a registry found again under its
        # name serves both.
        shared = router.registry
        same = registry is shared or registry is shared.handle
        self.registry = shared if same else registry_gateway(registry)
        self.operator = operator_gateway(operator)
        self.router = router
        self.metrics = metrics
        self.predictions = PredictService(router, metrics, settings)
        self.predict = self.predictions.predict
        self._async_worker: Any = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One registry call, bounded (503 when the registry cannot answer now); the
        registry's own errors come back as themselves."""
        try:
            return await self.registry.call(method, *args, **kwargs)
        except Exception as exc:
            raise unwrap(exc) from None

    def nudge_async_worker(self) -> None:
        """Tell the async worker that work was queued (best effort: an idle worker also
        looks by itself every few seconds)."""
        import ray

        try:
            if self._async_worker is None:
                self._async_worker = ray.get_actor(ASYNC_WORKER_ACTOR, namespace=NAMESPACE)
            self._async_worker.nudge.remote()
        except Exception:  # not started yet, or restarting: look it up again next time
            self._async_worker = None

    async def _refresh_routes(self) -> None:
        """After a change the registry accepted: routes now, or (registry slow again) at the
        router's next background refresh. The change itself succeeded, so no 503 for it."""
        try:
            await self.router.refresh()
        except errors.Unavailable:
            logger.warning("routes not refreshed after a change; the background refresh will")

    async def operator_call(self, method: str, *args: Any) -> Any:
        """One operator call, bounded like ``call``."""
        try:
            return await self.operator.call(method, *args)
        except Exception as exc:
            raise unwrap(exc) from None

    async def submit(self, method: str, req: Any, wait_for: str, timeout_s: float) -> Task:
        """Create a task, wake the operator, and wait (bounded) for ``wait_for``."""
        task: Task = await self.call(method, req)
        self.operator.kick.remote()
        await self._refresh_routes()
        return await self.wait_task(task, wait_for, timeout_s)

    async def wait_task(self, task: Task, wait_for: str, timeout_s: float) -> Task:
        deadline = time.monotonic() + timeout_s
        while not _reached(wait_for, task) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            task = await self.call("get_task", task.id)
        return task

    async def set_version(self, name: str, req: SetVersionRequest) -> Task:
        record: DeploymentRecord = await self.call("get_deployment", name)
        return await self._rollout(record, req.version, req.rollout, record.config)

    async def _rollout(
        self, record: DeploymentRecord, version: int, options: RolloutOptions, config
    ) -> Task:
        """Start a swap after checking that the cluster has room for the new copy."""
        refusal = None
        if options.strategy == "green":
            _, free = await _bounded(asyncio.to_thread(serving.resources), "Ray's GCS")
            refusal = capacity.green_refusal(config, free)
        task = await self.call("start_rollout", record.name, version, options, config, refusal)
        self.operator.kick.remote()
        await self._refresh_routes()
        return task

    async def rollback(self, name: str, options: RolloutOptions | None) -> Task:
        """Mid-swap: traffic back to the serving version at once. After a swap: back to the
        previous version through the same green path (with its capacity check)."""
        record: DeploymentRecord = await self.call("get_deployment", name)
        if record.rollout is not None:
            task = await self.call("abort_rollout", name)
            self.operator.kick.remote()
            await self._refresh_routes()
            return task
        if record.previous_version is None:
            raise errors.Conflict(f"deployment '{name}' has no previous version to go back to")
        return await self._rollout(
            record, record.previous_version, options or RolloutOptions(), record.config
        )

    async def patch(self, name: str, req: DeploymentUpdate) -> tuple[DeploymentRecord, Task | None]:
        """Metadata and in-place config now; new resources through a green rollout."""
        record: DeploymentRecord = await self.call("get_deployment", name)
        task = None
        if req.config is not None and req.config.resources != record.config.resources:
            options = req.rollout or RolloutOptions()
            task = await self._rollout(record, record.model_version, options, req.config)
            req = req.model_copy(update={"config": None})
        record = await self.call("patch_deployment", name, req)
        self.operator.kick.remote()
        return record, task

    async def wait_settled(self, name: str, timeout_s: float) -> DeploymentRecord:
        """The deployment once no change is pending, or as it is when ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            record: DeploymentRecord = await self.call("get_deployment", name)
            settled = record.rollout is None and record.status not in ("PENDING", "DEPLOYING")
            if settled or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(0.25)

    async def describe(self, record: DeploymentRecord) -> DeploymentPublic:
        return (await self.describe_many([record]))[0]

    async def describe_many(self, records: list[DeploymentRecord]) -> list[DeploymentPublic]:
        """Records with their allocation views, from one read of Serve and of resources."""
        apps = await _bounded(serving.applications_async(), "Serve's controller")
        total, free = await _bounded(asyncio.to_thread(serving.resources), "Ray's GCS")
        out = []
        for record in records:
            alloc = serving.allocation(apps.get(record.serve_app), total, free)
            green = None
            if record.rollout is not None and record.rollout.green_app != record.serve_app:
                green = serving.allocation(apps.get(record.rollout.green_app), total, free)
            out.append(
                DeploymentPublic(
                    **record.model_dump(),
                    app_name=record.serve_app,
                    allocation=alloc,
                    green_allocation=green,
                )
            )
        return out

    async def change(self, method: str, name: str) -> DeploymentPublic:
        """A registry state change (stop, start) the operator and router must see now."""
        record = await self.call(method, name)
        self.operator.kick.remote()
        await self._refresh_routes()
        return await self.describe(record)

    async def cluster(self) -> ClusterPublic:
        return await _bounded(asyncio.to_thread(serving.cluster_view), "Ray's GCS")
