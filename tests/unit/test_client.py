"""``cluster.client`` without a server: httpx.MockTransport answers instead."""

from __future__ import annotations

import json

import httpx
import pytest

from cluster import schemas as client_schemas
from cluster.client import (
    DEFAULT_URL,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    Deployment,
    DeploymentFailedError,
    EndpointRequest,
    ModelyardHTTPError,
    NotFoundError,
    PredictorError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFuture,
    ServerError,
    TaskPage,
    describe_task,
)
from cluster.schemas import DeploymentPublic, RolloutOptions
from tests.unit.client_support import (
    NOW,
    Server,
    deployment_body,
    error,
    make_client,
    rollout_task,
    task,
)

# ---------------------------------------------------------------- 429 retries


def test_429_is_retried_then_succeeds(no_sleep):
    answers = [error(429, "overloaded", "full"), error(429, "overloaded", "full")]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if answers else httpx.Response(200, json=task())

    with make_client(handler) as client:
        assert client.get_deploy_task("deploy-abc").status == "done"
    assert len(seen) == 3
    assert no_sleep == [0.0, 0.0]


def test_429_retries_are_bounded_then_raise(no_sleep):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            429,
            headers={"Retry-After": "2"},
            json={"error": {"type": "overloaded", "message": "queue full", "request_id": "r"}},
        )

    with make_client(handler, max_retries=2) as client, pytest.raises(RateLimitError) as info:
        client.cluster()
    assert len(calls) == 3 and no_sleep == [2.0, 2.0]
    assert info.value.retry_after == 2.0 and info.value.status_code == 429
    assert info.value.message == "queue full" and info.value.type == "overloaded"


def test_no_retries_when_max_retries_is_zero(no_sleep):
    client = make_client(lambda r: error(429, "overloaded", "x"), max_retries=0)
    with client, pytest.raises(RateLimitError):
        client.healthz()
    assert no_sleep == []


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (500, ServerError),
        (503, ServerError),
        (504, RequestTimeoutError),
        (418, ModelyardHTTPError),
    ],
)
def test_statuses_map_to_typed_errors(status, cls):
    client = make_client(lambda r: error(status, "some_type", "what went wrong"))
    with client, pytest.raises(cls) as info:
        client.get_deployment("x")
    exc = info.value
    assert type(exc) is cls
    assert (exc.status_code, exc.type, exc.message, exc.request_id) == (
        status,
        "some_type",
        "what went wrong",
        "rid-1",
    )
    assert "what went wrong" in str(exc)


def test_timeout_error_is_a_server_error_and_a_builtin_timeout():
    assert issubclass(RequestTimeoutError, ServerError)
    assert issubclass(RequestTimeoutError, TimeoutError)


def test_predictor_failure_carries_its_traceback():
    def handler(request: httpx.Request) -> httpx.Response:
        return error(500, "predictor_error", "boom", status="FAILURE", traceback="Traceback ...")

    with make_client(handler) as client, pytest.raises(PredictorError) as info:
        client.predict("echo", {"x": 1})
    assert info.value.traceback == "Traceback ..." and info.value.message == "boom"


def test_non_json_error_body_keeps_the_text():
    client = make_client(lambda r: httpx.Response(502, text="bad gateway"))
    with client, pytest.raises(ServerError) as info:
        client.cluster()
    assert info.value.message == "bad gateway" and info.value.type == ""


# ---------------------------------------------------------------- requests


def test_endpoint_request_needs_exactly_one_of_args_and_url():
    for kwargs in ({}, {"args": {"a": 1}, "url": "file:///x.json"}):
        with pytest.raises(ValueError, match="args") as info:
            EndpointRequest(**kwargs)
        assert "url" in str(info.value)
    assert EndpointRequest(url="file:///x.json").args is None


