"""GPU placement on logical GPUs (the session declares one): pending reasons and scheduling."""

from __future__ import annotations

import pytest
from ray import serve

from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e


def test_more_gpus_than_the_cluster_has_stay_pending_with_a_reason(api, clean_serve):
    register_echo(api, "greedy-echo")
    r = api.post(
        "/v1/deploy",
        # A short request timeout keeps the grace period (and so the cleanup) short.
        json={
            "model_id": "greedy-echo",
            "config": {"resources": {"num_gpus": 2}, "request_timeout_s": 5},
        },
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]

    def pending_with_reason():
        d = api.get("/v1/deployments/greedy-echo").json()
        table = d["allocation"]["routing_table"]
        reasons = [v["reason"] for v in table.values() if v["reason"]]
        return d if reasons else None

    described = wait_for(pending_with_reason, 60, "a pending replica with a reason")
    assert described["status"] != "ACTIVE"
    assert described["allocation"]["allocation_state"] == "starting"
    (replica,) = described["allocation"]["routing_table"].values()
    assert replica["routing_state"] == "starting"
    assert "GPU" in replica["reason"] and "GPU=2" in replica["reason"]
    task = wait_for(
        lambda: (t := api.get(f"/v1/deploy/{task_id}").json())["detail"].get("reason") and t,
        10,
        "the deploy task to carry the reason",
    )
    assert task["status"] == "processing"
    assert "GPU" in task["detail"]["reason"]


def test_one_gpu_replica_is_scheduled_on_the_gpu(api, clean_serve):
    register_echo(api, "gpu-echo")
    task = deploy(api, model_id="gpu-echo", config={"resources": {"num_gpus": 1, "num_cpus": 1}})
    assert task["status"] == "done", task
    info = serve.get_deployment_handle("ModelServer", "gpu-echo--v1").info.remote().result()
    assert info["gpu_ids"] == ["0"]
    # No CUDA on a logical GPU: the replica falls back to the CPU.
    assert info["device"] in ("cpu", "cuda")
    view = wait_for(
        lambda: (v := api.get("/v1/cluster").json())["gpus_free"] == 0 and v,
        30,
        "the GPU to show as taken",
    )
    assert view["gpus_total"] == 1
    resp = api.post("/v1/deployments/gpu-echo/predict", json={"args": {"k": "v"}})
    assert resp.status_code == 200 and resp.json()["result"]["echo"] == {"k": "v"}
