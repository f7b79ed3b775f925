"""Rolling green swaps under steady load: every response is counted."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.support import API_KEY, deploy, wait_for

pytestmark = pytest.mark.e2e

FAST = {"steps": [10, 50, 100], "step_interval_s": 1.0, "min_requests_per_step": 5}


@dataclass
class Load:
    """Several clients sending predictions in a loop; records (sent_at, status, version)."""

    url: str
    name: str
    clients: int = 4
    args: dict = field(default_factory=lambda: {"x": 1})
    results: list[tuple[float, int, int | None, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                r = client.post(f"/v1/deployments/{self.name}/predict", json={"args": self.args})
                version = r.json().get("model_version") if r.status_code == 200 else None
                self.results.append((sent, r.status_code, version, r.text[:200]))
                time.sleep(0.02)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def rate(self) -> float:
        sent = [r[0] for r in self.results]
        return len(sent) / max(max(sent) - min(sent), 1e-6)

    def failures(self) -> list:
        return [r for r in self.results if not 200 <= r[1] < 300]


def _artifact(artifact_dir, name: str, **conf) -> str:
    path = artifact_dir / f"{name}.json"
    path.write_text(json.dumps(conf))
    return str(path)


def _add_version(api, model_id: str, artifact_uri: str) -> int:
    r = api.post(f"/v1/models/{model_id}/versions", json={"artifact_uri": artifact_uri})
    assert r.status_code == 201, r.text
    return r.json()["version"]


def _swap(api, name: str, version: int, **rollout) -> dict:
    r = api.put(
        f"/v1/deployments/{name}/model-version",
        json={"version": version, "rollout": {**FAST, **rollout}},
    )
    assert r.status_code == 202, r.text
    return r.json()


def _wait_task(api, task_id: str, timeout_s: float = 120) -> dict:
    def ended():
        body = api.get(f"/v1/tasks/{task_id}").json()
        return body if body["status"] in ("done", "failed", "canceled", "refused") else None

    return wait_for(ended, timeout_s, f"task {task_id}")


@pytest.fixture
def swap_model(api, artifact_dir, clean_serve):
    """A Versioned model with v1 deployed as 'swap' (one replica)."""
    model_id = f"swap-{artifact_dir.name[-8:]}".lower().replace("_", "-")
    r = api.post(
        "/v1/models",
        json={
            "model_id": model_id,
            "kind": "custom",
            "predictor": "tests.predictors:Versioned",
            "artifact_uri": _artifact(artifact_dir, "v1", delay_s=0.01),
        },
    )
    assert r.status_code == 201, r.text
    task = deploy(api, model_id=model_id, deployment_name="swap")
    assert task["status"] == "done", task
    return model_id


def test_green_swap_under_load_drops_nothing_then_bad_versions_roll_back(
    api, local_cluster, swap_model, artifact_dir
):
    v2 = _add_version(api, swap_model, _artifact(artifact_dir, "v2", delay_s=0.01))
    with Load(local_cluster.url, "swap") as load:
        time.sleep(1.0)
        task = _swap(api, "swap", v2)
        described = api.get("/v1/deployments/swap").json()
        assert described["pending_model_version"] == v2
        done = _wait_task(api, task["id"])
        done_at = time.monotonic()
        time.sleep(1.5)
    assert done["status"] == "done", done
    assert load.rate() >= 20, load.rate()
    assert load.failures() == []
    after = [r for r in load.results if r[0] > done_at]
    assert after and {r[2] for r in after} == {v2}
    described = api.get("/v1/deployments/swap").json()
    assert described["model_version"] == v2 and described["pending_model_version"] is None
    events = [e["type"] for e in api.get("/v1/deployments/swap/events").json()]
    assert events.count("rollout_step") == 3 and "rollout_done" in events

    # v3 cannot load (its artifact was removed after it was registered, which registration
    # cannot see): the swap fails with the loader's error and traffic never leaves v2.
    gone = _artifact(artifact_dir, "missing")
    v3 = _add_version(api, swap_model, gone)
    os.remove(gone)
    with Load(local_cluster.url, "swap") as load:
        failed = _wait_task(api, _swap(api, "swap", v3)["id"])
    assert failed["status"] == "failed"
    assert "missing.json" in failed["error"]
    assert load.failures() == []
    assert {r[2] for r in load.results} == {v2}

    # v4 loads but fails its requests: rolled back at the first step, with the measurement.
    v4 = _add_version(api, swap_model, _artifact(artifact_dir, "v4", fail=True))
    with Load(local_cluster.url, "swap") as load:
        rolled = _wait_task(api, _swap(api, "swap", v4, min_requests_per_step=20)["id"])
        time.sleep(1.0)
    assert rolled["status"] == "failed" and "rolled back at 10%" in rolled["error"]
    rollback = [e for e in api.get("/v1/deployments/swap/events").json() if e["type"] == "rollback"]
    assert rollback and rollback[-1]["data"]["error_rate"] > 0.05
    failures = load.failures()
    assert failures, "v4 got no traffic at all"
    assert all(r[1] == 500 and "broken" in r[3] for r in failures)
    assert len(failures) <= 0.3 * len(load.results), (len(failures), len(load.results))
    assert api.get("/v1/deployments/swap").json()["model_version"] == v2


def test_rollback_request_mid_swap_sends_traffic_back(api, swap_model, artifact_dir):
    v2 = _add_version(api, swap_model, _artifact(artifact_dir, "v2"))
    task = _swap(api, "swap", v2, step_interval_s=60)
    wait_for(
        lambda: api.get("/v1/deployments/swap").json()["traffic"],
        60,
        "traffic to start moving",
    )
    r = api.post("/v1/deployments/swap/rollback")
    assert r.status_code == 202, r.text
    ended = _wait_task(api, task["id"])
    assert ended["status"] == "canceled"
    d = api.get("/v1/deployments/swap?wait=true&timeout_s=30").json()
    assert d["model_version"] == 1 and d["rollout"] is None and d["status"] == "ACTIVE"


def test_no_spare_gpu_refuses_green_and_in_place_swaps(
    api, local_cluster, artifact_dir, clean_serve
):
    r = api.post(
        "/v1/models",
        json={
            "model_id": "gpu-swap",
            "kind": "custom",
            "predictor": "tests.predictors:Versioned",
            "artifact_uri": _artifact(artifact_dir, "g1"),
        },
    )
    assert r.status_code in (201, 409), r.text
    config = {"num_replicas": 2, "resources": {"num_gpus": 0.5}, "request_timeout_s": 10}
    assert deploy(api, model_id="gpu-swap", config=config)["status"] == "done"
    v2 = _add_version(api, "gpu-swap", _artifact(artifact_dir, "g2"))

    refused = _swap(api, "gpu-swap", v2)
    assert refused["status"] == "refused" and "GPU" in refused["error"]

    with Load(local_cluster.url, "gpu-swap") as load:
        done = _wait_task(api, _swap(api, "gpu-swap", v2, strategy="in_place")["id"], 180)
        time.sleep(1.0)
    assert done["status"] == "done", done
    assert load.failures() == []
    assert api.get("/v1/deployments/gpu-swap").json()["model_version"] == v2


def test_stop_frees_gpus_and_start_restores(api, artifact_dir, clean_serve):
    r = api.post(
        "/v1/models",
        json={
            "model_id": "stoppable",
            "kind": "custom",
            "predictor": "tests.predictors:Versioned",
            "artifact_uri": _artifact(artifact_dir, "s1"),
        },
    )
    assert r.status_code in (201, 409), r.text
    config = {"resources": {"num_gpus": 1}, "request_timeout_s": 5}
    assert deploy(api, model_id="stoppable", config=config)["status"] == "done"
    wait_for(lambda: api.get("/v1/cluster").json()["gpus_free"] == 0, 30, "the GPU taken")

    assert api.post("/v1/deployments/stoppable/stop").json()["status"] == "STOPPED"
    wait_for(lambda: api.get("/v1/cluster").json()["gpus_free"] == 1, 60, "the GPU freed")
    resp = api.post("/v1/deployments/stoppable/predict", json={"args": {}})
    assert resp.status_code == 503 and "stopped" in resp.json()["error"]["message"]

    api.post("/v1/deployments/stoppable/start")
    d = api.get("/v1/deployments/stoppable?wait=true&timeout_s=60").json()
    assert d["status"] == "ACTIVE"
    wait_for(
        lambda: api.post("/v1/deployments/stoppable/predict", json={"args": {}}).status_code == 200,
        10,
        "predictions after start",
    )
