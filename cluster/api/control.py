"""The control plane's use cases, called by the thin HTTP routes.

``ControlPlane`` takes its gateways (registry and operator actor handles, the router) in
its constructor and does one thing per method.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from cluster import errors
from cluster.actor_gateway import OPERATOR_TIMEOUT_S, ActorGateway
from cluster.ingress.metrics import Metrics
from cluster.ingress.routing import Route, Router, registry_gateway, replica_lost
from cluster.operator import serve as serving
from cluster.schemas import (
    FINAL_TASK_STATES,
    ClusterPublic,
    DeploymentPublic,
    DeploymentRecord,
    DeploymentUpdate,
    EmbedArgs,
    PredictRequest,
    RolloutOptions,
    SetVersionRequest,
    Task,
)

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


def operator_gateway(operator: Any, timeout_s: float = OPERATOR_TIMEOUT_S) -> ActorGateway:
    """The operator handle behind a gateway bounded by ``timeout_s`` (the ingress passes its
    ``operator_timeout_s``)."""
    if isinstance(operator, ActorGateway):
        return operator
    from cluster.settings import OPERATOR_ACTOR

    return ActorGateway(OPERATOR_ACTOR, operator, timeout_s)


async def _bounded(aw: Awaitable[T], what: str, timeout_s: float = SERVE_READ_TIMEOUT_S) -> T:
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        raise errors.Unavailable(
            f"{what} did not answer within {timeout_s:g}s; retry shortly", retry_after_s=2.0
        ) from None


class ControlPlane:
    def __init__(self, registry: Any, operator: Any, router: Router, metrics: Metrics) -> None:
        # One gateway per actor, shared with the router, so a registry found again under its
        # name serves both.
        shared = router.registry
        same = registry is shared or registry is shared.handle
        self.registry = shared if same else registry_gateway(registry)
        self.operator = operator_gateway(operator)
        self.router = router
        self.metrics = metrics
        self._async_worker: Any = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One registry call, bounded (503 when the registry cannot answer now); the
        registry's own errors come back as themselves."""
        from cluster.ingress.http import unwrap

        try:
            return await self.registry.call(method, *args, **kwargs)
        except Exception as exc:
            raise unwrap(exc) from None

    def nudge_async_worker(self) -> None:
        """Tell the async worker that work was queued (best effort: an idle worker also
        looks by itself every few seconds)."""
        import ray

        from cluster.settings import ASYNC_WORKER_ACTOR, NAMESPACE

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
        from cluster.ingress.http import unwrap

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
            need = serving.replica_demand(config, config.replicas_wanted)
            short = serving.shortage(need, free)
            if short:
                refusal = (
                    "not enough free resources for the new version beside the old one: needs "
                    + ", ".join(f"{r}={need[r]:g} (free {free.get(r, 0.0):g})" for r in short)
                    + "; free some, or use rollout.strategy 'in_place'"
                )
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

    async def predict(
        self, name: str, req: PredictRequest, version: int | None = None
    ) -> dict[str, Any]:
        """One prediction: pick a live version by traffic weight (or the pinned one), call
        its app, and count the answer for /metrics and for rollout decisions."""
        route = await self.router.route(name)
        args = req.args if req.args is not None else await _fetch_args(req.url or "")
        if route.kind == "sentence-transformer":
            EmbedArgs.model_validate(args)
        variant = route.pick(version if version is not None else req.version)
        stats = self.metrics.apps[variant.app]
        start, outcome = time.perf_counter(), "error"
        stats.inflight += 1
        try:
            out = await self._call(route, variant.app, args)
            outcome = "success"
        except errors.ModelyardError as exc:
            outcome = exc.error_type
            raise
        finally:
            stats.inflight -= 1
            self.metrics.observe(name, outcome, (time.perf_counter() - start) * 1000, variant.app)
        return {
            "status": "SUCCESS",
            "result": out["result"],
            "model_version": out["model_version"],
            "request_id": req.request_id,
        }

    async def _call(self, route: Route, app: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if route.limits is not None:
                out = await self.router.batcher(route, app).submit(args, route.request_timeout_s)
            else:
                out = await self._call_one(route, app, args)
        except Exception as exc:
            raise _upstream_error(route.name, exc) from None
        if not out["ok"]:
            if out["error_type"] == "bad_input":
                raise errors.BadRequest(out["error"])
            raise errors.PredictorFailed(out["error"], traceback=out.get("traceback"))
        return out

    async def _call_one(self, route: Route, app: str, args: dict[str, Any]) -> dict[str, Any]:
        """One request, one call: Serve batches it in the replica (autoscaling deployments).
        A replica that dies with the request gets it sent once more, within the same time
        budget; Serve routes the second call to another replica."""
        deadline = time.monotonic() + route.request_timeout_s
        try:
            return await self._send_one(route, app, args, route.request_timeout_s)
        except Exception as exc:
            if not replica_lost(exc):
                raise
        return await self._send_one(route, app, args, max(0.0, deadline - time.monotonic()))

    async def _send_one(
        self, route: Route, app: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        response = self.router.handle(app).remote(args)
        try:
            return await asyncio.wait_for(response, timeout=timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise errors.UpstreamTimeout(
                f"deployment '{route.name}' did not answer within {route.request_timeout_s:g}s "
                "(config.request_timeout_s)"
            ) from None


def _upstream_error(name: str, exc: BaseException) -> errors.ModelyardError:
    """What a failed call to a model app answers. Serve's and Ray's texts can name hosts,
    files and internals: they go to the log, never into the answer."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    from cluster.ingress.http import unwrap

    if replica_lost(exc):  # before unwrap: an ActorDiedError carries a `cause` of its own
        return errors.Unavailable(
            f"deployment '{name}' lost the replica serving the request, twice; retry shortly"
        )
    inner = unwrap(exc)
    if isinstance(inner, BackPressureError):
        return errors.Overloaded(
            f"deployment '{name}' is at capacity: {inner}; retry later or raise "
            "config.max_queued_requests / num_replicas",
            retry_after_s=getattr(inner, "_retry_after_s", None) or 1.0,
        )
    if isinstance(inner, errors.ModelyardError):
        return inner
    if isinstance(inner, DeploymentUnavailableError):
        return errors.NotReady(f"deployment '{name}' failed to deploy; see its status")
    logger.error("deployment %r could not serve a request", name, exc_info=exc)
    return errors.NotReady(
        f"deployment '{name}' could not serve the request; the ingress log has the cause"
    )


async def _fetch_args(url: str) -> dict[str, Any]:
    """The args at a predict ``url``, through the one path and URI checker."""
    from cluster.api.deps import get_settings
    from cluster.uris import fetch_predict_args

    # None in the async worker: the ingress puts args in place of a url it queues.
    return await fetch_predict_args(url, get_settings())
