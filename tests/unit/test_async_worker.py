"""The async worker's claim loop: quick while work flows, backing off when idle, and woken
at once by a nudge from the enqueue route."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import async_worker
from cluster.async_worker import IDLE_FIRST_S, IDLE_MAX_S, AsyncWorker, next_idle_wait


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


@pytest.fixture
def worker(monkeypatch):
    monkeypatch.setattr(async_worker, "IDLE_FIRST_S", 0.05)
    monkeypatch.setattr(async_worker, "IDLE_MAX_S", 0.2)
    registry = FakeRegistry()
    w = AsyncWorker.__new__(AsyncWorker)  # no ControlPlane: nothing is claimed here
    w._registry, w._concurrency, w._lease_s = registry, 4, 1.0
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
