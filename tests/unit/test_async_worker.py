"""The async worker's claim loop: quick while work flows, backing off when idle, and woken
at once by a nudge from the enqueue route; what it reports for each kind of failure, and
that a failing or cold deployment neither retries forever nor blocks a healthy one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from ray.exceptions import ActorDiedError

from cluster import errors
from cluster.actor_gateway import ActorGateway
from cluster.ingress import async_worker
from cluster.ingress.async_worker import (
    IDLE_FIRST_S,
    IDLE_MAX_S,
    AsyncWorker,
    next_idle_wait,
    settle,
)
from cluster.registry.actor import RegistryCore
from cluster.registry.async_queue import AsyncLimits
from cluster.schemas import DeployRequest, ModelCreate, PredictRequest


def test_idle_waits_double_up_to_the_cap_and_reset_on_work():
    waits, wait = [], IDLE_FIRST_S
    for _ in range(6):
        wait = next_idle_wait(False, wait)
        waits.append(wait)
    assert waits == [0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert next_idle_wait(True, IDLE_MAX_S) == IDLE_FIRST_S


class _Method:
    def __init__(self, fn):
        self.remote = fn


class FakeRegistry:
    """Records when ``claim_async`` is called; never has work."""

    def __init__(self) -> None:
        self.claims: list[float] = []

        async def claim(room, lease_s):
            self.claims.append(time.monotonic())
            return []

        self.claim_async = _Method(claim)


def reg_gateway(handle, lookup=None) -> ActorGateway:
    def missing():
        raise ValueError("Failed to look up actor 'modelyard-registry'")

    return ActorGateway("modelyard-registry", handle, 1.0, lookup=lookup or missing)


@pytest.fixture
def worker(monkeypatch):
    monkeypatch.setattr(async_worker, "IDLE_FIRST_S", 0.05)
    monkeypatch.setattr(async_worker, "IDLE_MAX_S", 0.2)
    registry = FakeRegistry()
    w = AsyncWorker.__new__(AsyncWorker)  # no ControlPlane: nothing is claimed here
    w._registry, w._concurrency, w._lease_s = reg_gateway(registry), 4, 1.0
    w._task, w._nudged = None, None
    return w, registry


def test_an_idle_worker_backs_off_and_a_nudge_claims_at_once(worker):
    w, registry = worker

    async def scenario() -> tuple[list[float], float]:
        await w.ping()
        await asyncio.sleep(1.0)  # idle: waits 0.05, 0.1, 0.2, 0.2, ...
        idle_claims = len(registry.claims)
        start = time.monotonic()
        await w.nudge()
        await asyncio.sleep(0.05)
        after = [t for t in registry.claims if t >= start]
        w._task.cancel()
        return idle_claims, after[0] - start if after else float("inf")

    idle_claims, delay = asyncio.run(scenario())
    assert 3 <= idle_claims <= 8  # 20 claims/s without the back-off
    assert delay < 0.05


def test_each_failure_is_reported_as_what_it_means():
    assert settle(errors.NotReady("stopped")) == ("release_async", {"deployment_unready": True})
    assert settle(errors.Overloaded("full")) == ("release_async", {"deployment_unready": True})
    assert settle(errors.UpstreamTimeout("slow")) == ("release_async", {"error": "slow"})
    method, fields = settle(errors.PredictorFailed("boom", traceback="Traceback: x"))
    assert method == "complete_async" and fields["status"] == "FAILURE"
    assert fields["error"] == "boom" and fields["traceback"] == "Traceback: x"
    method, fields = settle(errors.BadRequest("texts: too many"))
    assert (method, fields["status"]) == ("complete_async", "FAILURE")
    assert settle(KeyError("x"))[1]["error"] == "KeyError: 'x'"


class _Remote:
    """``registry.method.remote(...)`` on a plain ``RegistryCore``, as an awaitable."""

    def __init__(self, core) -> None:
        self._core = core

    def __getattr__(self, name):
        fn = getattr(self._core, name)

        async def call(*args, **kwargs):
            return fn(*args, **kwargs)

        return _Method(call)


class FakeControl:
    """Predictions by deployment: 'healthy' answers, 'flaky' always times out, 'cold' is
    not ready (a stop the ingress saw before the registry did)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def predict(self, name, req):
        self.calls[name] += 1
        await asyncio.sleep(0.001)
        if name == "flaky":
            raise errors.UpstreamTimeout(f"deployment '{name}' did not answer within 1s")
        if name == "cold":
            raise errors.NotReady(f"deployment '{name}' is stopped")
        return {"result": req.args, "model_version": 1}


