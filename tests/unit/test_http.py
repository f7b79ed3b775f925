"""The one error format, the error table and bearer auth, on a tiny FastAPI app."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from cluster import errors
from cluster.errors import unwrap
from cluster.ingress import context
from cluster.ingress.auth import require_key
from cluster.ingress.http import error_parts, install_error_handlers
from cluster.schemas import DeploymentConfig
from cluster.settings import key_digest

KEY = "k"
SECRET_TRACEBACK = 'Traceback (most recent call last):\n  File "/srv/modelyard/worker.py"'


class Body(BaseModel):
    name: str
    count: int = Field(ge=1)


RAISES = {
    "bad": errors.BadRequest("bad input"),
    "capacity": errors.CapacityError("needs 9 GPUs"),
    "unauthorized": errors.Unauthorized("who are you"),
    "missing": errors.NotFound("no such thing"),
    "conflict": errors.Conflict("already there"),
    "overloaded": errors.Overloaded("queue full", retry_after_s=2.6),
    "overloaded-fast": errors.Overloaded("queue full", retry_after_s=0.1),
    "predictor": errors.PredictorFailed("model raised", traceback="Traceback ...\nValueError"),
    "not-ready": errors.NotReady("starting"),
    "not-ready-soon": errors.NotReady("no replica yet", retry_after_s=2.0),
    "unavailable": errors.Unavailable("registry restarting"),
    "timeout": errors.UpstreamTimeout("too slow"),
    "generic": errors.ModelyardError("oops"),
}


class Wrapped(Exception):
    """Shaped like a RayTaskError: the actor's own exception is ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("wrapped")
        self.cause = cause


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{what}")
    def raise_(what: str):
        raise RAISES[what]

    @app.post("/body")
    def body(req: Body) -> dict:
        return {"name": req.name}

    @app.post("/config")
    def config(raw: dict) -> dict:
        # A schema built inside a route: its ValidationError must be a 422 too.
        return DeploymentConfig.model_validate(raw).model_dump()

    @app.get("/crash")
    def crash():
        raise RuntimeError("kaput")

    @app.get("/wrapped")
    def wrapped():
        raise Wrapped(errors.NotFound("inside an actor"))

    @app.get("/ray-task-error")
    def ray_task_error():
        from ray.exceptions import RayTaskError

        cause = OSError("[Errno 13] Permission denied: '/srv/modelyard/registry.db'")
        raise RayTaskError("get_task", SECRET_TRACEBACK, cause).as_instanceof_cause()

    @app.get("/secret", dependencies=[Depends(require_key)])
    def secret() -> dict:
        return {"ok": True}

    @app.get("/secret-annotated")
    def secret_annotated(_: Annotated[None, Depends(require_key)]) -> dict:
        return {"ok": True}

    context.configure(control=object(), key_digest=key_digest(KEY))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def error_of(resp) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"type", "message", "request_id"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("what", "status", "error_type", "text"),
    [
        ("bad", 400, "bad_request", "bad input"),
        ("capacity", 400, "insufficient_capacity", "needs 9 GPUs"),
        ("unauthorized", 401, "unauthorized", "who are you"),
        ("missing", 404, "not_found", "no such thing"),
        ("conflict", 409, "conflict", "already there"),
        ("not-ready", 503, "not_ready", "starting"),
        ("timeout", 504, "timeout", "too slow"),
        ("generic", 500, "internal_error", "oops"),
    ],
)
def test_error_table(client, what, status, error_type, text):
    resp = client.get(f"/raise/{what}")
    assert resp.status_code == status
    err = error_of(resp)
    assert (err["type"], err["message"]) == (error_type, text)
    assert err["request_id"]
    assert "Retry-After" not in resp.headers


def test_overloaded_is_429_with_retry_after(client):
    resp = client.get("/raise/overloaded")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "3"
    assert error_of(resp)["type"] == "overloaded"
    assert "retry_after_s" not in resp.json()
    fast = client.get("/raise/overloaded-fast")
    assert fast.status_code == 429
    assert fast.headers["Retry-After"] == "1"


