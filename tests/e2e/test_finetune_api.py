"""Fine-tuning through the API: Ray Jobs tracked by the registry, promoted under load."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.support import (
    API_KEY,
    FINAL,
    PAIRS,
    deploy,
    finetune_task,
    wait_finetune_status,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _ended(task: dict) -> dict | None:
    return task if task["status"] in FINAL else None


class PredictLoad:
    """Clients predicting in a loop until stopped; every answer and every exception counts."""

    def __init__(self, url: str, name: str, clients: int = 3) -> None:
        self.url, self.name, self.clients = url, name, clients
        self.answers: list[tuple[float, int, int | None, str]] = []  # sent, status, version
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"args": {"texts": ["what does part 3 do?"]}}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(f"/v1/deployments/{self.name}/predict", json=body)
                    ok = r.status_code == 200 and r.json().get("status") == "SUCCESS"
                    version = r.json().get("model_version") if ok else None
                    self.answers.append((sent, r.status_code, version, r.text[:300]))
                except Exception as exc:  # a dropped connection is a failed request too
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def __enter__(self) -> PredictLoad:
        for _ in range(self.clients):
            self._threads.append(threading.Thread(target=self._run, daemon=True))
            self._threads[-1].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def failures(self) -> list:
        return [a for a in self.answers if a[1] != 200 or a[2] is None] + self.errors


@pytest.fixture(scope="module")
def tiny_deployed(api, tiny_model):
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
    serving = api.get("/v1/deployments/tiny-live").json()["model_version"]
    with PredictLoad(local_cluster.url, "tiny-live") as load:
        assert finetune_task(api, task_id)["status"] in ("pending", "processing")
        done = wait_finetune_status(api, task_id, FINAL, 600)
        assert done["status"] == "done", done
        promotion = done["detail"]["promotion"]
        assert promotion["promoted"] is True, promotion
        rollout = wait_for(
            lambda: _ended(api.get(f"/v1/tasks/{promotion['rollout_task']}").json()),
            240,
            "the promotion's rollout to end",
        )
        assert rollout["status"] == "done", rollout
        swapped = time.monotonic()
        new = done["detail"]["model_version"]
        assert api.get("/v1/deployments/tiny-live").json()["model_version"] == new
        time.sleep(3)  # keep the load on after the swap
    assert not load.failures(), load.failures()[:5]
    versions = [a[2] for a in load.answers]
    assert versions[0] == serving and len(versions) > 100, (len(versions), versions[:3])
    after = {a[2] for a in load.answers if a[0] > swapped}
    assert after == {new}, after
    print(f"{len(versions)} predictions under load, none failed; {versions.count(new)} by v{new}")
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
    refused = wait_finetune_status(api, r.json()["id"], FINAL, 30)
    assert refused["status"] == "refused" and "GPU" in refused["error"]
