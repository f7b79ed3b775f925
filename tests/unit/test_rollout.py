"""The rollout state machine (``cluster.operator.rollout.step`` / ``abort``) on hand-built inputs,
and the metric windows it judges each step by (``cluster.traffic_stats.window`` / ``merge``)."""

from __future__ import annotations

import pytest

from cluster.operator.rollout import DRAIN_GRACE_S, abort, step
from cluster.schemas import (
    Allocation,
    DeploymentConfig,
    DeploymentRecord,
)
from cluster.traffic_stats import STAT_BUCKETS_MS, merge, window
from tests.unit.rollout_support import (
    BLUE,
    FULL,
    GREEN,
    INTERVAL,
    LIVE,
    MIN_REQUESTS,
    T0,
    at,
    blue_app,
    green_app,
    in_place,
    record,
    replicas,
    shifting,
    snapshot,
    view,
)

# ---------------------------------------------------------------- starting


def test_starting_deploys_green_first():
    out = step(record(), None, Allocation(allocation_state="stopped"), view(), at(0))
    assert out.deploy == "green"
    assert out.task == {"status": "processing", "detail": {"phase": "starting"}}
    assert out.record == {} and out.delete == [] and out.events == []


@pytest.mark.parametrize(
    ("app", "alloc"),
    [
        (green_app("DEPLOYING"), Allocation(allocation_state="starting", reason="waiting for GPU")),
        (green_app("DEPLOYING"), FULL),  # replicas up but Serve not yet RUNNING
    ],
)
def test_starting_waits_until_green_is_fully_allocated_and_running(app, alloc):
    out = step(record(), app, alloc, view(), at(5))
    assert out.deploy is None and out.record == {} and out.delete == []
    assert out.task["status"] == "processing"
    assert out.task["detail"]["green_allocation"] == alloc.allocation_state
    assert out.task["detail"]["reason"] == alloc.reason


def test_green_that_fails_to_load_fails_the_task_and_is_deleted():
    alloc = Allocation(allocation_state="failed", reason="FileNotFoundError: missing.json")
    out = step(record(), green_app("DEPLOY_FAILED"), alloc, view(), at(5))
    assert out.record == {"rollout": None, "pending_model_version": None, "traffic": {}}
    assert out.delete == [GREEN]
    assert out.task["status"] == "failed"
    assert out.task["error"] == "version 2 failed to start: FileNotFoundError: missing.json"
    assert out.events == [("rollout_failed", out.task["error"], {"to_version": 2})]


def test_healthy_green_gets_the_first_step_of_traffic():
    before = snapshot(ok=7)
    out = step(record(), green_app(), FULL, view(green=before), at(5))
    r = out.record["rollout"]
    assert out.record["traffic"] == {BLUE: 90, GREEN: 10}
    assert (r.phase, r.step_index, r.step_started_at) == ("shifting", 0, at(5))
    assert r.baseline == before  # the step is judged on what comes after this
    assert out.task["detail"] == {"phase": "shifting", "step": 0, "traffic_percent": 10}
    assert out.events == [("rollout_step", "10% of traffic on v2", {"step": 0, "percent": 10})]
    assert out.deploy is None and out.delete == []


# ---------------------------------------------------------------- shifting


def test_errors_over_the_budget_abort_within_the_step():
    # 3 errors before the step are not counted; 2 of 4 in the step exceed 5% of 20.
    baseline = snapshot(ok=10, errors=3)
    now = snapshot(ok=12, errors=5)
    out = step(shifting(baseline=baseline), LIVE, FULL, view(green=now), at(2))
    r = out.record["rollout"]
    assert out.record["traffic"] == {BLUE: 100}
    assert (r.phase, r.abort_status, r.step_started_at) == ("aborting", "failed", at(2))
    assert r.abort_reason.startswith("rolled back at 10%: error rate 50.0% (2/4 requests)")
    assert "max_error_rate 5.0%" in r.abort_reason
    ((kind, message, measured),) = out.events
    assert kind == "rollback" and message == r.abort_reason
    assert measured["error_rate"] == 0.5 and measured["requests"] == 4 and measured["errors"] == 2
    assert out.task["detail"] == {"phase": "aborting", "reason": r.abort_reason}


