"""The routing cache with a fake registry: a registry that is down never stalls a prediction
or hangs a lookup, and a deployment with no running replica answers 503 at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import ReplicaUnavailableError

from cluster import errors
from cluster.actor_gateway import ActorGateway
from cluster.errors import replica_lost
from cluster.ingress.routing import ReadinessProbe, Router

TIMEOUT_S = 0.3


def entry(status: str = "ACTIVE", app: str = "d--v1") -> dict:
    return {
        "status": status,
        "kind": "custom",
        "model_version": 1,
        "request_timeout_s": 5.0,
        "limits": None,
        "variants": [{"app": app, "version": 1, "weight": 100}],
    }


class Method:
    def __init__(self, actor: FakeRegistry, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args):
        self.actor.calls.append(self.name)
        return self.actor.answer(self.name, args)


class FakeRegistry:
    """``routing_snapshot`` answers ``tables`` in turn; ``down`` makes every call hang."""

    def __init__(self, *tables: dict) -> None:
        self.tables = list(tables)
        self.down = False
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Method:
        return Method(self, name)

    async def answer(self, name: str, args: tuple):
        if self.down:
            await asyncio.Event().wait()  # never answers, like a stopped actor
        if name == "routing_snapshot":
            table = self.tables.pop(0) if self.tables else None
            return (f"g{len(self.calls)}", table)
        return None


def router(registry, probe: ReadinessProbe | None = None) -> Router:
    gateway = ActorGateway("modelyard-registry", registry, TIMEOUT_S, lookup=lambda: registry)
    return Router(gateway, refresh_s=0.01, probe=probe)


def test_a_known_route_keeps_serving_while_the_registry_hangs():
    registry = FakeRegistry({"d": entry()})
    r = router(registry)

    async def main():
        assert (await r.route("d")).name == "d"  # first lookup fills the cache
        registry.down = True
        await asyncio.sleep(0.05)  # the background refresh is now stuck on the registry
        start = time.monotonic()
        routes = [await r.route("d") for _ in range(50)]
        return time.monotonic() - start, routes

    elapsed, routes = asyncio.run(main())
    assert all(route.name == "d" for route in routes)
    assert elapsed < TIMEOUT_S  # never waited for the stuck refresh


def test_an_unknown_name_with_the_registry_down_is_503_within_the_bound():
    registry = FakeRegistry()
    registry.down = True
    r = router(registry)
    start = time.monotonic()
    with pytest.raises(errors.Unavailable) as info:
        asyncio.run(r.route("nope"))
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    assert info.value.status_code == 503 and info.value.retry_after_s


def test_an_unknown_name_the_registry_does_not_know_is_404():
    r = router(FakeRegistry({"d": entry()}))
    with pytest.raises(errors.NotFound, match="'nope' does not exist"):
        asyncio.run(r.route("nope"))


class Probe:
    def __init__(self, answer: dict[str, int] | None = None, fail: bool = False) -> None:
        self.answer = answer or {}
        self.fail = fail
        self.reads = 0

    async def read(self) -> dict[str, int]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("controller busy")
        return self.answer


@pytest.mark.parametrize("status", ["PENDING", "DEPLOYING"])
def test_a_deployment_with_no_running_replica_is_503_at_once(status):
    probe = Probe({"d--v1": 0})
    r = router(FakeRegistry({"d": entry(status)}), ReadinessProbe(probe.read))
    start = time.monotonic()
    with pytest.raises(errors.NotReady) as info:
        asyncio.run(r.route("d"))
    assert time.monotonic() - start < 1.0  # not request_timeout_s (5 s here)
    assert info.value.status_code == 503
    assert info.value.retry_after_s
    assert "no replica is running" in info.value.message


def test_a_deploying_deployment_with_a_running_replica_is_routed():
    probe = Probe({"d--v1": 1})
    r = router(FakeRegistry({"d": entry("DEPLOYING")}), ReadinessProbe(probe.read))
    assert asyncio.run(r.route("d")).name == "d"


def test_when_serve_cannot_tell_the_request_goes_on():
    probe = Probe(fail=True)
    r = router(FakeRegistry({"d": entry("DEPLOYING")}), ReadinessProbe(probe.read))
    assert asyncio.run(r.route("d")).name == "d"


def test_an_active_deployment_never_asks_serve():
    probe = Probe({})
    r = router(FakeRegistry({"d": entry("ACTIVE")}), ReadinessProbe(probe.read))
    assert asyncio.run(r.route("d")).name == "d"
    assert probe.reads == 0


def test_the_probe_asks_serve_once_per_ttl():
    probe = Probe({"d--v1": 0})
    readiness = ReadinessProbe(probe.read, ttl_s=60)

    async def main():
        return [await readiness.serving(["d--v1"]) for _ in range(20)]

    assert asyncio.run(main()) == [False] * 20
    assert probe.reads == 1


@pytest.mark.parametrize(("status", "retry"), [("STOPPED", False), ("DELETING", False)])
def test_stopped_and_deleting_are_503_without_retry_after(status, retry):
    r = router(FakeRegistry({"d": entry(status)}))
    with pytest.raises(errors.NotReady) as info:
        asyncio.run(r.route("d"))
    assert (info.value.retry_after_s is not None) == retry


def test_which_errors_mean_the_replica_was_lost():
    assert replica_lost(ActorDiedError())
    assert replica_lost(ActorUnavailableError("gone", None))
    assert replica_lost(ReplicaUnavailableError("r1"))
    assert not replica_lost(RuntimeError("x"))
    assert not replica_lost(errors.PredictorFailed("model raised"))
    # Raised inside the replica (an actor it called died): sending it again would not help.
    inside = RayTaskError("predict_many", "Traceback ...", ActorDiedError())
    assert not replica_lost(inside.as_instanceof_cause())


class NeverServing(ReadinessProbe):
    async def serving(self, apps):
        return False


def test_a_refusal_reads_the_status_fresh_so_a_deployment_just_ready_is_served():
    # Cached as DEPLOYING with no replica; the registry says ACTIVE by now (scale to zero:
    # ACTIVE with none running, woken by this very request).
    registry = FakeRegistry({"d": entry("DEPLOYING")}, {"d": entry("ACTIVE")})
    r = Router(
        ActorGateway("modelyard-registry", registry, TIMEOUT_S, lookup=lambda: registry),
        refresh_s=3600,  # no background refresh between the two lookups
        probe=NeverServing(),
    )

    async def main():
        await r.refresh()
        r._refreshed_at = 0.0  # the cached status is older than RECHECK_S
        return await r.route("d")

    assert asyncio.run(main()).status == "ACTIVE"


def test_a_refusal_while_the_registry_hangs_answers_from_the_cache_within_the_bound():
    registry = FakeRegistry({"d": entry("STOPPED")})
    r = router(registry)

    async def main():
        await r.refresh()
        registry.down = True
        r._refreshed_at = 0.0
        start = time.monotonic()
        with pytest.raises(errors.NotReady, match="stopped"):
            await r.route("d")
        return time.monotonic() - start

    assert asyncio.run(main()) < TIMEOUT_S * 3
