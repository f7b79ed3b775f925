"""No state that never ends: a deployment that scales to zero is ACTIVE with no replica and
its first request wakes it; a swap whose new version can never be placed ends failed within
``rollout.start_timeout_s``, and the serving version answers again."""

from __future__ import annotations

import pytest

from tests.e2e.support import deploy, wait_for

pytestmark = pytest.mark.e2e

FINAL = ("done", "failed", "canceled", "refused")


def register_echo(api, model_id: str) -> None:
    body = {"model_id": model_id, "kind": "custom", "predictor": "tests.predictors:Echo"}
    r = api.post("/v1/models", json={**body, "artifact_uri": ""})
    assert r.status_code in (201, 409), r.text


def wait_task(api, task_id: str, timeout_s: float) -> dict:
    def ended():
        body = api.get(f"/v1/tasks/{task_id}").json()
        return body if body["status"] in FINAL else None

    return wait_for(ended, timeout_s, f"task {task_id}")


def test_scale_to_zero_is_active_with_no_replica_and_the_first_request_wakes_it(api, clean_serve):
    register_echo(api, "zero-echo")
    config = {"autoscaling": {"min_replicas": 0, "max_replicas": 1}, "request_timeout_s": 90}
    task = deploy(api, model_id="zero-echo", deployment_name="zero", config=config, timeout_s=60)
    assert task["status"] == "done", task
    described = api.get("/v1/deployments/zero").json()
    assert described["status"] == "ACTIVE"
    assert described["allocation"]["target_replicas"] == 0
    assert described["allocation"]["running_replicas"] == 0

    r = api.post("/v1/deployments/zero/predict", json={"args": {"x": 1}}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["echo"] == {"x": 1}
    described = api.get("/v1/deployments/zero").json()
    assert described["status"] == "ACTIVE"
    assert described["allocation"]["running_replicas"] == 1


def test_a_swap_that_can_never_be_placed_fails_within_its_bound_on_the_old_version(
    api, clean_serve
):
    register_echo(api, "stuck-echo")
    task = deploy(api, model_id="stuck-echo", deployment_name="stuck", timeout_s=120)
    assert task["status"] == "done", task
    huge = {"num_replicas": 1, "resources": {"num_gpus": 64}}

    # Beside the old version there is no room: refused at once, nothing changes.
    green = {"config": huge, "rollout": {"strategy": "green"}}
    r = api.patch("/v1/deployments/stuck", json=green)
    assert r.status_code == 200, r.text
    params = {"kind": "rollout", "status": "refused", "limit": 500}
    tasks = api.get("/v1/tasks", params=params).json()["items"]
    refused = [t for t in tasks if t["deployment_name"] == "stuck"][-1]
    assert refused["status"] == "refused" and "GPU=64" in refused["error"]

    # In place nothing is checked first: the new replica waits for 64 GPUs until the bound.
    in_place = {"config": huge, "rollout": {"strategy": "in_place", "start_timeout_s": 10}}
    r = api.patch("/v1/deployments/stuck", json=in_place)
    assert r.status_code == 200, r.text
    rollout = r.json()["rollout"]
    assert rollout is not None, r.json()
    failed = wait_task(api, rollout["task_id"], 90)
    assert failed["status"] == "failed", failed
    assert "did not start within 10s (rollout.start_timeout_s)" in failed["error"]
    assert "GPU" in failed["error"]

    described = api.get("/v1/deployments/stuck").json()
    assert described["status"] == "ACTIVE" and described["rollout"] is None
    assert described["config"]["resources"]["num_gpus"] == 0

    def serving():
        resp = api.post("/v1/deployments/stuck/predict", json={"args": {"x": 2}})
        return resp if resp.status_code == 200 else None

    assert wait_for(serving, 90, "the old version to answer again").json()["result"]["echo"] == {
        "x": 2
    }
