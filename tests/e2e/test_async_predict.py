"""Async predictions: a durable queue that survives a registry restart."""

from __future__ import annotations

import pytest
import ray

from cluster.registry.actor import registry_handle
from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e


def test_async_requests_all_succeed_across_a_registry_kill(api, clean_serve):
    register_echo(api, "async-echo", delay_s=0.02)
    assert deploy(api, model_id="async-echo")["status"] == "done"
    ids = []
    for i in range(200):
        if i == 100:
            ray.kill(registry_handle(), no_restart=False)
        r = api.post("/v1/deployments/async-echo/async-predict", json={"args": {"i": i}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["task_id"])

    def all_done():
        states = [api.get(f"/v1/async-tasks/{t}").json() for t in ids]
        return states if all(s["status"] != "PENDING" for s in states) else None

    states = wait_for(all_done, 180, "every async task to finish", interval_s=1)
    assert [s["status"] for s in states] == ["SUCCESS"] * 200
    assert [s["result"]["echo"]["i"] for s in states] == list(range(200))


def test_async_failure_carries_the_traceback_and_unknown_ids_404(api, clean_serve):
    register_echo(api, "async-fail")
    assert deploy(api, model_id="async-fail")["status"] == "done"
    task_id = api.post(
        "/v1/deployments/async-fail/async-predict", json={"args": {"fail": True}}
    ).json()["task_id"]
    state = wait_for(
        lambda: (s := api.get(f"/v1/async-tasks/{task_id}").json())["status"] != "PENDING" and s,
        60,
        "the failing task",
    )
    assert state["status"] == "FAILURE" and "asked to fail" in state["error"]
    assert "Traceback" in state["traceback"]
    assert api.get("/v1/async-tasks/async-nope").status_code == 404
    r = api.post("/v1/deployments/no-such/async-predict", json={"args": {}})
    assert r.status_code == 404


def test_a_retried_async_request_with_a_request_id_is_queued_once(api, clean_serve):
    register_echo(api, "async-once")
    assert deploy(api, model_id="async-once")["status"] == "done"
    body = {"args": {"i": 1}, "request_id": "client-retry-1"}
    first = api.post("/v1/deployments/async-once/async-predict", json=body)
    assert first.status_code == 202, first.text
    # A registry restart between the two: Ray may re-run the enqueue, the client may retry.
    ray.kill(registry_handle(), no_restart=False)
    again = wait_for(
        lambda: (
            (r := api.post("/v1/deployments/async-once/async-predict", json=body)).status_code
            == 202
            and r
        ),
        60,
        "the enqueue to be answered after the registry restart",
    )
    assert again.json()["task_id"] == first.json()["task_id"]
    other = api.post("/v1/deployments/async-once/async-predict", json={"args": {"i": 2}})
    assert other.json()["task_id"] != first.json()["task_id"]
    task_id = first.json()["task_id"]
    state = wait_for(
        lambda: (s := api.get(f"/v1/async-tasks/{task_id}").json())["status"] != "PENDING" and s,
        60,
        "the task to finish",
    )
    assert state["status"] == "SUCCESS" and state["result"]["echo"] == {"i": 1}
