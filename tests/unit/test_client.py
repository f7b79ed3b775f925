"""``cluster.client`` without a server: httpx.MockTransport answers instead."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from cluster import client as client_module
from cluster.client import (
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
    ServerError,
)

NOW = "2025-01-01T00:00:00Z"


def make_client(handler: Callable[[httpx.Request], httpx.Response], **kwargs) -> Client:
    return Client(
        url="http://modelyard.test", api_key="k", transport=httpx.MockTransport(handler), **kwargs
    )


def error(code: int, type_: str, message: str, /, **extra) -> httpx.Response:
    body = {"error": {"type": type_, "message": message, "request_id": "rid-1"}, **extra}
    headers = {"Retry-After": "0"} if code == 429 else {}
    return httpx.Response(code, json=body, headers=headers)


def task(status: str = "done", **fields) -> dict:
    return {"id": "deploy-abc", "kind": "deploy", "status": status, "created_at": NOW,
            "updated_at": NOW, **fields}  # fmt: skip


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    return slept


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
    monkeypatch.delenv("MODELYARD_API_KEY", raising=False)
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("MODELYARD_URL", "http://elsewhere:9000/")
    assert Client().api_key is None
    (tmp_path / "admin.key").write_text("from-file\n")
    client = Client()
    assert client.api_key == "from-file" and client.url == "http://elsewhere:9000"
    monkeypatch.setenv("MODELYARD_API_KEY", "from-env")
    assert Client().api_key == "from-env"
    assert Client(api_key="from-arg").api_key == "from-arg"
    monkeypatch.delenv("MODELYARD_URL")
    assert Client().url == "http://127.0.0.1:8000"


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


def test_predict_async_runs_in_the_background():
    def handler(request: httpx.Request) -> httpx.Response:
        args = json.loads(request.content)["args"]
        return httpx.Response(200, json={"status": "SUCCESS", "result": args["i"] * 2})

    with make_client(handler) as client:
        body = {"name": "d", "model_id": "m", "model_version": 1, "app_name": "d--v1"}
        deployment = Deployment(client, client_module.DeploymentPublic.model_validate(body))
        futures = [deployment.predict_async({"i": i}) for i in range(10)]
        assert [f.get(timeout=5).result for f in futures] == [i * 2 for i in range(10)]
