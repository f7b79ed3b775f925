"""Workers that drain the async-prediction queue through the same prediction path as the
ingress (routing weights, limits, timeouts), and write each result back to the registry.

Each try ends one of three ways (``settle``): a result or a final error (bad input, the
predictor raised) completes the task; a deployment that is not ready or full gives the task
back and pauses that deployment, spending none of the task's attempts; a timeout gives it
back as a failed attempt, retried after a back-off the registry keeps. No slot is held
while a task waits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cluster import errors
from cluster.actor_gateway import registry_gateway
from cluster.api.control import ControlPlane
from cluster.ingress.metrics import Metrics
from cluster.ingress.routing import Router
from cluster.schemas import AsyncTask

logger = logging.getLogger("modelyard.async")

# The deployment as a whole cannot take work now: it is paused, the task waits unspent.
DEPLOYMENT_UNREADY = (errors.Overloaded, errors.NotReady)
# This try failed but another may not: an attempt is counted, with back-off.
RETRYABLE = (errors.UpstreamTimeout,)
# An idle worker looks for queued work every IDLE_FIRST_S, backing off to IDLE_MAX_S; the
# enqueue route nudges it, so a new request is picked up at once and an idle cluster is quiet.
IDLE_FIRST_S = 0.2
IDLE_MAX_S = 2.0
# Bound on each registry call; past it the claim is tried again, and a report that did not
# arrive is made up for by the lease running out (the task is claimed again). The calls go
# through the gateway, so a registry killed for good and created again under its name is
# found again.
REGISTRY_TIMEOUT_S = 30.0


def next_idle_wait(busy: bool, wait_s: float) -> float:
    """How long to wait before the next claim: short after work (a claim or a nudge),
    doubling while idle."""
    return IDLE_FIRST_S if busy else min(wait_s * 2, IDLE_MAX_S)


class AsyncWorker:
    def __init__(self, registry: Any, concurrency: int = 64, lease_s: float = 120.0) -> None:
        # One gateway for the worker's calls and its router's, so both follow a registry
        # found again under its name.
        self._registry = registry_gateway(registry)
        self._concurrency = concurrency
        self._lease_s = lease_s
        router = Router(self._registry)
        self._control = ControlPlane(self._registry, None, router, Metrics())
        self._task: asyncio.Task | None = None
        self._nudged: asyncio.Event | None = None

    async def ping(self) -> bool:
        if self._task is None:
            self._nudged = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    async def nudge(self) -> None:
        """Work was queued: claim now instead of at the end of the idle wait."""
        await self.ping()
        self._nudged.set()

    async def _loop(self) -> None:
        running: set[asyncio.Task] = set()
        idle_s = IDLE_FIRST_S
        while True:
            try:
                room = self._concurrency - len(running)
                claimed = (
                    await self._registry.call(
                        "claim_async", room, self._lease_s, timeout_s=REGISTRY_TIMEOUT_S
                    )
                    if room
                    else []
                )
            except Exception:  # the registry is restarting: its calls retry, we wait
                logger.warning("claiming async tasks failed", exc_info=True)
                claimed = []
            for task in claimed:
                job = asyncio.create_task(self._run(task))
                running.add(job)
                job.add_done_callback(running.discard)
            if claimed:
                idle_s = next_idle_wait(True, idle_s)
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.wait_for(self._nudged.wait(), idle_s)
                woken = True
            except TimeoutError:
                woken = False
            self._nudged.clear()
            idle_s = next_idle_wait(woken, idle_s)

    async def _run(self, task: AsyncTask) -> None:
        try:
            out = await self._control.predict(task.deployment, task.request)
        except Exception as exc:
            method, fields = settle(exc)
        else:
            method = "complete_async"
            fields = {
                "status": "SUCCESS",
                "result": out["result"],
                "model_version": out["model_version"],
            }
        try:
            await self._registry.call(method, task.task_id, timeout_s=REGISTRY_TIMEOUT_S, **fields)
        except Exception:  # the registry is restarting: the lease runs out, it is claimed again
            logger.warning("reporting async task %s failed", task.task_id, exc_info=True)
        finally:
            self._nudged.set()  # a slot is free: claim again now


def settle(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """The registry call that reports a failed try: which method, with which fields."""
    if isinstance(exc, DEPLOYMENT_UNREADY):
        return "release_async", {"deployment_unready": True}
    if isinstance(exc, RETRYABLE):
        return "release_async", {"error": exc.message}
    if isinstance(exc, errors.ModelyardError):  # bad input, the predictor raised: final
        fields = {"status": "FAILURE", "error": exc.message}
        return "complete_async", {**fields, "traceback": getattr(exc, "traceback", None)}
    # An unexpected failure still ends the task, with its cause.
    return "complete_async", {"status": "FAILURE", "error": f"{type(exc).__name__}: {exc}"}


def get_or_create_async_worker(head_node_id: str | None = None):
    import ray

    from cluster.actors import control_actor_options
    from cluster.registry.actor import registry_handle
    from cluster.settings import ASYNC_WORKER_ACTOR

    options = control_actor_options(ASYNC_WORKER_ACTOR, head_node_id)
    actor = ray.remote(AsyncWorker).options(**options).remote(registry_handle())
    ray.get(actor.ping.remote(), timeout=60)
    return actor