def test_predict_sends_bearer_key_and_body():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["Authorization"]
        seen["path"] = request.url.path
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"status": "SUCCESS", "result": 1, "model_version": 2,
                                         "request_id": "r9"})  # fmt: skip

    with make_client(handler) as client:
        out = client.predict("echo", {"x": None}, request_id="r9")
    assert seen == {
        "auth": "Bearer k",
        "path": "/v1/deployments/echo/predict",
        "body": {"args": {"x": None}, "request_id": "r9"},
    }
    assert (out.status, out.result, out.model_version, out.request_id) == ("SUCCESS", 1, 2, "r9")


def test_key_and_url_resolution(monkeypatch, tmp_path):
    for var in ("API_KEY", "HOST", "PORT"):
        monkeypatch.delenv(f"MODELYARD_{var}", raising=False)
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("MODELYARD_URL", "http://elsewhere:9000/")
    assert Client().api_key is None
    assert not (tmp_path / "admin.key").exists()  # the client never makes a key
    (tmp_path / "admin.key").write_text("from-file\n")
    client = Client()
    assert client.api_key == "from-file" and client.url == "http://elsewhere:9000"
    monkeypatch.setenv("MODELYARD_API_KEY", "from-env")
    assert Client().api_key == "from-env"
    assert Client(api_key="from-arg").api_key == "from-arg"
    assert Client(url="http://given:1/").url == "http://given:1"
    monkeypatch.delenv("MODELYARD_URL")
    assert Client().url == "http://127.0.0.1:8000" == DEFAULT_URL
    # Without MODELYARD_URL, where the server listens; a wildcard bind is reached locally.
    monkeypatch.setenv("MODELYARD_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELYARD_PORT", "9123")
    assert Client().url == "http://127.0.0.1:9123"
    monkeypatch.setenv("MODELYARD_HOST", "head.internal")
    assert Client().url == "http://head.internal:9123"
    monkeypatch.setenv("MODELYARD_PORT", "80a")
    with pytest.raises(ValueError, match="MODELYARD_PORT must be a port"):
        Client()


# ---------------------------------------------------------------- waiting


def test_wait_for_task_polls_until_final_with_progress(no_sleep):
    states = iter(["pending", "processing", "done"])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(states)
        return httpx.Response(200, json=task(status, detail={"allocation_state": "starting"}))

    with make_client(handler) as client:
        final = client.wait_for_task("deploy-abc", timeout=10, progress=True, poll_s=0)
    assert final.status == "done"


def test_wait_for_task_times_out():
    client = make_client(lambda r: httpx.Response(200, json=task("processing")))
    with client, pytest.raises(TimeoutError, match="processing"):
        client.wait_for_task("deploy-abc", timeout=0.05, poll_s=0.01)


def test_wait_for_deployment_raises_on_failed():
    body = {"name": "d", "model_id": "m", "model_version": 1, "status": "FAILED",
            "error": "weights are corrupt", "app_name": "d--v1"}  # fmt: skip
    with make_client(lambda r: httpx.Response(200, json=body)) as client:
        deployment = client.get_deployment("d")
        assert isinstance(deployment, Deployment) and deployment.name == "d"
        with pytest.raises(DeploymentFailedError, match="weights are corrupt"):
            deployment.wait_for_deployment(timeout=5)


def async_task(status: str = "SUCCESS", **fields) -> dict:
    return {"task_id": "async-1", "status": status, "created_at": NOW, **fields}


