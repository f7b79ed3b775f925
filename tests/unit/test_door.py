"""The door: key and body size checked before anything reads the body, then predictions to
the predict route and everything else to FastAPI; the text limits' messages."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cluster.ingress import context, door
from cluster.ingress.app import app
from cluster.ingress.auth import KEY_CHECKED
from cluster.ingress.door import Door
from cluster.ingress.http import error_parts
from cluster.schemas import EmbedArgs
from cluster.schemas.predictions import MAX_TEXT_CHARS, MAX_TEXTS
from cluster.settings import key_digest

KEY = "secret"
AUTH = (b"authorization", b"Bearer secret")
LIMIT = 1 << 20
BIG = 20 << 20
CHUNK = 64 << 10


@pytest.fixture(autouse=True)
def limits(monkeypatch):
    monkeypatch.setitem(door._limits, "max_body_bytes", LIMIT)
    context.configure(NoControl(), key_digest(KEY))  # type: ignore[arg-type]


class NoControl:
    """Any use of the control plane fails the test: these requests must stop before it."""

    class router:  # noqa: N801  (FastAPI's ControlDep starts the router on every route)
        @staticmethod
        def start() -> None:
            return None

    def __getattr__(self, name):
        raise AssertionError(f"the control plane was reached ({name})")


class Source:
    """The client side: a body of ``size`` bytes (or ``content``) handed out ``CHUNK`` bytes
    per receive."""

    def __init__(self, size: int, content: bytes | None = None) -> None:
        self.content = b"x" * size if content is None else content
        self.size, self.calls, self.handed = len(self.content), 0, 0

    async def receive(self) -> dict:
        self.calls += 1
        chunk = self.content[self.handed : self.handed + CHUNK]
        self.handed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.handed < self.size}


class Reader:
    """A fake app that reads the whole body, then answers 200 with what it read."""

    def __init__(self) -> None:
        self.called, self.body, self.scope, self.saw_disconnect = False, b"", {}, False

    async def __call__(self, scope, receive, send) -> None:
        self.called, self.scope = True, scope
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.saw_disconnect = True
                break
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = orjson.dumps({"read": len(self.body)})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


def call(path: str, headers: list, source: Source, method: str = "POST"):
    inner, sent = Reader(), []

    async def send(message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(Door(inner)(scope, source.receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent  # one answer, never the app's after the door's
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], orjson.loads(body), inner


def length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


@pytest.mark.parametrize(
    "auth", [[], [(b"authorization", b"Bearer nope")], [(b"authorization", b"Basic secret")]]
)
@pytest.mark.parametrize("declared", [True, False])
def test_a_big_body_without_the_key_is_401_unread(auth, declared):
    source = Source(BIG)
    headers = [*auth, length(BIG)] if declared else auth
    status, body, inner = call("/v1/deployments/d/predict", headers, source)
    assert status == 401 and body["error"]["type"] == "unauthorized"
    assert source.calls == 0 and not inner.called


def test_a_declared_big_body_with_the_key_is_413_unread():
    source = Source(BIG)
    status, body, inner = call("/v1/models", [AUTH, length(BIG), (b"x-request-id", b"r7")], source)
    assert status == 413
    assert body["error"]["type"] == "payload_too_large"
    assert body["error"]["request_id"] == "r7"
    assert f"body: at most {LIMIT} bytes per request (got {BIG})" in body["error"]["message"]
    assert "MODELYARD_MAX_BODY_BYTES" in body["error"]["message"]
    assert source.calls == 0 and not inner.called


def test_a_chunked_body_over_the_limit_is_413_and_reading_stops():
    source = Source(BIG)
    status, body, inner = call("/v1/models", [AUTH], source)
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    assert source.handed <= LIMIT + CHUNK  # stopped at the limit, not at 20 MiB
    assert len(inner.body) <= LIMIT  # the chunk that crossed it was not handed on
    assert inner.saw_disconnect


def test_a_chunked_prediction_over_the_limit_is_413_before_the_predict_service():
    source = Source(BIG)  # NoControl: reaching the predict service fails the test
    status, body, inner = call("/v1/deployments/d/predict", [AUTH], source)
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    assert source.handed <= LIMIT + CHUNK and not inner.called


def test_a_small_body_passes_through_with_the_verdict_in_the_scope():
    for headers in ([AUTH, length(LIMIT)], [AUTH]):  # declared, and chunked
        source = Source(LIMIT)
        status, body, inner = call("/v1/models", headers, source)
        assert status == 200 and body == {"read": LIMIT}
        assert inner.scope[KEY_CHECKED] is True


class Predictions:
    """The predict service: answers every prediction with the name and args it got."""

    async def predict(self, name, req, version=None):
        return {"status": "SUCCESS", "result": {"name": name, "args": req.args}}


class PredictOnly(NoControl):
    predictions = Predictions()


@pytest.mark.parametrize("declared", [True, False])
def test_a_prediction_goes_to_the_predict_route_and_not_to_fastapi(declared):
    context.configure(PredictOnly(), key_digest(KEY))  # type: ignore[arg-type]
    content = orjson.dumps({"args": {"texts": ["x" * 200_000]}})  # several chunks
    headers = [AUTH, length(len(content))] if declared else [AUTH]
    status, body, inner = call("/v1/deployments/d/predict", headers, Source(0, content))
    assert status == 200 and not inner.called
    assert body["result"] == {"name": "d", "args": {"texts": ["x" * 200_000]}}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/deployments/d/predict"),  # FastAPI's 405
        ("POST", "/v1/deployments/d/async-predict"),
        ("POST", "/v1/deployments/d/predict/more"),
        ("POST", "/v1/deployments/predict"),
    ],
)
def test_everything_but_a_prediction_goes_to_fastapi(method, path):
    status, _, inner = call(path, [AUTH], Source(0), method=method)
    assert status == 200 and inner.called


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/docs", "/openapi.json"])
def test_public_routes_need_no_key(path):
    status, body, inner = call(path, [], Source(0), method="GET")
    assert status == 200 and inner.called
    assert KEY_CHECKED not in inner.scope


def test_a_public_route_still_has_the_body_limit():
    source = Source(BIG)
    status, _, inner = call("/healthz", [length(BIG)], source)
    assert status == 413 and source.calls == 0 and not inner.called


def test_a_content_length_that_is_not_a_number_is_400():
    status, body, inner = call("/v1/models", [AUTH, (b"content-length", b"12a")], Source(0))
    assert status == 400 and "Content-Length" in body["error"]["message"]
    assert not inner.called


@pytest.fixture
def http():
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_ingress_app_refuses_before_fastapi_parses(http):
    big = b'{"args": {"texts": ["' + b"x" * BIG + b'"]}}'
    for path in ("/v1/deployments/d/predict", "/v1/models", "/v1/embeddings"):
        assert http.post(path, content=big).status_code == 401
        resp = http.post(path, content=big, headers={"Authorization": f"Bearer {KEY}"})
        assert resp.status_code == 413, path
        assert resp.json()["error"]["type"] == "payload_too_large"
    chunks = (b"x" * CHUNK for _ in range(BIG // CHUNK))
    resp = http.post("/v1/models", content=chunks, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 413


def test_the_ingress_app_keeps_public_routes_open(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/openapi.json").status_code == 200
    assert http.get("/v1/cluster").status_code == 401


def test_openapi_still_declares_the_bearer_scheme(http):
    spec = http.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["_AdminKey"]["scheme"] == "bearer"


def _message(texts) -> str:
    with pytest.raises(ValidationError) as info:
        EmbedArgs(texts=texts)
    return error_parts(info.value)[1]["error"]["message"]


def test_embed_args_name_the_text_limits():
    assert _message(["x"] * 5000) == f"texts: at most {MAX_TEXTS} texts per request (got 5000)"
    long_text = ["a", "b", "c", "y" * (MAX_TEXT_CHARS + 1)]
    assert (
        _message(long_text) == f"texts.3: at most {MAX_TEXT_CHARS} characters per text (got 20001)"
    )
    at_limits = ["y" * MAX_TEXT_CHARS] + ["x"] * (MAX_TEXTS - 1)
    assert len(EmbedArgs(texts=at_limits).texts) == MAX_TEXTS


@pytest.mark.parametrize(
    ("body_input", "message"),
    [
        (["x"] * 4097, f"input: at most {MAX_TEXTS} texts per request (got 4097)"),
        (
            ["ok", "z" * 20_001],
            f"input.1: at most {MAX_TEXT_CHARS} characters per text (got 20001)",
        ),
        ("z" * 20_001, f"input: at most {MAX_TEXT_CHARS} characters per text (got 20001)"),
    ],
)
def test_embeddings_input_names_the_text_limits(http, body_input, message):
    # NoControl: the refusal comes before any routing or prediction.
    resp = http.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": body_input},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == message
