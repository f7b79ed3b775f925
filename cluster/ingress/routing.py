"""The ingress's routing cache: deployment name -> weighted Serve apps, kept off the registry.

The cache refreshes in the background from ``Registry.routing_snapshot`` (a cheap call that
returns nothing when nothing changed), so a prediction never waits on the registry; only a
name the cache has never seen triggers one synchronous refresh, bounded like every registry
call (503 when the registry cannot be asked, 404 when it answered and the name is unknown).
While the registry is down the cache keeps serving. The same loop reports the ingress's
per-app counters back, which is how rollouts see the new version's error rate and latency,
and when the old version has drained.

A deployment that has no running replica yet (PENDING, or DEPLOYING before its first replica
starts) answers 503 at once instead of holding the request until ``request_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ray import serve

from cluster import errors
from cluster.actor_gateway import registry_gateway
from cluster.errors import replica_lost
from cluster.ingress.batcher import Batcher, Limits
from cluster.operator import serve_state as serving
from cluster.operator.serve_state import SERVER_DEPLOYMENT

logger = logging.getLogger("modelyard.routing")

# Statuses in which a deployment may have no replica to take a request yet.
NOT_SERVING_YET = ("PENDING", "DEPLOYING")
SERVING = ("ACTIVE", "UPDATING")
RECHECK_S = 0.1


RunningReplicas = Callable[[], Awaitable[dict[str, int]]]


async def serve_running_replicas() -> dict[str, int]:
    """Running replicas per Serve app, as Serve's controller reports them."""
    apps = await serving.applications_async()
    return {name: serving.allocation(app, {}, {}).running_replicas for name, app in apps.items()}


class ReadinessProbe:
    """Asks Serve which apps have a running replica, only for deployments that are not
    serving yet, and at most once per ``ttl_s`` however many requests ask."""

    def __init__(
        self, read: RunningReplicas | None = None, ttl_s: float = 1.0, timeout_s: float = 2.0
    ) -> None:
        self._read = read or serve_running_replicas
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._seen: dict[str, int] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def serving(self, apps: list[str]) -> bool | None:
        """Whether one of ``apps`` has a running replica; None when Serve cannot tell now."""
        async with self._lock:
            if self._seen is None or time.monotonic() - self._at > self._ttl_s:
                try:
                    self._seen = await asyncio.wait_for(self._read(), self._timeout_s)
                except Exception:  # the controller is busy or restarting: do not guess
                    logger.warning("could not read Serve's replicas", exc_info=True)
                    self._seen = None
                    return None
                self._at = time.monotonic()
        return any(self._seen.get(app, 0) > 0 for app in apps)


@dataclass(frozen=True)
class Variant:
    app: str
    version: int
    weight: int


@dataclass(frozen=True)
class Route:
    name: str
    status: str
    kind: str | None
    model_version: int
    request_timeout_s: float
    variants: tuple[Variant, ...]
    limits: Limits | None = None  # None: no ingress batching (autoscaling deployments)


class Router:
    def __init__(
        self,
        registry: Any,
        metrics: Any = None,
        refresh_s: float = 0.5,
        probe: ReadinessProbe | None = None,
    ) -> None:
        self.registry = registry_gateway(registry)
        self._metrics = metrics
        self._probe = probe or ReadinessProbe()
        self._registry_down = False
        self._refresh_s = refresh_s
        self._routes: dict[str, Route] = {}
        self._handles: dict[str, Any] = {}
        self._batchers: dict[str, Batcher] = {}
        self._generation: str | None = None
        self._task: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self.ingress_id = uuid.uuid4().hex[:12]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._metrics is not None:
                    snapshots = self._metrics.app_snapshots()
                    await self.registry.call(
                        "report_ingress", self.ingress_id, self._generation, snapshots
                    )
                self._registry_down = False
            except Exception:  # the registry may be restarting; keep serving the cache
                # Once per outage: while it lasts, every refresh fails the same way.
                if not self._registry_down:
                    logger.warning("routing refresh failed; serving the cache", exc_info=True)
                self._registry_down = True
            await asyncio.sleep(self._refresh_s)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            generation, table = await self.registry.call("routing_snapshot", self._generation)
            self._refreshed_at = time.monotonic()
            if table is None:
                return
            routes = {}
            for name, entry in table.items():
                variants = tuple(Variant(**v) for v in entry.pop("variants"))
                limits = entry.pop("limits", None)
                limits = Limits(**limits) if limits else None
                routes[name] = Route(name=name, variants=variants, limits=limits, **entry)
                for v in variants:
                    if limits and v.app in self._batchers:
                        self._batchers[v.app].limits = limits
            self._routes = routes
            self._generation = generation

    async def route(self, name: str) -> Route:
        self.start()
        route = self._routes.get(name) or await self._look_up(name)
        if route.status not in SERVING:
            route = await self._recheck(route)
        if route.status == "STOPPED":
            raise errors.NotReady(f"deployment '{name}' is stopped; start it to serve again")
        if route.status in ("DELETING", "FAILED"):
            raise errors.NotReady(f"deployment '{name}' is {route.status.lower()}")
        if route.status in NOT_SERVING_YET:
            await self._check_serving(route)
        return route

    async def _look_up(self, name: str) -> Route:
        """A name the cache does not hold: one refresh, bounded even while another refresh
        holds the lock."""
        try:
            await asyncio.wait_for(self.refresh(), self.registry.timeout_s)
        except TimeoutError:
            raise errors.Unavailable(
                f"deployment '{name}' is not in the routing cache and the registry did not "
                f"answer within {self.registry.timeout_s:g}s; retry shortly"
            ) from None
        route = self._routes.get(name)
        if route is None:
            raise errors.NotFound(f"deployment '{name}' does not exist")
        return route

    async def _recheck(self, cached: Route) -> Route:
        """A route about to be refused, read fresh: the cached status may be up to
        ``refresh_s`` old, and refusing a deployment that became ready since is wrong. At
        most one refresh per ``RECHECK_S`` however many requests are refused; the cached
        route when the registry cannot be asked."""
        if time.monotonic() - self._refreshed_at > RECHECK_S:
            with contextlib.suppress(errors.Unavailable, TimeoutError):
                await asyncio.wait_for(self.refresh(), self.registry.timeout_s)
        route = self._routes.get(cached.name)
        if route is None:
            raise errors.NotFound(f"deployment '{cached.name}' does not exist")
        return route

    async def _check_serving(self, route: Route) -> None:
        """503 at once for a deployment with no running replica (a request sent to it would
        wait for one until request_timeout_s). When Serve cannot tell, the request goes."""
        apps = [v.app for v in route.variants]
        if await self._probe.serving(apps) is False:
            raise errors.NotReady(
                f"deployment '{route.name}' is {route.status.lower()}: no replica is running "
                f"yet; retry shortly (GET /v1/deployments/{route.name} shows its allocation)",
                retry_after_s=2.0,
            )

    def handle(self, app: str) -> Any:
        handle = self._handles.get(app)
        if handle is None:
            handle = serve.get_deployment_handle(SERVER_DEPLOYMENT, app, _check_exists=False)
            self._handles[app] = handle
        return handle

    def batcher(self, route: Route, app: str) -> Batcher:
        """The app's ingress batcher; its limits follow the route's."""
        batcher = self._batchers.get(app)
        if batcher is None:
            handle = self.handle(app).options(method_name="predict_many")

            async def send(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return await handle.remote(batch)

            batcher = self._batchers[app] = Batcher(
                route.name, send, route.limits or Limits(), retry_on=replica_lost
            )
        return batcher