def test_predictor_failure_carries_traceback(client):
    resp = client.get("/raise/predictor")
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"]["type"] == "predictor_error"
    assert body["error"]["message"] == "model raised"
    assert body["status"] == "FAILURE"
    assert body["traceback"] == "Traceback ...\nValueError"


def test_request_id_is_echoed(client):
    resp = client.get("/raise/missing", headers={"X-Request-ID": "req-42"})
    assert error_of(resp)["request_id"] == "req-42"
    a = error_of(client.get("/raise/missing"))["request_id"]
    b = error_of(client.get("/raise/missing"))["request_id"]
    assert a != b


def test_body_validation_is_422_naming_the_field(client):
    resp = client.post("/body", json={"name": "x", "count": 0})
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["type"] == "validation_error"
    assert err["message"].startswith("count:")
    assert "greater than or equal to 1" in err["message"]
    missing = error_of(client.post("/body", json={"count": 2}))
    assert missing["message"] == "name: Field required"
    assert client.post("/body", json={"name": "x", "count": 2}).json() == {"name": "x"}


def test_validation_error_inside_route_is_422(client):
    resp = client.post("/config", json={"max_batch_size": 64, "max_ongoing_requests": 8})
    assert resp.status_code == 422
    message = error_of(resp)["message"]
    assert "max_batch_size" in message
    assert "max_ongoing_requests" in message


def test_unknown_route_is_json_404(client):
    resp = client.get("/no/such/route")
    assert resp.status_code == 404
    assert error_of(resp)["type"] == "http_error"


def test_unhandled_exception_is_500_json_without_its_text(client, caplog):
    with caplog.at_level("ERROR", logger="modelyard.http"):
        resp = client.get("/crash", headers={"X-Request-ID": "r1"})
    assert resp.status_code == 500
    err = error_of(resp)
    assert err["type"] == "internal_error" and err["request_id"] == "r1"
    assert "kaput" not in resp.text and "RuntimeError" not in resp.text
    # The server log keeps the whole exception, findable by the request id.
    assert any("r1" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_ray_task_error_around_an_unknown_exception_leaks_nothing(client):
    resp = client.get("/ray-task-error")
    assert resp.status_code == 500
    assert error_of(resp)["type"] == "internal_error"
    for leak in ("/srv/modelyard", "registry.db", "Errno", "worker.py", "Traceback"):
        assert leak not in resp.text


@pytest.mark.parametrize(("what", "retry_after"), [("not-ready-soon", "2"), ("unavailable", "1")])
def test_a_503_that_says_when_to_retry_has_retry_after(client, what, retry_after):
    resp = client.get(f"/raise/{what}")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == retry_after
    assert "retry_after_s" not in resp.json()


def test_wrapped_actor_error_is_unwrapped(client):
    resp = client.get("/wrapped")
    assert resp.status_code == 404
    assert error_of(resp)["message"] == "inside an actor"
    inner = errors.Conflict("x")
    assert unwrap(Wrapped(inner)) is inner
    plain = ValueError("y")
    assert unwrap(plain) is plain


@pytest.mark.parametrize("path", ["/secret", "/secret-annotated"])
def test_auth(client, path):
    missing = client.get(path)
    assert missing.status_code == 401
    assert error_of(missing)["type"] == "unauthorized"
    assert "Authorization: Bearer" in error_of(missing)["message"]
    wrong = client.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert error_of(wrong)["message"] == "wrong API key"
    basic = client.get(path, headers={"Authorization": "Basic azpr"})
    assert basic.status_code == 401
    ok = client.get(path, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert ok.json() == {"ok": True}


def test_errors_answered_outside_fastapi_carry_retry_after_too():
    status, body, headers = error_parts(errors.Unavailable("registry restarting"), "r9")
    assert (status, headers) == (503, {"Retry-After": "1"})
    assert body["error"] == {
        "type": "unavailable",
        "message": "registry restarting",
        "request_id": "r9",
    }
    assert error_parts(errors.NotReady("stopped"))[2] == {}