def test_predict_async_queues_on_the_server_then_polls(no_sleep):
    queued: list[dict] = []
    polls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.url.path == "/v1/deployments/d/async-predict"
            queued.append(json.loads(request.content))
            return httpx.Response(202, json={"task_id": f"async-{len(queued) - 1}"})
        task_id = request.url.path.rsplit("/", 1)[-1]
        i = int(task_id.split("-")[1])
        polls["n"] += 1
        if polls["n"] <= 20:  # PENDING on done() and on the first poll of get()
            return httpx.Response(200, json=async_task("PENDING", task_id=task_id))
        return httpx.Response(200, json=async_task(task_id=task_id, result=i * 2, model_version=1))

    with make_client(handler) as client:
        body = {"name": "d", "model_id": "m", "model_version": 1, "app_name": "d--v1"}
        deployment = Deployment(client, DeploymentPublic.model_validate(body))
        futures = [deployment.predict_async({"i": i}, f"r{i}") for i in range(10)]
        assert all(isinstance(f, ResponseFuture) for f in futures)
        assert [f.task_id for f in futures] == [f"async-{i}" for i in range(10)]
        assert not any(f.done() for f in futures)
        responses = [f.get(timeout=5) for f in futures]
        assert [r.result for r in responses] == [i * 2 for i in range(10)]
        assert [r.request_id for r in responses] == [f"r{i}" for i in range(10)]
        assert all(f.done() for f in futures) and polls["n"] == 30  # ended: not asked again
        assert futures[0].cancel() is False
    assert queued == [{"args": {"i": i}, "request_id": f"r{i}"} for i in range(10)]
    assert no_sleep and all(s <= 1.0 for s in no_sleep)


def test_async_failure_raises_predictor_error_with_the_traceback():
    failure = async_task("FAILURE", error="ValueError: asked to fail", traceback="Traceback: x")
    server = Server(
        {
            ("POST", "/v1/deployments/d/async-predict"): httpx.Response(
                202, json={"task_id": "async-1"}
            ),
            ("GET", "/v1/async-tasks/async-1"): failure,
        }
    )
    with make_client(server) as client:
        future = client.predict_async("d", {"fail": True}, request_id="r1")
        with pytest.raises(PredictorError) as info:
            future.get(timeout=5)
    exc = info.value
    assert exc.message == "ValueError: asked to fail" and exc.traceback == "Traceback: x"
    assert exc.request_id == "r1" and exc.type == "prediction_failed"


def test_async_get_times_out_while_pending():
    server = Server(
        {
            ("POST", "/v1/deployments/d/async-predict"): {"task_id": "async-1"},
            ("GET", "/v1/async-tasks/async-1"): async_task("PENDING"),
        }
    )
    with make_client(server) as client:
        future = client.predict_async("d", EndpointRequest(url="file:///args.json"))
        with pytest.raises(TimeoutError, match="async-1 still PENDING"):
            future.get(timeout=0.05)
        assert not future.done()
    assert server.bodies("POST") == [{"url": "file:///args.json"}]


def test_async_unknown_deployment_is_not_found():
    not_found = error(404, "not_found", "deployment 'd' not found")
    server = Server({("POST", "/v1/deployments/d/async-predict"): not_found})
    with make_client(server) as client, pytest.raises(NotFoundError, match="not found"):
        client.predict_async("d", {"x": 1})


# ---------------------------------------------------------------- swaps, lifecycle, tasks


@pytest.fixture
def on():
    """``on(server)``: a ``Deployment`` 'd' read through a client answered by ``server``."""
    clients: list[Client] = []

    def make(server: Server) -> Deployment:
        server.routes.setdefault(("GET", "/v1/deployments/d"), deployment_body())
        clients.append(make_client(server))
        return clients[-1].get_deployment("d")

    yield make
    for c in clients:
        c.close()


def test_get_task_reads_any_kind_from_the_tasks_route():
    server = Server({("GET", "/v1/tasks/rollout-1"): rollout_task("done")})
    with make_client(server) as client:
        assert client.get_task("rollout-1").kind == "rollout"
        assert client.wait_for_task("rollout-1", timeout=1).status == "done"
    assert {path for _, path, _, _ in server.seen} == {"/v1/tasks/rollout-1"}


def test_list_tasks_sends_only_the_filters_given():
    page = {"items": [rollout_task("done")], "total": 7, "offset": 5, "limit": 1}
    server = Server({("GET", "/v1/tasks"): page})
    with make_client(server) as client:
        out = client.list_tasks(kind="rollout", offset=5, limit=1)
        client.list_tasks()
    assert isinstance(out, TaskPage) and out.total == 7 and out.items[0].id == "rollout-1"
    assert [params for _, _, params, _ in server.seen] == [
        {"kind": "rollout", "offset": "5", "limit": "1"},
        {"offset": "0", "limit": "50"},
    ]


