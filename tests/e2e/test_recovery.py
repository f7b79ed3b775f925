"""Nothing is lost: a killed registry and a whole-cluster restart bring everything back."""

from __future__ import annotations

import pytest
import ray

from cluster.registry.actor import registry_handle
from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e


def _snapshot(api) -> tuple[dict, dict]:
    deployments = {d["name"]: d["status"] for d in api.get("/v1/deployments").json()}
    return deployments, {m["model_id"]: m["versions"] for m in api.get("/v1/models").json()}


def test_registry_killed_mid_run_comes_back_with_everything(api, clean_serve):
    register_echo(api, "durable-echo")
    done = deploy(api, model_id="durable-echo")
    assert done["status"] == "done"
    # One more task still open when the registry dies: a deployment waiting for GPUs.
    register_echo(api, "durable-pending")
    pending = api.post(
        "/v1/deploy",
        json={
            "model_id": "durable-pending",
            "config": {"resources": {"num_gpus": 4}, "request_timeout_s": 5},
        },
    ).json()
    wait_for(
        lambda: api.get(f"/v1/deploy/{pending['id']}").json()["detail"].get("reason"),
        60,
        "the pending deploy to be waiting for GPUs",
    )
    before = _snapshot(api)

    ray.kill(registry_handle(), no_restart=False)
    # Predictions keep flowing while the registry restarts: it is not on the predict path.
    resp = api.post("/v1/deployments/durable-echo/predict", json={"args": {"n": 1}})
    assert resp.status_code == 200, resp.text

    wait_for(lambda: api.get("/v1/deployments").status_code == 200, 60, "the registry")
    assert _snapshot(api) == before
    assert api.get(f"/v1/deploy/{done['id']}").json()["status"] == "done"
    assert api.get(f"/v1/deploy/{pending['id']}").json()["status"] in ("pending", "processing")
    # And it keeps working: a new deploy goes through.
    register_echo(api, "after-restart")
    assert deploy(api, model_id="after-restart")["status"] == "done"


def test_whole_cluster_restart_then_up_restores_every_deployment(api, local_cluster, clean_serve):
    register_echo(api, "restore-a")
    register_echo(api, "restore-b")
    for model in ("restore-a", "restore-b"):
        assert deploy(api, model_id=model)["status"] == "done"
    tasks_before = {t: api.get(f"/v1/deploy-status/{t}").json()["id"] for t in ("restore-a",)}

    local_cluster.restart()  # ray.shutdown() + a fresh ray.init() + the `up` sequence

    def both_active():
        resp = api.get("/v1/deployments")
        assert resp.status_code == 200, resp.text
        d = {x["name"]: x["status"] for x in resp.json()}
        return d.get("restore-a") == "ACTIVE" and d.get("restore-b") == "ACTIVE"

    wait_for(both_active, 180, "both deployments ACTIVE again after the restart")
    for model in ("restore-a", "restore-b"):
        resp = api.post(f"/v1/deployments/{model}/predict", json={"args": {"m": model}})
        assert resp.status_code == 200, resp.text
    assert api.get("/v1/deploy-status/restore-a").json()["id"] == tasks_before["restore-a"]