def _core(tmp_path) -> RegistryCore:
    limits = AsyncLimits(max_attempts=3, retry_base_s=0.05, max_inflight_per_deployment=4)
    core = RegistryCore(tmp_path / "r.db", async_limits=limits)
    core.register_model(
        ModelCreate(model_id="echo", kind="custom", artifact_uri="", predictor="tests.p:Echo")
    )
    for name in ("healthy", "flaky", "cold"):
        core.create_deploy_task(DeployRequest(model_id="echo", deployment_name=name))
        core.update_deployment(name, status="ACTIVE")
    return core


def test_retryable_failures_end_after_max_attempts_and_do_not_block_others(tmp_path, worker):
    w, _ = worker
    core = _core(tmp_path)
    w._registry, w._control, w._concurrency = reg_gateway(_Remote(core)), FakeControl(), 8
    cold = [core.enqueue_async("cold", PredictRequest(args={"i": i})).task_id for i in range(20)]
    flaky = core.enqueue_async("flaky", PredictRequest(args={})).task_id
    healthy = [
        core.enqueue_async("healthy", PredictRequest(args={"i": i})).task_id for i in range(30)
    ]

    async def scenario() -> None:
        await w.nudge()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if core.get_async(flaky).status != "PENDING" and all(
                core.get_async(t).status != "PENDING" for t in healthy
            ):
                break
            await asyncio.sleep(0.02)
        w._task.cancel()

    asyncio.run(scenario())
    assert [core.get_async(t).status for t in healthy] == ["SUCCESS"] * 30
    assert [core.get_async(t).result for t in healthy] == [{"i": i} for i in range(30)]
    failed = core.get_async(flaky)
    assert failed.status == "FAILURE" and failed.attempts == 3
    assert "gave up after 3 attempts" in failed.error and "did not answer" in failed.error
    assert w._control.calls["flaky"] == 3
    # The cold deployment was paused as a whole: a few tries, none of its tasks' attempts.
    assert {core.get_async(t).status for t in cold} == {"PENDING"}
    assert {core.get_async(t).attempts for t in cold} == {0}
    assert w._control.calls["cold"] < 20


class DeadRegistry:
    """A registry killed for good: every call answers ActorDiedError."""

    def __init__(self) -> None:
        self.calls = 0

        async def died(*args, **kwargs):
            self.calls += 1
            raise ActorDiedError()

        self._died = _Method(died)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._died


def test_a_registry_created_again_under_its_name_is_claimed_from_and_reported_to(tmp_path, worker):
    w, _ = worker
    core = _core(tmp_path)
    dead = DeadRegistry()
    w._registry = reg_gateway(dead, lookup=lambda: _Remote(core))
    w._control, w._concurrency = FakeControl(), 8
    ids = [core.enqueue_async("healthy", PredictRequest(args={"i": i})).task_id for i in range(5)]

    async def scenario() -> None:
        await w.nudge()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(core.get_async(t).status != "PENDING" for t in ids):
                break
            await asyncio.sleep(0.02)
        w._task.cancel()

    asyncio.run(scenario())
    assert dead.calls == 1  # the first claim found it dead; the name led to the new one
    assert [core.get_async(t).status for t in ids] == ["SUCCESS"] * 5
    assert [core.get_async(t).result for t in ids] == [{"i": i} for i in range(5)]