@pytest.mark.parametrize(
    ("rollout", "sent"),
    [
        (None, {"version": 2}),
        ({"steps": [50, 100]}, {"version": 2, "rollout": {"steps": [50, 100]}}),
        (RolloutOptions(strategy="in_place"), {"version": 2, "rollout": {"strategy": "in_place"}}),
    ],
)
def test_set_model_version_sends_only_the_rollout_options_given(on, rollout, sent):
    server = Server({("PUT", "/v1/deployments/d/model-version"): rollout_task("pending")})
    out = on(server).set_model_version(2, rollout=rollout)
    assert out.kind == "rollout" and out.status == "pending"
    assert server.bodies("PUT") == [sent]


def test_bad_rollout_options_fail_before_sending(on):
    server = Server({})
    deployment = on(server)
    with pytest.raises(ValueError, match="end at 100"):
        deployment.set_model_version(2, rollout={"steps": [10, 50]})
    with pytest.raises(ValueError, match="step_interval"):
        deployment.set_model_version(2, rollout={"step_interval": 1})
    assert [m for m, *_ in server.seen] == ["GET"]


def test_set_model_version_waits_for_the_task_to_end(on, no_sleep):
    states = iter(["processing", "processing", "done"])
    server = Server(
        {
            ("PUT", "/v1/deployments/d/model-version"): rollout_task("pending"),
            ("GET", "/v1/tasks/rollout-1"): lambda r: httpx.Response(
                200, json=rollout_task(next(states))
            ),
        }
    )
    out = on(server).set_model_version(2, wait=True, timeout=5, progress=True)
    assert out.status == "done"
    assert [p for _, p, *_ in server.seen].count("/v1/tasks/rollout-1") == 3


def test_a_refused_swap_is_returned_without_waiting(on):
    refused = rollout_task("refused", error="not enough free resources: GPU")
    server = Server({("PUT", "/v1/deployments/d/model-version"): refused})
    out = on(server).set_model_version(2, wait=True)
    assert out.status == "refused" and "GPU" in out.error
    assert [m for m, *_ in server.seen] == ["GET", "PUT"]


def test_rollback_stop_start_and_events(on):
    events = [
        {
            "deployment": "d",
            "type": "rollback",
            "message": "rolled back by request",
            "data": {"error_rate": 0.5},
            "at": NOW,
        }
    ]
    server = Server(
        {
            ("POST", "/v1/deployments/d/rollback"): rollout_task("processing"),
            ("POST", "/v1/deployments/d/stop"): deployment_body(status="STOPPED"),
            ("POST", "/v1/deployments/d/start"): deployment_body(status="PENDING"),
            ("GET", "/v1/deployments/d/events"): events,
        }
    )
    deployment = on(server)
    assert deployment.rollback().id == "rollout-1"
    assert deployment.stop().status == "STOPPED" and deployment.info.status == "STOPPED"
    assert deployment.start().status == "PENDING" and deployment.info.status == "PENDING"
    got = deployment.events()
    assert got[0].type == "rollback" and got[0].data == {"error_rate": 0.5}


def test_update_sends_only_what_is_given_and_overlays_config_dicts(on):
    current = deployment_body(config={"num_replicas": 2, "resources": {"num_gpus": 0.5}})
    server = Server(
        {
            ("GET", "/v1/deployments/d"): current,
            ("PATCH", "/v1/deployments/d"): lambda r: httpx.Response(
                200, json=deployment_body(description=json.loads(r.content).get("description", ""))
            ),
        }
    )
    deployment = on(server)
    assert deployment.update(description="nightly").description == "nightly"
    deployment.info = DeploymentPublic.model_validate(current)
    deployment.update(config={"num_replicas": 3, "resources": {"num_cpus": 2}})
    deployment.update(config=client_schemas.DeploymentConfig(num_replicas=4), rollout={})
    first, overlaid, replaced = server.bodies("PATCH")
    assert first == {"description": "nightly"}
    assert overlaid["config"]["num_replicas"] == 3
    assert overlaid["config"]["resources"] == {"num_gpus": 0.5, "num_cpus": 2, "memory": None}
    assert replaced == {"config": {"num_replicas": 4}, "rollout": {}}


