"""The async queue on a real SQLite store: attempts and back-off, fairness across
deployments, bounds, TTLs, and what a restart keeps."""

from __future__ import annotations

import time

import pytest

from cluster import errors
from cluster.registry import async_queue
from cluster.registry.actor import RegistryCore
from cluster.registry.async_queue import AsyncLimits, AsyncQueue, backoff_s
from cluster.registry.store import Store
from cluster.schemas import DeployRequest, ModelCreate, PredictRequest

LEASE_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_queue(tmp_path, clock, **limits) -> AsyncQueue:
    return AsyncQueue(Store(tmp_path / "r.db"), 600, AsyncLimits(**limits), clock=clock)


def req(i: int = 0) -> PredictRequest:
    return PredictRequest(args={"i": i})


def drain(queue: AsyncQueue, limit: int = 1000, skip=()) -> list:
    return queue.claim(limit, LEASE_S, skip)


def test_backoff_doubles_up_to_the_cap():
    waits = [backoff_s(n, 1.0, 10.0) for n in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_task_that_always_fails_retryably_ends_failure_after_max_attempts(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_attempts=4, retry_base_s=1.0, retry_max_s=100.0)
    task_id = queue.enqueue("d", req()).task_id
    spacing, last_claim = [], None
    for n in range(1, 5):
        claimed = drain(queue)
        while not claimed:  # not claimable during its back-off
            clock.advance(0.25)
            claimed = drain(queue)
        if last_claim is not None:
            spacing.append(clock.now - last_claim)
        last_claim = clock.now
        assert [t.task_id for t in claimed] == [task_id]
        queue.retry(task_id, f"timed out ({n})")
    task = queue.get(task_id)
    assert task.status == "FAILURE" and task.attempts == 4
    assert "gave up after 4 attempts" in task.error and "timed out (4)" in task.error
    assert spacing == [1.0, 2.0, 4.0]  # the back-off grows: not claimed before not_before
    clock.advance(1000)
    assert drain(queue) == []


def test_a_retry_is_written_before_it_is_acknowledged(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_attempts=5)
    task_id = queue.enqueue("d", req()).task_id
    drain(queue)
    queue.retry(task_id, "timed out")
    reloaded = make_queue(tmp_path, clock)
    task = reloaded.get(task_id)
    assert task.status == "PENDING" and task.attempts == 1 and task.error == "timed out"
    assert task.not_before.timestamp() == pytest.approx(clock.now + 1.0, abs=1e-3)
    assert drain(reloaded) == []  # the back-off survives the restart too
    clock.advance(1.0)
    assert [t.task_id for t in drain(reloaded)] == [task_id]


def test_claims_take_turns_across_deployments(tmp_path, clock):
    queue = make_queue(tmp_path, clock)
    for i in range(6):
        queue.enqueue("busy", req(i))
    queue.enqueue("quiet", req(100))
    claimed = queue.claim(2, LEASE_S)
    assert [t.deployment for t in claimed] == ["busy", "quiet"]


def test_a_stopped_deployments_tasks_do_not_block_a_healthy_ones(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_inflight_per_deployment=2)
    stopped = [queue.enqueue("stopped", req(i)).task_id for i in range(50)]
    healthy = [queue.enqueue("healthy", req(i)).task_id for i in range(5)]
    # Skipped: none of the stopped deployment's tasks is claimed, none spends an attempt.
    got = []
    for _ in range(5):
        batch = queue.claim(4, LEASE_S, skip=["stopped"])
        assert all(t.deployment == "healthy" for t in batch) and len(batch) <= 2
        for task in batch:
            queue.complete(task.task_id, status="SUCCESS", result=1)
            got.append(task.task_id)
    assert sorted(got) == sorted(healthy)
    assert all(queue.get(t).status == "PENDING" and queue.get(t).attempts == 0 for t in stopped)


def test_a_deployment_that_answers_not_ready_is_paused_as_a_whole(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_inflight_per_deployment=2)
    for i in range(10):
        queue.enqueue("down", req(i))
    healthy = queue.enqueue("up", req()).task_id
    first = queue.claim(1, LEASE_S)
    assert [t.deployment for t in first] == ["down"]
    queue.defer(first[0].task_id)
    # Paused: the next claims reach the healthy deployment and nothing of the paused one.
    assert [t.task_id for t in queue.claim(10, LEASE_S)] == [healthy]
    assert queue.get(first[0].task_id).attempts == 0
    clock.advance(1.0)
    again = queue.claim(10, LEASE_S)
    assert again[0].task_id == first[0].task_id  # it kept its place in line
    for task in again:
        queue.defer(task.task_id)
    clock.advance(1.0)
    assert queue.claim(10, LEASE_S) == []  # a second pause in a row is longer: 2 s
    clock.advance(1.0)
    assert len(queue.claim(10, LEASE_S)) == 2


def test_the_in_flight_cap_per_deployment_leaves_slots_for_others(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_inflight_per_deployment=3)
    for i in range(20):
        queue.enqueue("slow", req(i))
    first = queue.claim(10, LEASE_S)
    assert len(first) == 3
    fast = queue.enqueue("fast", req()).task_id
    assert [t.task_id for t in queue.claim(10, LEASE_S)] == [fast]
    queue.complete(first[0].task_id, status="SUCCESS", result=None)
    assert len(queue.claim(10, LEASE_S)) == 1


def test_a_full_queue_raises_overloaded_with_retry_after(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_pending=4, max_pending_per_deployment=3)
    for i in range(3):
        queue.enqueue("a", req(i))
    with pytest.raises(errors.Overloaded, match="async_max_pending_per_deployment") as info:
        queue.enqueue("a", req())
    assert info.value.retry_after_s > 0
    queue.enqueue("b", req())
    with pytest.raises(errors.Overloaded, match=r"async_max_pending\)"):
        queue.enqueue("c", req())
    # A finished task frees its place.
    task = drain(queue, 1)[0]
    queue.complete(task.task_id, status="SUCCESS", result=None)
    queue.enqueue("c", req())


def test_expired_pending_tasks_end_failure_with_a_reason(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(async_queue, "MAINTAIN_BATCH", 3)
    queue = make_queue(tmp_path, clock, pending_ttl_s=60, max_attempts=5)
    old = [queue.enqueue("d", req(i)).task_id for i in range(5)]
    drain(queue, 1)
    queue.retry(old[0], "timed out")
    clock.advance(30)
    young = queue.enqueue("d", req()).task_id
    clock.advance(31)
    queue.maintain()  # a bounded pass: 3 of the 5, the next pass at once
    assert sum(queue.get(t).status == "FAILURE" for t in old) == 3
    queue.maintain()
    for task_id in old:
        task = queue.get(task_id)
        assert task.status == "FAILURE" and "expired" in task.error
        assert "async_pending_ttl_s" in task.error
    assert "last error: timed out" in queue.get(old[0]).error
    assert queue.get(young).status == "PENDING"
    assert [t.task_id for t in drain(queue)] == [young]
    assert make_queue(tmp_path, clock).get(old[1]).status == "FAILURE"  # written


def test_expired_requests_give_their_places_in_a_full_queue_back(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_pending=2, pending_ttl_s=60)
    first = [queue.enqueue(f"d{i}", req(i)).task_id for i in range(2)]
    with pytest.raises(errors.Overloaded):
        queue.enqueue("d2", req())
    clock.advance(61)
    queue.enqueue("d2", req())  # no worker claimed meanwhile: the enqueue expires them
    assert {queue.get(t).status for t in first} == {"FAILURE"}


def test_results_are_purged_after_their_ttl_without_a_scan_per_completion(tmp_path, clock):
    queue = AsyncQueue(Store(tmp_path / "r.db"), 100, AsyncLimits(), clock=clock)
    ids = [queue.enqueue("d", req(i)).task_id for i in range(3)]
    for task in drain(queue):
        queue.complete(task.task_id, status="SUCCESS", result=task.request.args)
    clock.advance(101)
    queue.maintain()
    for task_id in ids:
        with pytest.raises(errors.NotFound):
            queue.get(task_id)
    with pytest.raises(errors.NotFound):
        make_queue(tmp_path, clock).get(ids[0])


def test_purging_runs_at_most_every_few_seconds(tmp_path, clock, monkeypatch):
    queue = make_queue(tmp_path, clock)
    passes = []
    real = queue._purge
    monkeypatch.setattr(queue, "_purge", lambda now: passes.append(now) or real(now))
    for i in range(20):
        task = queue.enqueue("d", req(i))
        drain(queue)
        queue.complete(task.task_id, status="SUCCESS", result=None)
        clock.advance(0.5)
    assert 2 <= len(passes) <= 3  # 10 s of completions, a pass every MAINTAIN_EVERY_S


def test_a_restart_keeps_pending_tasks_and_their_attempts(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_attempts=3)
    a = queue.enqueue("d", req(1)).task_id
    b = queue.enqueue("d", req(2)).task_id
    drain(queue)
    queue.retry(a, "timed out")
    queue.complete(b, status="SUCCESS", result={"ok": True})
    restarted = make_queue(tmp_path, clock, max_attempts=3)
    assert restarted.get(a).attempts == 1 and restarted.get(a).status == "PENDING"
    assert restarted.get(b).result == {"ok": True}
    clock.advance(1.0)
    assert [t.task_id for t in drain(restarted)] == [a]
    restarted.retry(a, "timed out again")
    clock.advance(2.0)
    drain(restarted)
    restarted.retry(a, "timed out a third time")
    assert restarted.get(a).status == "FAILURE" and restarted.get(a).attempts == 3


def test_a_duplicate_completion_is_ignored_and_a_lost_lease_counts_an_attempt(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_attempts=5)
    task_id = queue.enqueue("d", req()).task_id
    drain(queue)
    clock.advance(LEASE_S + async_queue.MAINTAIN_EVERY_S)
    queue.maintain()  # the worker never answered: the lease ran out
    task = queue.get(task_id)
    assert task.attempts == 1 and "lease" in task.error
    clock.advance(1.0)
    assert [t.task_id for t in drain(queue)] == [task_id]
    queue.complete(task_id, status="SUCCESS", result=1)
    queue.complete(task_id, status="FAILURE", error="late duplicate")
    assert queue.get(task_id).status == "SUCCESS" and queue.get(task_id).result == 1


def test_claims_stay_cheap_on_a_large_queue(tmp_path, clock):
    """Each claim looks at the few deployments and tasks it hands out, not the whole queue:
    counted in tasks read, not timed."""
    queue = make_queue(tmp_path, clock)
    with queue._store.transaction():  # one commit for the lot
        for i in range(20_000):
            queue.enqueue(f"d{i % 4}", req(i))
    reads = 0
    real_get = queue._tasks.get

    def counting_get(key, default=None):
        nonlocal reads
        reads += 1
        return real_get(key, default)

    queue._tasks = _CountingDict(queue._tasks, counting_get)
    claimed = queue.claim(8, LEASE_S)
    assert len(claimed) == 8 and reads <= 16


class _CountingDict(dict):
    def __init__(self, data, get) -> None:
        super().__init__(data)
        self._get = get

    def get(self, key, default=None):
        return self._get(key, default)


def _registry(tmp_path, limits: AsyncLimits | None = None) -> RegistryCore:
    reg = RegistryCore(tmp_path / "reg.db", async_limits=limits)
    model = ModelCreate(
        model_id="echo", kind="custom", artifact_uri="", predictor="tests.predictors:Echo"
    )
    reg.register_model(model)
    for name in ("healthy", "stopped", "gone"):
        reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name=name))
        reg.update_deployment(name, status="ACTIVE")
    return reg


