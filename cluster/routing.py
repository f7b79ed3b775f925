"""The ingress's routing cache: deployment name -> weighted Serve apps, kept off the registry.

The cache refreshes in the background from ``Registry.routing_snapshot`` (a cheap call that
returns nothing when nothing changed), so a prediction never waits on the registry; only a
name the cache has never seen triggers one synchronous refresh. The same loop reports the
ingress's per-app counters back, which is how rollouts see the new version's error rate and
latency, and when the old version has drained.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

from cluster import errors
from cluster.coalesce import Batcher, Limits

logger = logging.getLogger("modelyard.routing")


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

    def pick(self, version: int | None = None) -> Variant:
        """A weighted random live app, or the one serving ``version`` when pinned."""
        if version is not None:
            for v in self.variants:
                if v.version == version:
                    return v
            live = ", ".join(str(v.version) for v in self.variants)
            raise errors.NotFound(
                f"deployment '{self.name}' does not serve version {version} (live: {live})"
            )
        weighted = [v for v in self.variants if v.weight > 0]
        if len(weighted) == 1:
            return weighted[0]
        if not weighted:
            return self.variants[0]
        return random.choices(weighted, weights=[v.weight for v in weighted])[0]


class Router:
    def __init__(self, registry: Any, metrics: Any = None, refresh_s: float = 0.5) -> None:
        self._registry = registry
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._routes: dict[str, Route] = {}
        self._handles: dict[str, Any] = {}
        self._batchers: dict[str, Batcher] = {}
        self._generation: str | None = None
        self._task: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()
        self.ingress_id = uuid.uuid4().hex[:12]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._metrics is not None:
                    await self._registry.report_ingress.remote(
                        self.ingress_id, self._generation, self._metrics.app_snapshots()
                    )
            except Exception:  # the registry may be restarting; keep serving the cache
                logger.warning("routing refresh failed", exc_info=True)
            await asyncio.sleep(self._refresh_s)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            generation, table = await self._registry.routing_snapshot.remote(self._generation)
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
        route = self._routes.get(name)
        if route is None:
            await self.refresh()
            route = self._routes.get(name)
        if route is None:
            raise errors.NotFound(f"deployment '{name}' does not exist")
        if route.status == "STOPPED":
            raise errors.NotReady(f"deployment '{name}' is stopped; start it to serve again")
        if route.status in ("DELETING", "FAILED"):
            raise errors.NotReady(f"deployment '{name}' is {route.status.lower()}")
        return route

    def handle(self, app: str) -> Any:
        handle = self._handles.get(app)
        if handle is None:
            from ray import serve

            from cluster.serving import SERVER_DEPLOYMENT

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

            batcher = self._batchers[app] = Batcher(route.name, send, route.limits or Limits())
        return batcher