def test_errors_within_the_budget_keep_the_step_going():
    out = step(shifting(), LIVE, FULL, view(green=snapshot(ok=5, errors=1)), at(2))
    assert "rollout" not in out.record and out.events == []
    detail = out.task["detail"]
    assert detail["phase"] == "shifting" and detail["traffic_percent"] == 10
    assert detail["window"] == {"requests": 6, "errors": 1, "error_rate": 1 / 6, "p99_ms": 5.0}


def test_p99_over_the_limit_aborts_once_enough_requests_came():
    slow = {"options": {"max_p99_latency_ms": 100}}
    few = step(shifting(**slow), LIVE, FULL, view(green=snapshot(ok=5, latency_ms=300)), at(2))
    assert "rollout" not in few.record, "5 requests are too few to judge latency"
    out = step(shifting(**slow), LIVE, FULL, view(green=snapshot(ok=20, latency_ms=300)), at(2))
    r = out.record["rollout"]
    assert r.phase == "aborting"
    assert r.abort_reason == "rolled back at 10%: p99 latency 300 ms exceeds max_p99_latency_ms 100"
    assert out.events[0][2]["p99_ms"] == 300.0


def test_a_step_that_is_over_moves_to_the_next():
    baseline = snapshot(ok=3)
    now = snapshot(ok=3 + MIN_REQUESTS)
    out = step(shifting(baseline=baseline), LIVE, FULL, view(green=now), at(INTERVAL))
    r = out.record["rollout"]
    assert out.record["traffic"] == {BLUE: 50, GREEN: 50}
    assert (r.step_index, r.step_started_at, r.baseline) == (1, at(INTERVAL), now)
    assert [e[0] for e in out.events] == ["rollout_step"]


def test_a_step_waits_for_its_time_and_its_requests():
    early = step(shifting(), LIVE, FULL, view(green=snapshot(ok=50)), at(INTERVAL - 1))
    assert "rollout" not in early.record
    quiet = step(shifting(), LIVE, FULL, view(green=snapshot(ok=5)), at(INTERVAL + 1))
    assert "rollout" not in quiet.record
    assert quiet.task["detail"]["window"]["requests"] == 5


def test_a_starved_step_advances_with_a_note():
    starved_at = 3 * INTERVAL + 10
    waiting = step(shifting(), LIVE, FULL, view(green=snapshot(ok=2)), at(starved_at - 0.5))
    assert "rollout" not in waiting.record
    out = step(shifting(), LIVE, FULL, view(green=snapshot(ok=2)), at(starved_at))
    assert out.record["rollout"].step_index == 1
    assert [e[0] for e in out.events] == ["rollout_step", "rollout_note"]
    kind, message, measured = out.events[1]
    assert "too few requests" in message and measured["requests"] == 2


