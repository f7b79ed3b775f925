"""Fine-tuning through the API: Ray Jobs tracked by the registry, promoted under load."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import deploy, wait_for
from tests.e2e.test_finetune_job import PAIRS, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

FINAL = ("done", "failed", "canceled", "refused")


def _task(api, task_id: str) -> dict:
    return api.get(f"/v1/fine-tuning/task/{task_id}").json()


def _wait_status(api, task_id: str, statuses, timeout_s: float) -> dict:
    seen = {}

    def reached():
        seen.update(_task(api, task_id))
        return seen["status"] in statuses and dict(seen)

    try:
        return wait_for(reached, timeout_s, f"task {task_id} to be {statuses}", interval_s=0.5)
    except BaseException:
        print(
            "last state:",
            {k: v for k, v in seen.items() if k != "detail"},
            {k: v for k, v in seen.get("detail", {}).items() if k not in ("request", "history")},
        )
        raise


@pytest.fixture(scope="module")
def tiny_deployed(api, tiny_model):  # noqa: F811
    r = api.post(
        "/v1/models",
        json={"model_id": "tiny-st", "kind": "sentence-transformer", "artifact_uri": tiny_model},
    )
    assert r.status_code in (201, 409), r.text
    task = deploy(api, model_id="tiny-st", deployment_name="tiny-live")
    assert task["status"] == "done", task
    yield "tiny-st"
    api.post("/v1/delete", json={"deployment_name": "tiny-live"})


@pytest.mark.timeout(900)
def test_finetune_is_idempotent_then_done_and_promoted_under_load(
    api, local_cluster, tiny_deployed
):
    body = {
        "embedding_model_id": "tiny-st",
        "dataset": {"pairs": PAIRS},
        "params": {"max_steps": 6, "batch_size": 8, "checkpoint_every_steps": 2},
        "idempotency_key": "ft-once",
        "deploy_to": "tiny-live",
    }
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: api.post("/v1/fine-tuning/task", json=body), range(20)))
    assert {r.status_code for r in answers} == {202}
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    (task_id,) = ids
    changed = {**body, "params": {**body["params"], "max_steps": 7}}
    conflict = api.post("/v1/fine-tuning/task", json=changed)
    assert conflict.status_code == 409 and "ft-once" in conflict.json()["error"]["message"]
    listed = api.get("/v1/fine-tuning/task", params={"limit": 500}).json()
    assert [t["id"] for t in listed["items"] if t["idempotency_key"] == "ft-once"] == [task_id]

    # The new version goes live only through the green rollout; skip the metric check so a
    # tiny random model is promoted whatever its score.
    api.patch("/v1/deployments/tiny-live", json={"skip_metrics_check": True})
    done = _wait_status(api, task_id, FINAL, 600)
    assert done["status"] == "done", done
    promotion = done["detail"]["promotion"]
    assert promotion["promoted"] is True, promotion
    wait_for(
        lambda: (
            api.get("/v1/deployments/tiny-live").json()["model_version"]
            == done["detail"]["model_version"]
        ),
        240,
        "the fine-tuned version to be live",
    )
    detail = done["detail"]
    assert detail["progress"]["step"] == 6 and detail["progress"]["percent"] == 100.0
    assert set(detail["metrics_before"]) >= {"recall@1", "mrr"}
    assert set(detail["metrics_after"]) >= {"recall@1", "mrr"}
    assert [p["step"] for p in detail["history"]][-1] == 6
    version = api.get("/v1/models/tiny-st/versions").json()[-1]
    assert version["version"] == detail["model_version"] and version["source"] == task_id
    assert version["metrics"] == detail["metrics_after"]
    assert "step" in api.get(f"/v1/fine-tuning/task/{task_id}/logs").json()["logs"]


def test_bad_datasets_are_422_naming_the_line(api, local_cluster, tiny_deployed):
    bad_inline = [*PAIRS[:5], {"anchor": "only an anchor"}]
    r = api.post(
        "/v1/fine-tuning/task",
        json={"embedding_model_id": "tiny-st", "dataset": {"pairs": bad_inline}},
    )
    assert r.status_code == 422 and "pairs[5]" in r.json()["error"]["message"], r.text
    root = local_cluster.settings.root
    path = root / "bad.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    r = api.post(
        "/v1/fine-tuning/task",
        json={"embedding_model_id": "tiny-st", "dataset": {"uri": str(path)}},
    )
    assert r.status_code == 422 and "line 2" in r.json()["error"]["message"], r.text
    r = api.post(
        "/v1/fine-tuning/task",
        json={"embedding_model_id": "tiny-st", "dataset": {"uri": "/etc/passwd"}},
    )
    assert r.status_code == 422 and "storage root" in r.json()["error"]["message"]


def test_more_gpus_than_the_cluster_has_is_refused(api, tiny_deployed):
    r = api.post(
        "/v1/fine-tuning/task",
        json={
            "embedding_model_id": "tiny-st",
            "dataset": {"pairs": PAIRS},
            "params": {"num_workers": 4, "use_gpu": True},
        },
    )
    assert r.status_code == 202, r.text
    refused = _wait_status(api, r.json()["id"], FINAL, 30)
    assert refused["status"] == "refused" and "GPU" in refused["error"]
