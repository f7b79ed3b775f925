"""The ingress's routing cache: deployment name -> Serve handle, kept off the registry.

The cache refreshes in the background from ``Registry.routing_snapshot`` (a cheap call that
returns nothing when nothing changed), so a prediction never waits on the registry; only a
name the cache has never seen triggers one synchronous refresh.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from cluster import errors

logger = logging.getLogger("modelyard.routing")


@dataclass(frozen=True)
class Route:
    name: str
    status: str
    kind: str | None
    model_version: int
    app_name: str
    request_timeout_s: float


class Router:
    def __init__(self, registry: Any, refresh_s: float = 0.5) -> None:
        self._registry = registry
        self._refresh_s = refresh_s
        self._routes: dict[str, Route] = {}
        self._handles: dict[str, Any] = {}
        self._generation: str | None = None
        self._task: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the registry may be restarting; keep serving the cache
                logger.warning("routing refresh failed", exc_info=True)
            await asyncio.sleep(self._refresh_s)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            generation, table = await self._registry.routing_snapshot.remote(self._generation)
            if table is None:
                return
            self._routes = {name: Route(name=name, **entry) for name, entry in table.items()}
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

    def handle(self, route: Route) -> Any:
        handle = self._handles.get(route.app_name)
        if handle is None:
            from ray import serve

            from cluster.serving import SERVER_DEPLOYMENT

            handle = serve.get_deployment_handle(
                SERVER_DEPLOYMENT, route.app_name, _check_exists=False
            )
            self._handles[route.app_name] = handle
        return handle
