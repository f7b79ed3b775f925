"""The predict fast lane: the happy path skips FastAPI, everything else reaches it unchanged."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cluster import errors
from cluster.api import deps
from cluster.ingress import predict_route as fastpath
from cluster.ingress.app import app
from cluster.settings import key_digest

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


class FakeRouter:
    def start(self) -> None:
        return None


class FakeControl:
    """Stands in for ControlPlane.predict; records how it was called."""

    def __init__(self) -> None:
        self.router = FakeRouter()
        self.calls: list[tuple] = []
        self.raise_next: Exception | None = None

    async def predict(self, name, req, version=None):
        self.calls.append((name, req.args, version))
        if self.raise_next is not None:
            raise self.raise_next
        return {
            "status": "SUCCESS",
            "result": {"echo": req.args},
            "model_version": 3,
            "request_id": req.request_id,
        }


@pytest.fixture
def control():
    fake = FakeControl()
    deps.configure(fake, key_digest(KEY))  # type: ignore[arg-type]
    return fake


@pytest.fixture
def http():
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def fast_answers(monkeypatch):
    """Statuses the fast lane itself sent."""
    sent: list[int] = []
    original = fastpath.send_json

    async def recording(send, status, payload, extra_headers=None):
        sent.append(status)
        await original(send, status, payload, extra_headers)

    monkeypatch.setattr(fastpath, "send_json", recording)
    return sent


def test_a_good_prediction_is_answered_by_the_fast_lane(control, http, fast_answers):
    resp = http.post("/v1/deployments/emb%2Dx/predict", json={"args": {"a": 1}}, headers=AUTH)
    assert resp.status_code == 200
    assert fast_answers == [200]
    assert resp.json()["result"] == {"echo": {"a": 1}}
    assert resp.headers["content-type"] == "application/json"
    assert control.calls == [("emb-x", {"a": 1}, None)]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer nope"}, "wrong API key"),
        ({"Authorization": f"Basic {KEY}"}, "missing"),
    ],
)
def test_missing_or_wrong_keys_get_the_guards_401(control, http, fast_answers, headers, message):
    resp = http.post("/v1/deployments/d/predict", json={"args": {}}, headers=headers)
    assert resp.status_code == 401
    assert message in resp.json()["error"]["message"]
    assert control.calls == [] and fast_answers == []


def test_a_bad_body_gets_the_422_naming_the_field(control, http):
    resp = http.post("/v1/deployments/d/predict", json={"args": 5}, headers=AUTH)
    assert resp.status_code == 422
    assert "args" in resp.json()["error"]["message"]
    both = http.post(
        "/v1/deployments/d/predict", json={"args": {}, "url": "file:///x"}, headers=AUTH
    )
    assert both.status_code == 422
    assert control.calls == []


def test_a_pinned_version_header_takes_the_route(control, http, fast_answers):
    resp = http.post(
        "/v1/deployments/d/predict", json={"args": {}}, headers={**AUTH, "X-Model-Version": "2"}
    )
    assert resp.status_code == 200
    assert control.calls == [("d", {}, 2)] and fast_answers == []


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (errors.NotFound("deployment 'd' does not exist"), 404, "not_found"),
        (errors.Overloaded("at capacity", retry_after_s=2.4), 429, "overloaded"),
        (errors.PredictorFailed("boom", traceback="Traceback..."), 500, "predictor_error"),
    ],
)
def test_control_plane_errors_keep_the_one_error_format(
    control, http, fast_answers, exc, status, error_type
):
    control.raise_next = exc
    resp = http.post(
        "/v1/deployments/d/predict", json={"args": {}}, headers={**AUTH, "X-Request-Id": "r1"}
    )
    assert resp.status_code == status and fast_answers == [status]
    body = resp.json()
    assert body["error"]["message"] == exc.message
    assert body["error"]["type"] == error_type
    assert body["error"]["request_id"] == "r1"
    if status == 429:
        assert resp.headers["Retry-After"] == "2"
    if status == 500:
        assert body["status"] == "FAILURE" and body["traceback"] == "Traceback..."


def test_a_large_prediction_under_the_body_limit_takes_the_fast_lane(control, http, fast_answers):
    # The lane used to hand bodies over 1 MiB to FastAPI; the guard now bounds them.
    texts = ["word " * 1000] * 400  # about 2 MiB
    resp = http.post("/v1/deployments/d/predict", json={"args": {"texts": texts}}, headers=AUTH)
    assert resp.status_code == 200 and fast_answers == [200]
    assert control.calls == [("d", {"texts": texts}, None)]


def test_without_the_guard_the_lane_checks_the_key_itself(control):
    import asyncio

    inner_calls: list[str] = []

    async def inner(scope, receive, send):
        inner_calls.append(scope["path"])

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        raise AssertionError("the lane answered")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/deployments/d/predict",
        "headers": [(b"authorization", b"Bearer nope")],
    }
    asyncio.run(fastpath.PredictFastPath(inner)(scope, receive, send))
    assert inner_calls == ["/v1/deployments/d/predict"]  # on to FastAPI's require_key
