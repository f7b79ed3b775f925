"""The async queue is fair and bounded on a real cluster: a stopped deployment's requests
wait without holding up a healthy one's, a deleted one's end FAILURE, and a request that
always times out ends FAILURE after its attempts."""

from __future__ import annotations

import pytest

from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e


def _enqueue(api, name: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        r = api.post(f"/v1/deployments/{name}/async-predict", json={"args": {"i": i}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["task_id"])
    return ids


def _states(api, ids: list[str]) -> list[dict]:
    return [api.get(f"/v1/async-tasks/{t}").json() for t in ids]


def _all_final(api, ids: list[str]):
    states = _states(api, ids)
    return states if all(s["status"] != "PENDING" for s in states) else None


def test_a_stopped_deployment_does_not_hold_up_a_healthy_one(api, clean_serve):
    for name in ("fair-healthy", "fair-stopped"):
        register_echo(api, name, delay_s=0.01)
        assert deploy(api, model_id=name)["status"] == "done"
    assert api.post("/v1/deployments/fair-stopped/stop").json()["status"] == "STOPPED"
    # The stopped deployment's requests are queued first: oldest-first claims would take
    # every worker slot with them.
    stopped = _enqueue(api, "fair-stopped", 150)
    healthy = _enqueue(api, "fair-healthy", 50)

    states = wait_for(lambda: _all_final(api, healthy), 60, "the healthy deployment's tasks")
    assert [s["status"] for s in states] == ["SUCCESS"] * 50
    assert [s["result"]["echo"]["i"] for s in states] == list(range(50))
    waiting = _states(api, stopped)
    assert {s["status"] for s in waiting} == {"PENDING"}
    assert {s["attempts"] for s in waiting} == {0}  # waiting spends no attempts

    # Started again, the waiting requests are served.
    assert api.post("/v1/deployments/fair-stopped/start").status_code == 200

    def active():
        return api.get("/v1/deployments/fair-stopped").json()["status"] == "ACTIVE"

    wait_for(active, 180, "the stopped deployment to be ACTIVE again")
    states = wait_for(lambda: _all_final(api, stopped), 120, "the restarted deployment's tasks")
    assert [s["status"] for s in states] == ["SUCCESS"] * 150


def test_a_deleted_deployments_pending_requests_end_failure(api, clean_serve):
    register_echo(api, "fair-deleted")
    assert deploy(api, model_id="fair-deleted")["status"] == "done"
    assert api.post("/v1/deployments/fair-deleted/stop").json()["status"] == "STOPPED"
    ids = _enqueue(api, "fair-deleted", 20)
    r = api.post("/v1/delete", json={"deployment_name": "fair-deleted", "reason": "test"})
    assert r.status_code == 202, r.text
    states = wait_for(lambda: _all_final(api, ids), 120, "the deleted deployment's tasks")
    assert {s["status"] for s in states} == {"FAILURE"}
    assert {s["error"] for s in states} == {"deployment 'fair-deleted' was deleted"}


def test_a_request_that_always_times_out_ends_failure_after_its_attempts(
    api, clean_serve, local_cluster
):
    # Every call takes 3 s against a 0.5 s request timeout: a retryable error, every time.
    register_echo(api, "fair-slow", delay_s=3.0)
    task = deploy(api, model_id="fair-slow", config={"request_timeout_s": 0.5})
    assert task["status"] == "done", task
    (task_id,) = _enqueue(api, "fair-slow", 1)
    attempts = local_cluster.settings.async_max_attempts
    # Back-off 1, 2, 4 ... s between tries (capped at 60 s), plus each try's 0.5 s.
    bound = sum(min(60, 2**n) for n in range(attempts - 1)) + attempts + 60
    (state,) = wait_for(lambda: _all_final(api, [task_id]), bound, "the always-failing task")
    assert state["status"] == "FAILURE" and state["attempts"] == attempts
    assert f"gave up after {attempts} attempts" in state["error"]
    assert "did not answer within 0.5s" in state["error"]
