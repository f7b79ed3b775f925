"""The predict route: the door hands it every prediction, it answers with one validation, the
``X-Model-Version`` header and the one error format; FastAPI's declaration of the route only
documents it, and runs the same code where it runs at all."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from cluster import errors
from cluster.api import deployments
from cluster.ingress import context, predict_route
from cluster.ingress.app import app
from cluster.ingress.auth import require_key
from cluster.ingress.http import install_error_handlers
from cluster.settings import key_digest

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
PATH = "/v1/deployments/d/predict"


class FakePredictions:
    """Stands in for the predict service; records how it was called."""

    def __init__(self) -> None:
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


class FakeControl:
    class router:  # noqa: N801 - FastAPI's ControlDep starts the router
        @staticmethod
        def start() -> None:
            return None

    def __init__(self) -> None:
        self.predictions = FakePredictions()


@pytest.fixture
def service():
    control = FakeControl()
    context.configure(control, key_digest(KEY))  # type: ignore[arg-type]
    return control.predictions


@pytest.fixture
def http():
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def route_answers(monkeypatch):
    """Statuses the predict route itself sent (FastAPI sends none of them)."""
    sent: list[int] = []
    original = predict_route.send_json

    async def recording(send, status, payload, extra_headers=None):
        sent.append(status)
        await original(send, status, payload, extra_headers)

    monkeypatch.setattr(predict_route, "send_json", recording)
    return sent


def test_a_good_prediction_is_answered_by_the_predict_route(service, http, route_answers):
    resp = http.post("/v1/deployments/emb%2Dx/predict", json={"args": {"a": 1}}, headers=AUTH)
    assert resp.status_code == 200
    assert route_answers == [200]
    assert resp.json()["result"] == {"echo": {"a": 1}}
    assert resp.headers["content-type"] == "application/json"
    assert service.calls == [("emb-x", {"a": 1}, None)]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer nope"}, "wrong API key"),
        ({"Authorization": f"Basic {KEY}"}, "missing"),
    ],
)
def test_missing_or_wrong_keys_get_the_doors_401(service, http, route_answers, headers, message):
    resp = http.post(PATH, json={"args": {}}, headers=headers)
    assert resp.status_code == 401
    assert message in resp.json()["error"]["message"]
    assert service.calls == [] and route_answers == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"args": 5}', "args"),
        (b'{"args": {}, "url": "file:///x"}', "url"),
        (b'{"args": {}, "nope": 1}', "nope"),
        (b'{"args": {', "body"),  # not JSON at all
        (b"", "body"),
    ],
)
def test_a_bad_body_gets_the_422_naming_the_field_from_the_route(
    service, http, route_answers, body, field
):
    resp = http.post(PATH, content=body, headers={**AUTH, "X-Request-Id": "r2"})
    assert resp.status_code == 422 and route_answers == [422]  # no replay into FastAPI
    err = resp.json()["error"]
    assert err["type"] == "validation_error" and err["request_id"] == "r2"
    assert field in err["message"]
    assert service.calls == []


def test_a_pinned_version_header_is_honoured(service, http, route_answers):
    resp = http.post(PATH, json={"args": {}}, headers={**AUTH, "X-Model-Version": "2"})
    assert resp.status_code == 200 and route_answers == [200]
    assert service.calls == [("d", {}, 2)]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "", "²"])
def test_a_version_header_that_is_not_a_version_is_422(service, http, route_answers, value):
    headers = {**AUTH, "X-Model-Version": value.encode("latin-1")}
    resp = http.post(PATH, json={"args": {}}, headers=headers)
    assert resp.status_code == 422 and route_answers == [422]
    err = resp.json()["error"]
    assert err["type"] == "validation_error"
    assert err["message"].startswith("header X-Model-Version:")
    assert service.calls == []


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (errors.NotFound("deployment 'd' does not exist"), 404, "not_found"),
        (errors.Overloaded("at capacity", retry_after_s=2.4), 429, "overloaded"),
        (errors.NotReady("no replica yet", retry_after_s=2.0), 503, "not_ready"),
        (errors.PredictorFailed("boom", traceback="Traceback..."), 500, "predictor_error"),
    ],
)
def test_predict_service_errors_keep_the_one_error_format(
    service, http, route_answers, exc, status, error_type
):
    service.raise_next = exc
    resp = http.post(PATH, json={"args": {}}, headers={**AUTH, "X-Request-Id": "r1"})
    assert resp.status_code == status and route_answers == [status]
    body = resp.json()
    assert body["error"] == {"type": error_type, "message": exc.message, "request_id": "r1"}
    if status in (429, 503):
        assert resp.headers["Retry-After"] == "2"
    if status == 500:
        assert body["status"] == "FAILURE" and body["traceback"] == "Traceback..."


def test_an_unexpected_failure_is_a_500_without_its_text(service, http, route_answers):
    service.raise_next = RuntimeError("/srv/secret/path.py line 3")
    resp = http.post(PATH, json={"args": {}}, headers=AUTH)
    assert resp.status_code == 500 and route_answers == [500]
    assert resp.json()["error"]["type"] == "internal_error"
    assert "/srv/secret" not in resp.text


def test_a_large_prediction_under_the_body_limit_takes_the_route(service, http, route_answers):
    texts = ["word " * 1000] * 400  # about 2 MiB, in many chunks
    resp = http.post(PATH, json={"args": {"texts": texts}}, headers=AUTH)
    assert resp.status_code == 200 and route_answers == [200]
    assert service.calls == [("d", {"texts": texts}, None)]


@pytest.fixture
def without_door():
    """FastAPI's own declaration of the route, as an app built without the door runs it."""
    bare = FastAPI()
    install_error_handlers(bare)
    bare.include_router(deployments.router, prefix="/v1", dependencies=[Depends(require_key)])
    with TestClient(bare, raise_server_exceptions=False) as client:
        yield client


def test_without_the_door_fastapi_checks_the_key(service, without_door):
    resp = without_door.post(PATH, json={"args": {}}, headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and service.calls == []


def test_fastapis_declaration_runs_the_same_route_code(service, http, without_door):
    ok = without_door.post(PATH, json={"args": {"a": 1}}, headers={**AUTH, "X-Model-Version": "4"})
    assert ok.status_code == 200 and ok.json()["result"] == {"echo": {"a": 1}}
    assert service.calls == [("d", {"a": 1}, 4)]
    for body, headers in ((b'{"args": 5}', {}), (b"{}", {"X-Model-Version": "0"})):
        bare = without_door.post(
            PATH, content=body, headers={**AUTH, **headers, "X-Request-Id": "r"}
        )
        door = http.post(PATH, content=body, headers={**AUTH, **headers, "X-Request-Id": "r"})
        assert bare.status_code == door.status_code == 422
        assert bare.json() == door.json()


def test_openapi_documents_the_body_and_the_version_header(http):
    operation = http.get("/openapi.json").json()["paths"]["/v1/deployments/{name}/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "PredictRequest" and "args" in body["properties"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["x-model-version"]["in"] == "header"
    assert params["x-model-version"]["schema"]["minimum"] == 1
    assert params["name"]["in"] == "path"