def test_a_step_with_no_green_stats_yet_starves_rather_than_failing():
    out = step(shifting(), LIVE, FULL, view(), at(3 * INTERVAL + 10))
    assert out.record["rollout"].step_index == 1
    assert out.events[1][2] == {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_ms": None}


def test_after_the_last_step_all_traffic_goes_green_and_blue_drains():
    out = step(shifting(step_index=2), LIVE, FULL, view(green=snapshot(ok=30)), at(INTERVAL))
    r = out.record["rollout"]
    assert out.record["traffic"] == {GREEN: 100}
    assert (r.phase, r.step_started_at) == ("draining", at(INTERVAL))
    assert out.task["detail"]["phase"] == "draining" and out.delete == []


# ---------------------------------------------------------------- draining, aborting


def draining(**kw) -> DeploymentRecord:
    return record("draining", step_index=2, step_started_at=at(0), **kw)


@pytest.mark.parametrize(
    ("ingress", "now"),
    [
        (view(caught_up=False, blue=snapshot()), DRAIN_GRACE_S + 1),  # old weights still used
        (view(blue=snapshot(inflight=2)), DRAIN_GRACE_S + 1),  # requests still on blue
        (view(blue=snapshot()), DRAIN_GRACE_S / 2),  # too soon after the last change
    ],
)
def test_draining_waits_for_every_ingress_and_for_blue_to_empty(ingress, now):
    out = step(draining(), LIVE, FULL, ingress, at(now))
    assert out.record == {} and out.delete == []
    assert out.task["status"] == "processing" and out.task["detail"]["phase"] == "draining"


def test_drained_blue_is_deleted_and_green_becomes_the_deployment():
    out = step(draining(), LIVE, FULL, view(blue=snapshot(ok=100)), at(DRAIN_GRACE_S + 1))
    assert out.record == {
        "rollout": None,
        "pending_model_version": None,
        "traffic": {},
        "serve_app": GREEN,
        "model_version": 2,
        "previous_version": 1,
        "config": DeploymentConfig(num_replicas=2),
    }
    assert out.delete == [BLUE]
    assert out.task["status"] == "done" and out.task["detail"]["phase"] == "done"
    assert out.events[0][:2] == ("rollout_done", "now serving v2")


def test_draining_gives_up_waiting_after_the_request_timeout():
    # request_timeout_s is 5: a request in flight that long has been answered 504 anyway.
    out = step(draining(), LIVE, FULL, view(blue=snapshot(inflight=1)), at(5 + 10))
    assert out.task["status"] == "done" and out.delete == [BLUE]


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_aborting_finishes_with_the_abort_status_once_green_drained(status):
    r = record(
        "aborting", step_index=0, step_started_at=at(0), abort_reason="why", abort_status=status
    )
    busy = step(r, LIVE, FULL, view(green=snapshot(inflight=1)), at(DRAIN_GRACE_S + 1))
    assert busy.record == {} and busy.task["detail"] == {"phase": "aborting", "inflight_on_old": 1}
    out = step(r, LIVE, FULL, view(green=snapshot()), at(DRAIN_GRACE_S + 1))
    assert out.record == {"rollout": None, "pending_model_version": None, "traffic": {}}
    assert out.delete == [GREEN]
    assert out.task == {"status": status, "error": "why", "detail": {"phase": "rolled_back"}}


def test_abort_by_request_sends_traffic_back_and_cancels():
    r = shifting(step_index=1).rollout
    out = abort(r, "rolled back by request", "canceled", at(7))
    assert out.record["traffic"] == {BLUE: 100}
    assert out.record["rollout"].abort_status == "canceled"
    assert out.record["rollout"].step_started_at == at(7)  # the drain is timed from here
    assert out.record["rollout"].step_index == 1  # unchanged otherwise
    assert out.events == [("rollback", "rolled back by request", {})]


# ---------------------------------------------------------------- in place


def test_in_place_starts_by_updating_blues_own_app():
    out = step(record(strategy="in_place"), blue_app(), FULL, view(), at(100))
    assert out.deploy == "green_in_place"
    r = out.record["rollout"]
    assert (r.phase, r.step_started_at) == ("shifting", at(100))
    assert out.task["detail"] == {"phase": "replacing"} and out.delete == []


@pytest.mark.parametrize(
    "app",
    [
        blue_app(reps=replicas(T0.timestamp() + 50, T0.timestamp() + 150)),  # one old replica
        blue_app(reps=replicas(T0.timestamp() + 150)),  # one of two
        blue_app(reps=replicas(T0.timestamp() + 150, T0.timestamp() + 151, state="STARTING")),
        blue_app("DEPLOYING", reps=replicas(T0.timestamp() + 150, T0.timestamp() + 151)),
    ],
)
def test_in_place_waits_until_every_replica_is_new_and_running(app):
    out = step(in_place(), app, FULL, view(), at(200))
    assert out.record == {} and out.task == {
        "status": "processing",
        "detail": {"phase": "replacing"},
    }


def test_in_place_is_done_when_every_replica_started_after_the_swap():
    app = blue_app(reps=replicas(T0.timestamp() + 150, T0.timestamp() + 160))
    out = step(in_place(), app, FULL, view(), at(200))
    assert out.record == {
        "rollout": None,
        "pending_model_version": None,
        "model_version": 2,
        "previous_version": 1,
        "config": DeploymentConfig(num_replicas=2),
    }
    assert out.task["status"] == "done" and out.delete == [] and out.deploy is None
    assert out.events[0][:2] == ("rollout_done", "now serving v2 (in place)")


def test_in_place_deploy_failure_redeploys_blue_and_aborts():
    app = blue_app("DEPLOY_FAILED", message="RuntimeError: weights are corrupt")
    out = step(in_place(), app, FULL, view(), at(200))
    assert out.deploy == "blue_in_place"
    r = out.record["rollout"]
    assert (r.phase, r.abort_status, r.step_started_at) == ("aborting", "failed", at(200))
    assert r.abort_reason == "version 2 failed to start: RuntimeError: weights are corrupt"
    assert out.events == [("rollback", r.abort_reason, {})]

    restored = blue_app(reps=replicas(T0.timestamp() + 210, T0.timestamp() + 211))
    aborting = in_place("aborting", 200, abort_reason=r.abort_reason, abort_status="failed")
    done = step(aborting, restored, FULL, view(), at(220))
    assert done.record == {"rollout": None, "pending_model_version": None}
    assert done.task == {"status": "failed", "error": r.abort_reason}


# ---------------------------------------------------------------- metric windows


def test_window_counts_what_happened_between_two_snapshots():
    before = snapshot(ok=100, errors=5, latency_ms=3)
    after = merge([before, snapshot(ok=98, latency_ms=20), snapshot(errors=2, latency_ms=400)])
    w = window(before, after)
    assert (w["requests"], w["errors"], w["error_rate"]) == (100, 2, 0.02)
    assert w["p99_ms"] == 500.0  # the bucket bound holding the 99th request
    assert window(after, after) == {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_ms": None}


def test_window_without_a_baseline_counts_everything():
    after = snapshot(ok=9, errors=1, latency_ms=12)
    assert window({}, after) == {"requests": 10, "errors": 1, "error_rate": 0.1, "p99_ms": 15.0}


def test_a_counter_reset_starts_the_window_afresh():
    # An ingress restarted: its counters went back to zero and started again.
    before = snapshot(ok=500, errors=10)
    after = snapshot(ok=4, errors=1, latency_ms=70)
    assert window(before, after) == {"requests": 5, "errors": 1, "error_rate": 0.2, "p99_ms": 75.0}


def test_latency_past_the_last_bucket_is_infinite():
    assert window({}, snapshot(ok=1, latency_ms=STAT_BUCKETS_MS[-1] + 1))["p99_ms"] == float("inf")


def test_merge_sums_the_ingress_replicas():
    a, b = snapshot(ok=2, inflight=1), snapshot(errors=3, latency_ms=80, inflight=2)
    merged = merge([a, b])
    assert (merged["requests"], merged["errors"], merged["inflight"]) == (5, 3, 3)
    assert merged["buckets"] == [x + y for x, y in zip(a["buckets"], b["buckets"], strict=True)]
    empty = [0] * (len(STAT_BUCKETS_MS) + 1)
    assert merge([]) == {"requests": 0, "errors": 0, "inflight": 0, "buckets": empty}


def test_a_rollback_while_green_is_starting_finishes():
    r = record()  # phase starting: no step has begun
    out = abort(r.rollout, "rolled back by request", "canceled", at(0))
    aborted = r.model_copy(update=out.record)
    early = step(aborted, LIVE, FULL, view(green=snapshot()), at(DRAIN_GRACE_S / 2))
    assert early.task["status"] == "processing" and early.delete == []
    out = step(aborted, LIVE, FULL, view(green=snapshot()), at(DRAIN_GRACE_S))
    assert out.task["status"] == "canceled" and out.delete == [GREEN]
