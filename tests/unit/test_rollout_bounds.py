"""Rollouts that can never finish end anyway: a new version whose replicas cannot be placed
or never become healthy fails after ``rollout.start_timeout_s`` with the reason, traffic on
the serving version; a Serve app of green's name that modelyard did not make is never used."""

from __future__ import annotations

from cluster.operator.rollout import step
from cluster.operator.serve_state import AppState
from cluster.schemas import Allocation
from tests.unit.rollout_support import (
    BLUE,
    FULL,
    GREEN,
    at,
    blue_app,
    green_app,
    in_place,
    record,
    replicas,
    shifting,
    view,
)

TIMEOUT = 30.0
UNPLACED = Allocation(
    allocation_state="starting",
    target_replicas=2,
    reason="insufficient GPU: each replica needs GPU=4 but the cluster has GPU=1 in total",
)


def bounded(phase: str = "starting", **kw):
    return record(phase, options={"start_timeout_s": TIMEOUT}, **kw)


def test_a_green_that_cannot_be_placed_waits_within_the_bound():
    out = step(bounded(), green_app("DEPLOYING"), UNPLACED, view(), at(TIMEOUT - 1))
    assert out.record == {} and out.delete == [] and out.task["status"] == "processing"
    assert out.task["detail"]["reason"] == UNPLACED.reason


def test_a_green_that_cannot_be_placed_fails_at_the_bound_with_traffic_on_blue():
    out = step(bounded(), green_app("DEPLOYING"), UNPLACED, view(), at(TIMEOUT))
    assert out.record == {"rollout": None, "pending_model_version": None, "traffic": {}}
    assert out.delete == [GREEN] and out.deploy is None
    assert out.task["status"] == "failed"
    assert out.task["error"] == (
        "version 2 did not start within 30s (rollout.start_timeout_s): 0 of 2 replicas "
        f"running; {UNPLACED.reason}"
    )
    assert out.events == [("rollout_failed", out.task["error"], {"to_version": 2})]


def test_a_green_placed_but_never_healthy_fails_at_the_bound():
    crash_looping = Allocation(allocation_state="started", target_replicas=2, running_replicas=1)
    out = step(bounded(), green_app("DEPLOYING"), crash_looping, view(), at(TIMEOUT + 5))
    assert out.task["status"] == "failed" and out.delete == [GREEN]
    assert (
        "1 of 2 replicas running; its replicas were placed but did not become healthy"
        in (out.task["error"])
    )


def test_a_green_that_is_ready_at_the_bound_still_gets_its_traffic():
    out = step(bounded(), green_app(), FULL, view(), at(TIMEOUT + 1))
    assert out.record["traffic"] == {BLUE: 90, GREEN: 10}


def test_a_swap_started_over_after_a_restart_gets_a_fresh_bound():
    out = step(shifting(options={"start_timeout_s": TIMEOUT}), None, FULL, view(), at(1000))
    restarted = record("starting", options={"start_timeout_s": TIMEOUT})
    restarted = restarted.model_copy(update={"rollout": out.record["rollout"]})
    assert restarted.rollout.step_started_at == at(1000)
    waiting = step(restarted, None, Allocation(allocation_state="stopped"), view(), at(1010))
    assert waiting.deploy == "green" and waiting.task["status"] == "processing"


def test_an_app_of_greens_name_that_modelyard_did_not_make_fails_the_swap_untouched():
    out = step(bounded(), green_app(), FULL, view(), at(1), green_owned=False)
    assert out.task["status"] == "failed" and out.delete == [] and out.deploy is None
    assert "'d--v2' that modelyard did not create" in out.task["error"]
    assert out.record["traffic"] == {}


def test_in_place_replicas_that_cannot_be_placed_roll_back_to_blue_at_the_bound():
    opts = {"options": {"start_timeout_s": TIMEOUT}}
    stuck = blue_app("DEPLOYING", reps=replicas(0, state="STARTING"))
    waiting = step(in_place(started=100, **opts), stuck, UNPLACED, view(), at(100 + TIMEOUT - 1))
    assert waiting.deploy is None and waiting.task["status"] == "processing"
    out = step(in_place(started=100, **opts), stuck, UNPLACED, view(), at(100 + TIMEOUT))
    assert out.deploy == "blue_in_place"
    r = out.record["rollout"]
    assert (r.phase, r.abort_status, r.step_started_at) == ("aborting", "failed", at(130))
    assert r.abort_reason.startswith("version 2 did not start within 30s")
    assert UNPLACED.reason in r.abort_reason


def test_in_place_aborting_ends_failed_at_the_bound_even_if_blue_is_not_back():
    opts = {"options": {"start_timeout_s": TIMEOUT}}
    aborting = in_place("aborting", 200, abort_reason="why", abort_status="failed", **opts)
    stuck = blue_app("DEPLOYING", reps=replicas(0, state="STARTING"))
    assert step(aborting, stuck, UNPLACED, view(), at(229)).task["status"] == "processing"
    out = step(aborting, stuck, UNPLACED, view(), at(230))
    assert out.record == {"rollout": None, "pending_model_version": None}
    assert out.task["status"] == "failed"
    assert out.task["error"].startswith("why; v1 was not fully restored within 30s")


def test_in_place_on_a_deployment_scaled_to_zero_is_done_once_serve_has_the_new_config():
    started = at(100).timestamp()
    before = AppState(name=BLUE, status="RUNNING", last_deployed=started - 5)
    stale = step(in_place(started=100), before, FULL, view(), at(101))
    assert stale.task == {"status": "processing", "detail": {"phase": "replacing"}}
    after = AppState(name=BLUE, status="RUNNING", last_deployed=started + 1)
    out = step(in_place(started=100), after, FULL, view(), at(102))
    assert out.task["status"] == "done" and out.record["model_version"] == 2
