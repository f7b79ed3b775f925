"""Bounded calls from the ingress to modelyard's named control actors (registry, operator).

The control actors are created with ``max_task_retries=-1``: while one is dead and not yet
restarted, a call to it waits, without limit, for the restart. The ingress must answer
anyway, so every call here has a timeout, and a call that times out or finds the actor
unreachable becomes ``Unavailable`` (503 with ``Retry-After``). The actor's own errors (a
``RayTaskError`` carrying, say, ``NotFound``) pass through unchanged.

A handle points at one actor instance. An actor killed for good and created again under the
same name is a new instance, and the old handle answers ``ActorDiedError`` forever; so on
that error the gateway looks the name up again (bounded, once per call) and retries there.

``call`` is for callers on an event loop (the ingress, the async worker); ``call_sync`` is
the same for a thread without one (the operator's reconcile loop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cluster import errors
from cluster.settings import OPERATOR_ACTOR, REGISTRY_ACTOR, Settings

logger = logging.getLogger("modelyard.gateway")

# For gateways made without the ingress's settings at hand (the async worker's router,
# tests); the ingress replica passes its own settings' values.
REGISTRY_TIMEOUT_S: float = Settings.model_fields["registry_timeout_s"].default
OPERATOR_TIMEOUT_S: float = Settings.model_fields["operator_timeout_s"].default


def _lookup(name: str) -> Callable[[], Any]:
    def lookup() -> Any:
        import ray

        from cluster.settings import NAMESPACE

        return ray.get_actor(name, namespace=NAMESPACE)

    return lookup


def _actor_id(handle: Any) -> Any:
    return getattr(handle, "_actor_id", None) or id(handle)


def _ray_get(ref: Any, timeout_s: float) -> Any:
    import ray

    return ray.get(ref, timeout=timeout_s)


class ActorGateway:
    """Calls to one named actor, each bounded by ``timeout_s``.

    Attribute access other than ``call`` and ``call_sync`` reaches the current handle, so
    fire-and-forget calls read as on a handle (``gateway.kick.remote()``) and never wait, and
    code holding the gateway (the operator's job runners) uses the instance it found last.
    """

    def __init__(
        self,
        name: str,
        handle: Any,
        timeout_s: float,
        lookup: Callable[[], Any] | None = None,
        lookup_timeout_s: float = 2.0,
        get: Callable[[Any, float], Any] = _ray_get,
    ) -> None:
        self.name = name
        self.handle = handle
        self.timeout_s = timeout_s
        self._lookup = lookup or _lookup(name)
        self._lookup_timeout_s = lookup_timeout_s
        self._get = get  # call_sync's wait on an ObjectRef
        self._lookup_lock = asyncio.Lock()
        self._sync_lookup_lock = threading.Lock()

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.handle, method)

    async def call(
        self, method: str, /, *args: Any, timeout_s: float | None = None, **kw: Any
    ) -> Any:
        """``handle.method.remote(*args, **kw)``, awaited for at most ``timeout_s``."""
        bound = timeout_s if timeout_s is not None else self.timeout_s
        for attempt in (1, 2):
            handle = self.handle
            try:
                ref = getattr(handle, method).remote(*args, **kw)
                return await asyncio.wait_for(ref, bound)  # an ObjectRef is awaitable
            except Exception as exc:
                self._raise_unless_died(exc, method, bound)
                if attempt == 1 and await self._found_again(handle):
                    continue
                raise self._unavailable(method, "is not running") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def call_sync(
        self, method: str, /, *args: Any, timeout_s: float | None = None, **kw: Any
    ) -> Any:
        """``call`` for a thread without an event loop: blocks for at most ``timeout_s``."""
        bound = timeout_s if timeout_s is not None else self.timeout_s
        for attempt in (1, 2):
            handle = self.handle
            try:
                return self._get(getattr(handle, method).remote(*args, **kw), bound)
            except Exception as exc:
                self._raise_unless_died(exc, method, bound)
                if attempt == 1 and self._found_again_sync(handle):
                    continue
                raise self._unavailable(method, "is not running") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_unless_died(self, exc: Exception, method: str, bound: float) -> None:
        """Raise what a failed call means, unless the actor died (then its name is looked
        up again)."""
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

        if isinstance(exc, RayTaskError):
            raise exc  # raised inside the actor: its own error, not the actor's absence
        if isinstance(exc, ActorDiedError):
            return
        if isinstance(exc, (TimeoutError, RayActorError)):  # asyncio's and Ray's timeouts too
            raise self._unavailable(method, f"did not answer within {bound:g}s") from exc
        raise exc

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
            return self._adopt(dead, fresh)

    def _found_again_sync(self, dead: Any) -> bool:
        """``_found_again`` for ``call_sync``."""
        with self._sync_lookup_lock:
            if self.handle is not dead:
                return True
            pool = ThreadPoolExecutor(1)  # so a slow GCS cannot hold the caller past the bound
            try:
                fresh = pool.submit(self._lookup).result(self._lookup_timeout_s)
            except Exception:  # not created again yet (ValueError), or GCS slow
                return False
            finally:
                pool.shutdown(wait=False)
            return self._adopt(dead, fresh)

    def _adopt(self, dead: Any, fresh: Any) -> bool:
        if _actor_id(fresh) == _actor_id(dead):
            return False
        self.handle = fresh
        return True


def registry_gateway(registry: Any, timeout_s: float = REGISTRY_TIMEOUT_S) -> ActorGateway:
    """The registry handle behind a gateway bounded by ``timeout_s`` (the ingress passes its
    ``registry_timeout_s``)."""
    if isinstance(registry, ActorGateway):
        return registry
    return ActorGateway(REGISTRY_ACTOR, registry, timeout_s)


def operator_gateway(operator: Any, timeout_s: float = OPERATOR_TIMEOUT_S) -> ActorGateway:
    """The operator handle behind a gateway bounded by ``timeout_s`` (the ingress passes its
    ``operator_timeout_s``)."""
    if isinstance(operator, ActorGateway):
        return operator
    return ActorGateway(OPERATOR_ACTOR, operator, timeout_s)