def test_the_registry_skips_stopped_deployments_and_fails_deleted_ones(tmp_path):
    reg = _registry(tmp_path)
    stopped = [reg.enqueue_async("stopped", req(i)).task_id for i in range(3)]
    gone = [reg.enqueue_async("gone", req(i)).task_id for i in range(3)]
    healthy = [reg.enqueue_async("healthy", req(i)).task_id for i in range(3)]
    reg.stop_deployment("stopped")
    reg.remove_deployment("gone")
    claimed = reg.claim_async(100, LEASE_S)
    assert sorted(t.task_id for t in claimed) == sorted(healthy)
    for task_id in gone:
        view = reg.get_async(task_id)
        assert view.status == "FAILURE" and view.error == "deployment 'gone' was deleted"
    assert {reg.get_async(t).status for t in stopped} == {"PENDING"}


def test_the_registry_counts_attempts_through_release(tmp_path, clock):
    reg = _registry(tmp_path, AsyncLimits(max_attempts=2))
    reg._async._clock = clock
    task_id = reg.enqueue_async("healthy", req()).task_id
    reg.claim_async(1, LEASE_S)
    reg.release_async(task_id, deployment_unready=True)
    assert reg.get_async(task_id).attempts == 0  # a deployment not ready spends nothing
    assert reg.claim_async(1, LEASE_S) == []  # the deployment's pause
    clock.advance(1.0)
    reg.claim_async(1, LEASE_S)
    reg.release_async(task_id, error="timed out")
    assert reg.get_async(task_id).attempts == 1
    clock.advance(1.0)
    assert [t.task_id for t in reg.claim_async(1, LEASE_S)] == [task_id]
    reg.release_async(task_id, error="timed out")
    view = reg.get_async(task_id)
    assert view.status == "FAILURE" and view.attempts == 2 and "timed out" in view.error