def test_wait_for_pending_deployment_update_asks_the_server_to_wait(on):
    answers = iter([deployment_body(status="DEPLOYING"), deployment_body(model_version=2)])
    server = Server({("GET", "/v1/deployments/d"): deployment_body()})
    deployment = on(server)
    server.routes[("GET", "/v1/deployments/d")] = lambda r: httpx.Response(200, json=next(answers))
    assert deployment.wait_for_pending_deployment_update(timeout=30).model_version == 2
    assert deployment.info.model_version == 2
    waits = [params for _, _, params, _ in server.seen[1:]]
    assert len(waits) == 2 and all(p["wait"] == "true" for p in waits)
    assert 0 < float(waits[0]["timeout_s"]) <= 30


def test_wait_for_pending_deployment_update_times_out(on):
    swapping = deployment_body(
        status="UPDATING",
        pending_model_version=2,
        rollout={
            "task_id": "rollout-1",
            "from_version": 1,
            "to_version": 2,
            "blue_app": "d--v1",
            "green_app": "d--v2",
            "config": {},
            "options": {},
        },
    )
    server = Server({("GET", "/v1/deployments/d"): swapping})
    with pytest.raises(TimeoutError, match="swapping to v2"):
        on(server).wait_for_pending_deployment_update(timeout=0.05)


def test_predict_pins_a_version(on):
    answer = {"status": "SUCCESS", "result": 1, "model_version": 2}
    server = Server(
        {
            ("POST", "/v1/deployments/d/predict"): answer,
            ("POST", "/v1/deployments/d/async-predict"): {"task_id": "async-1"},
            ("GET", "/v1/async-tasks/async-1"): async_task(result=1, model_version=2),
        }
    )
    deployment = on(server)
    assert deployment.predict({"x": 1}, version=2).model_version == 2
    assert deployment.predict_async({"x": 1}, "r1", version=2).get(timeout=5).model_version == 2
    assert deployment.predict({"x": 1}).model_version == 2
    assert server.bodies("POST") == [
        {"args": {"x": 1}, "version": 2},
        {"args": {"x": 1}, "version": 2, "request_id": "r1"},
        {"args": {"x": 1}},
    ]


# ---------------------------------------------------------------- a newer server


def test_answers_with_unknown_fields_at_any_depth_still_parse():
    body = deployment_body(
        shiny_new_field=1,
        config={"num_replicas": 1, "new_knob": True, "resources": {"tpus": 4}},
        allocation={
            "allocation_state": "started",
            "queue_depth": 3,
            "routing_table": {"r1": {"routing_state": "started", "zone": "eu"}},
        },
    )
    page = {
        "items": [rollout_task(priority=3)],
        "total": 1,
        "offset": 0,
        "limit": 50,
        "next_cursor": "x",
    }
    server = Server({("GET", "/v1/deployments/d"): body, ("GET", "/v1/tasks"): page})
    with make_client(server) as client:
        info = client.get_deployment("d").info
        assert info.allocation.routing_table["r1"].routing_state == "started"
        assert client.list_tasks().items[0].id == "rollout-1"
    with pytest.raises(ValueError, match="shiny"):
        EndpointRequest(args={}, shiny=1)  # what the client sends stays strict


def test_describe_task_names_phase_and_traffic():
    shifting = rollout_task(detail={"to_version": 2, "phase": "shifting", "traffic_percent": 50})
    assert describe_task(client_schemas.Task.model_validate(shifting)) == (
        "rollout rollout-1: processing (shifting, 50% on v2)"
    )
    failed = task("failed", error="weights are corrupt", detail={"allocation_state": "failed"})
    assert describe_task(client_schemas.Task.model_validate(failed)) == (
        "deploy deploy-abc: failed (failed) - weights are corrupt"
    )
