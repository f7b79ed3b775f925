"""Bounded calls from the ingress to modelyard's named control actors (registry, operator).

The control actors are created with ``max_task_retries=-1``: while one is dead and not yet
restarted, a call to it waits, without limit, for the restart. The ingress must answer
anyway, so every call here has a timeout, and a call that times out or finds the actor
unreachable becomes ``Unavailable`` (503 with ``Retry-After``). The actor's own errors (a
``RayTaskError`` carrying, say, ``NotFound``) pass through unchanged.

A handle points at one actor instance. An actor killed for good and created again under the
same name is a new instance, and the old handle answers ``ActorDiedError`` forever; so on
that error the gateway looks the name up again (bounded, once per call) and retries there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from typing import Any

from cluster import errors

logger = logging.getLogger("modelyard.gateway")


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment, else ``default``. The ingress
    replica reads it from its own environment, which a Ray started by ``modelyard up``
    inherits from the command."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        logger.warning("%s=%r is not a positive number of seconds; using %g", name, raw, default)
        return default
    return value


# Ordinary registry calls are in-memory reads and single-row writes: a few seconds is long.
REGISTRY_TIMEOUT_S = env_seconds("MODELYARD_REGISTRY_TIMEOUT_S", 3.0)
# Operator calls (cancel a job, read its logs) go through Ray Jobs and may take a while.
OPERATOR_TIMEOUT_S = env_seconds("MODELYARD_OPERATOR_TIMEOUT_S", 15.0)


def _lookup(name: str) -> Callable[[], Any]:
    def lookup() -> Any:
        import ray

        from cluster.settings import NAMESPACE

        return ray.get_actor(name, namespace=NAMESPACE)

    return lookup


def _actor_id(handle: Any) -> Any:
    return getattr(handle, "_actor_id", None) or id(handle)


class ActorGateway:
    """Calls to one named actor, each bounded by ``timeout_s``.

    Attribute access other than ``call`` reaches the current handle, so fire-and-forget
    calls stay as they were (``gateway.kick.remote()``) and never wait.
    """

    def __init__(
        self,
        name: str,
        handle: Any,
        timeout_s: float,
        lookup: Callable[[], Any] | None = None,
        lookup_timeout_s: float = 2.0,
    ) -> None:
        self.name = name
        self.handle = handle
        self.timeout_s = timeout_s
        self._lookup = lookup or _lookup(name)
        self._lookup_timeout_s = lookup_timeout_s
        self._lookup_lock = asyncio.Lock()

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.handle, method)

    async def call(self, method: str, *args: Any, timeout_s: float | None = None, **kw: Any) -> Any:
        """``handle.method.remote(*args, **kw)``, awaited for at most ``timeout_s``."""
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

        bound = timeout_s if timeout_s is not None else self.timeout_s
        for attempt in (1, 2):
            handle = self.handle
            try:
                ref = getattr(handle, method).remote(*args, **kw)
                return await asyncio.wait_for(ref, bound)  # an ObjectRef is awaitable
            except RayTaskError:
                raise  # raised inside the actor: its own error, not the actor's absence
            except ActorDiedError as exc:
                if attempt == 1 and await self._found_again(handle):
                    continue
                raise self._unavailable(method, "is not running") from exc
            except (TimeoutError, RayActorError) as exc:  # asyncio's and Ray's timeouts too
                raise self._unavailable(method, f"did not answer within {bound:g}s") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, method: str, why: str) -> errors.Unavailable:
        logger.warning("%s.%s: the actor %s", self.name, method, why)
        return errors.Unavailable(
            f"the control plane is unavailable ({self.name} {why}; it may be restarting); "
            "retry shortly",
            retry_after_s=1.0,
        )

    async def _found_again(self, dead: Any) -> bool:
        """Whether the name now resolves to another instance than ``dead`` (then in use)."""
        async with self._lookup_lock:  # one lookup for every call that hit the dead one
            if self.handle is not dead:
                return True
            try:
                fresh = await asyncio.wait_for(
                    asyncio.to_thread(self._lookup), self._lookup_timeout_s
                )
            except Exception:  # not created again yet (ValueError), or GCS slow
                return False
            if _actor_id(fresh) == _actor_id(dead):
                return False
            self.handle = fresh
            return True