def test_a_lease_outlives_the_deployments_request_timeout(tmp_path, clock):
    reg = _registry(tmp_path)
    reg._async._clock = clock
    slow = reg.get_deployment("healthy").config.model_copy(update={"request_timeout_s": 300})
    reg.update_deployment("healthy", config=slow)
    task_id = reg.enqueue_async("healthy", req()).task_id
    assert [t.task_id for t in reg.claim_async(1, LEASE_S)] == [task_id]
    clock.advance(300)  # far past LEASE_S, still within the prediction's own bound
    reg._async.maintain()
    assert reg.get_async(task_id).attempts == 0
    clock.advance(2 * 300 + 10)
    reg._async.maintain()
    assert reg.get_async(task_id).attempts == 1


def keyed(request_id: str | None, i: int = 0) -> PredictRequest:
    return PredictRequest(args={"i": i}, request_id=request_id)


def test_a_repeated_enqueue_with_a_request_id_answers_the_first_task(tmp_path, clock):
    queue = make_queue(tmp_path, clock, max_pending=10, max_pending_per_deployment=2)
    first = queue.enqueue("a", keyed("r1"))
    assert queue.enqueue("a", keyed("r1", i=1)).task_id == first.task_id
    assert queue.pending_count() == 1
    # Another deployment, another id, or no id at all: new tasks.
    assert queue.enqueue("b", keyed("r1")).task_id != first.task_id
    assert queue.enqueue("a", keyed("r2")).task_id != first.task_id
    assert queue.pending_count() == 3
    # The deployment is full now; a repeat still answers its task, not 429.
    assert queue.enqueue("a", keyed("r1")).task_id == first.task_id
    with pytest.raises(errors.Overloaded):
        queue.enqueue("a", keyed(None))


def test_a_request_id_is_remembered_across_a_restart_and_until_its_result_is_purged(
    tmp_path, clock
):
    queue = make_queue(tmp_path, clock)
    first = queue.enqueue("a", keyed("r1"))
    again = make_queue(tmp_path, clock)  # the registry restarted, Ray re-runs the enqueue
    assert again.enqueue("a", keyed("r1")).task_id == first.task_id
    task = drain(again, 1)[0]
    again.complete(task.task_id, status="SUCCESS", result={"ok": 1})
    done = again.enqueue("a", keyed("r1"))
    assert (done.task_id, done.status) == (first.task_id, "SUCCESS")
    clock.advance(601)  # past the result TTL: the result and the id are forgotten
    again.maintain()
    fresh = again.enqueue("a", keyed("r1"))
    assert fresh.task_id != first.task_id and fresh.status == "PENDING"
    assert make_queue(tmp_path, clock).enqueue("a", keyed("r1")).task_id == fresh.task_id
