"""A deployment with no running replica answers 503 at once (not 504 after request_timeout_s),
and a prediction whose replica dies under it is sent once more and answers 200."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pytest
import ray
from ray.util.state import list_actors

from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e

SERVE_NAMESPACE = "serve"


def test_a_deployment_without_a_running_replica_is_503_at_once(api, clean_serve):
    register_echo(api, "starved-echo")
    task = api.post(
        "/v1/deploy",
        json={
            "model_id": "starved-echo",
            "config": {"resources": {"num_gpus": 4}, "request_timeout_s": 30},
        },
    ).json()
    wait_for(
        lambda: api.get(f"/v1/deploy/{task['id']}").json()["detail"].get("reason"),
        60,
        "the deploy to be waiting for GPUs",
    )
    # The client gives up well before request_timeout_s (30 s): a server that waited for a
    # replica until then would fail this with a timeout instead of answering.
    resp = api.post("/v1/deployments/starved-echo/predict", json={"args": {"n": 1}}, timeout=5)
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) >= 1
    assert "no replica is running" in resp.json()["error"]["message"]


def _replicas(app: str) -> list[dict]:
    filters = [("class_name", "=", f"ServeReplica:{app}:ModelServer"), ("state", "=", "ALIVE")]
    return [asdict(a) for a in list_actors(filters=filters, detail=True)]


@pytest.mark.parametrize(
    "config",
    [
        {"num_replicas": 2},  # through the ingress batcher
        {"autoscaling": {"min_replicas": 2, "max_replicas": 2}},  # one call per request
    ],
    ids=["batched", "per-request"],
)
def test_a_prediction_whose_replica_dies_is_sent_again(api, clean_serve, config):
    register_echo(api, "mortal-echo", delay_s=2.0)
    assert deploy(api, model_id="mortal-echo", config=config)["status"] == "done"
    app = api.get("/v1/deployments/mortal-echo").json()["app_name"]
    wait_for(lambda: len(_replicas(app)) == 2, 60, "two running replicas")

    def predict(i: int):
        body = {"args": {"i": i}}
        return api.post("/v1/deployments/mortal-echo/predict", json=body, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(predict, i) for i in range(6)]
        time.sleep(1.0)  # the requests are now inside the two replicas (2 s each)
        victim = _replicas(app)[0]
        ray.kill(ray.get_actor(victim["name"], namespace=SERVE_NAMESPACE), no_restart=True)
        answers = [f.result() for f in futures]
    assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
    assert [r.json()["result"]["echo"]["i"] for r in answers] == list(range(6))
