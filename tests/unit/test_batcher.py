"""The ingress batcher: gathering, limits, 429s, timeouts and failures, with a fake send."""

from __future__ import annotations

import asyncio

import pytest

from cluster import errors
from cluster.ingress.batcher import Batcher, Limits
from cluster.schemas import DeploymentConfig


class FakeReplica:
    """Answers each batch after ``delay_s``; records the batches it got."""

    def __init__(self, delay_s: float = 0.01, fail_with: Exception | None = None) -> None:
        self.delay_s = delay_s
        self.fail_with = fail_with
        self.batches: list[list[dict]] = []
        self.concurrent = self.max_concurrent = 0  # calls
        self.items = self.max_items = 0  # requests inside those calls

    async def send(self, batch: list[dict]) -> list[dict]:
        self.batches.append(batch)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.items += len(batch)
        self.max_items = max(self.max_items, self.items)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail_with is not None:
                raise self.fail_with
            return [{"ok": True, "result": args["i"]} for args in batch]
        finally:
            self.concurrent -= 1
            self.items -= len(batch)


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_goes_at_once_and_alone():
    replica = FakeReplica()
    batcher = Batcher("d", replica.send, Limits())
    assert run(batcher.submit({"i": 7}, 5)) == {"ok": True, "result": 7}
    assert replica.batches == [[{"i": 7}]]


def test_concurrent_requests_leave_together_in_order_with_their_own_answers():
    replica = FakeReplica(delay_s=0.05)
    batcher = Batcher("d", replica.send, Limits(max_batch_size=32, max_ongoing_requests=64))

    async def main():
        return await asyncio.gather(*(batcher.submit({"i": i}, 5) for i in range(100)))

    answers = run(main())
    assert [a["result"] for a in answers] == list(range(100))
    sizes = [len(b) for b in replica.batches]
    assert sum(sizes) == 100 and max(sizes) == 32
    assert len(replica.batches) < 10  # gathered, not one call per request
    assert replica.max_concurrent <= Limits().calls  # two calls per replica at most


def test_in_flight_requests_stay_within_replicas_times_max_ongoing():
    replica = FakeReplica(delay_s=0.02)
    limits = Limits(replicas=1, max_ongoing_requests=4, max_batch_size=4, max_queued_requests=-1)
    batcher = Batcher("d", replica.send, limits)

    async def main():
        await asyncio.gather(*(batcher.submit({"i": i}, 5) for i in range(20)))

    run(main())
    assert all(len(b) <= 4 for b in replica.batches)
    assert replica.max_items == 4  # never more than the one replica's max_ongoing_requests


def test_a_full_queue_answers_overloaded_at_once():
    replica = FakeReplica(delay_s=0.2)
    limits = Limits(max_ongoing_requests=1, max_queued_requests=2, max_batch_size=1)
    batcher = Batcher("d", replica.send, limits)

    async def main():
        return await asyncio.gather(
            *(batcher.submit({"i": i}, 5) for i in range(6)), return_exceptions=True
        )

    out = run(main())
    ok = [o for o in out if isinstance(o, dict)]
    rejected = [o for o in out if isinstance(o, errors.Overloaded)]
    assert len(ok) == 3 and len(rejected) == 3  # 1 in the replica, 2 queued, 3 turned away
    assert "max_queued_requests" in rejected[0].message


def test_a_slow_answer_times_out_and_a_queued_request_is_never_sent():
    replica = FakeReplica(delay_s=0.5)
    limits = Limits(max_ongoing_requests=1, max_batch_size=1)
    batcher = Batcher("d", replica.send, limits)

    async def main():
        return await asyncio.gather(
            batcher.submit({"i": 0}, 0.1), batcher.submit({"i": 1}, 0.1), return_exceptions=True
        )

    out = run(main())
    assert all(isinstance(o, errors.UpstreamTimeout) for o in out)
    assert "request_timeout_s" in out[0].message
    assert replica.batches == [[{"i": 0}]]  # the queued one expired before a slot opened
    assert batcher.waiting == 0


def test_a_failed_call_fails_its_batch_and_the_batcher_goes_on():
    replica = FakeReplica(fail_with=RuntimeError("replica died"))
    batcher = Batcher("d", replica.send, Limits())
    with pytest.raises(RuntimeError, match="replica died"):
        run(batcher.submit({"i": 1}, 5))
    replica.fail_with = None
    assert run(batcher.submit({"i": 2}, 5))["result"] == 2


def test_limits_from_a_deployment_config():
    config = DeploymentConfig(num_replicas=3, max_ongoing_requests=8, max_batch_size=8)
    assert config.ingress_limits() == {
        "replicas": 3,
        "max_ongoing_requests": 8,
        "max_queued_requests": 256,
        "max_batch_size": 8,
    }
    autoscaled = DeploymentConfig(autoscaling={"min_replicas": 1, "max_replicas": 4})
    assert autoscaled.ingress_limits() is None


class DyingReplica(FakeReplica):
    """Fails its first ``deaths`` calls with ``error``, then answers."""

    def __init__(self, deaths: int, error: Exception) -> None:
        super().__init__(delay_s=0.01)
        self.deaths = deaths
        self.error = error

    async def send(self, batch: list[dict]) -> list[dict]:
        if self.deaths > 0:
            self.deaths -= 1
            self.batches.append(batch)
            raise self.error
        return await super().send(batch)


def lost(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_a_batch_whose_replica_died_is_sent_once_more_and_answers():
    replica = DyingReplica(deaths=1, error=ConnectionError("replica gone"))
    batcher = Batcher("d", replica.send, Limits(), retry_on=lost)

    async def main():
        return await asyncio.gather(*(batcher.submit({"i": i}, 5) for i in range(3)))

    answers = run(main())
    assert [a["result"] for a in answers] == [0, 1, 2]
    assert batcher.resent == 1
    died = replica.batches[0]
    assert replica.batches.count(died) == 2  # the same requests, sent again
    assert batcher._in_flight == 0 and batcher._calls == 0  # slots all given back


def test_a_second_death_reaches_the_waiters_and_there_is_no_third_try():
    replica = DyingReplica(deaths=5, error=ConnectionError("replica gone"))
    batcher = Batcher("d", replica.send, Limits(), retry_on=lost)
    with pytest.raises(ConnectionError):
        run(batcher.submit({"i": 1}, 5))
    assert len(replica.batches) == 2
    assert batcher._in_flight == 0


def test_other_failures_are_not_resent():
    replica = DyingReplica(deaths=1, error=RuntimeError("bug in the call"))
    batcher = Batcher("d", replica.send, Limits(), retry_on=lost)
    with pytest.raises(RuntimeError):
        run(batcher.submit({"i": 1}, 5))
    assert len(replica.batches) == 1 and batcher.resent == 0


def test_a_request_that_timed_out_is_not_resent():
    class SlowDeath(FakeReplica):
        calls = 0

        async def send(self, batch):
            self.calls += 1
            self.batches.append(batch)
            if self.calls == 1:
                await asyncio.sleep(0.2)  # past the request's 0.05 s
                raise ConnectionError("replica gone")
            return [{"ok": True, "result": a["i"]} for a in batch]

    replica = SlowDeath()
    batcher = Batcher("d", replica.send, Limits(), retry_on=lost)

    async def main():
        with pytest.raises(errors.UpstreamTimeout):
            await batcher.submit({"i": 1}, 0.05)
        await asyncio.sleep(0.3)

    run(main())
    assert replica.batches == [[{"i": 1}]]
    assert batcher._in_flight == 0
