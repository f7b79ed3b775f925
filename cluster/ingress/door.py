"""The ingress's one front door: the outermost ASGI layer of the control app.

Every ``/v1`` request has its bearer key checked from the headers alone (401), and every
request's body is bounded by ``max_body_bytes`` (413): at once when ``Content-Length`` says
so, else (a chunked body) as soon as reading passes the limit, keeping no more than the
limit. Nothing behind the door reads an unauthorised or oversized body. ``/healthz``,
``/metrics``, ``/docs`` and ``/openapi.json`` stay open, as the routes declare.

Then the door dispatches: ``POST /v1/deployments/{name}/predict``, the request a serving
platform answers most, goes to ``cluster.ingress.predict_route``, which answers it without
FastAPI's middleware, routing and dependency stack (profiled under load, that stack cost
about 10% of the ingress's CPU against 3% for modelyard's own work). Every other request
goes to FastAPI, with the door's verdict on the key in the scope (``KEY_CHECKED``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cluster import errors
from cluster.ingress import predict_route
from cluster.ingress.auth import KEY_CHECKED, key_problem
from cluster.ingress.http import error_parts, send_json
from cluster.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: int = Settings.model_fields["max_body_bytes"].default
_LIMIT_NAME = "MODELYARD_MAX_BODY_BYTES"
_limits = {"max_body_bytes": DEFAULT_MAX_BODY_BYTES}


def configure(max_body_bytes: int) -> None:
    """Set the body limit of this replica (the ``Ingress`` constructor calls it)."""
    _limits["max_body_bytes"] = max_body_bytes


class Door:
    """``app`` answers everything but predictions (FastAPI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        path = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            problem = key_problem(headers.get(b"authorization"))
            if problem is not None:
                return await refuse(send, errors.Unauthorized(problem), headers)
            scope[KEY_CHECKED] = True
        limit = _limits["max_body_bytes"]
        length = headers.get(b"content-length")
        if length is not None:
            size = int(length) if length.isdigit() else -1
            if size < 0:
                bad = errors.BadRequest("Content-Length: must be a whole number of bytes")
                return await refuse(send, bad, headers)
            if size > limit:
                return await refuse(send, too_large(limit, size), headers)
        else:
            # No declared size (chunked, or no body at all): count what is read.
            body = BoundedBody(receive, send, limit, headers)
            receive, send = body.receive, body.send
        if scope["method"] == "POST":
            match = predict_route.PATH.fullmatch(path)
            if match is not None:
                return await predict_route.serve(match.group(1), headers, receive, send)
        return await self.app(scope, receive, send)


class BoundedBody:
    """``receive`` and ``send`` for a body of unknown length: past ``limit`` bytes the door
    answers 413 itself, and the app sees the client leave (so it stops reading) and can
    answer nothing more."""

    __slots__ = ("_receive", "_send", "limit", "headers", "read", "refused", "started")

    def __init__(self, receive: Receive, send: Send, limit: int, headers: dict) -> None:
        self._receive, self._send = receive, send
        self.limit, self.headers = limit, headers
        self.read, self.refused, self.started = 0, False, False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.limit:
                # The chunk that crossed the limit is dropped, not handed on.
                self.refused = True
                if not self.started:
                    await refuse(self._send, too_large(self.limit), self.headers)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the app's answer to a body it never got in full
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def too_large(limit: int, size: int | None = None) -> errors.PayloadTooLarge:
    got = f" (got {size})" if size is not None else ""
    return errors.PayloadTooLarge(
        f"body: at most {limit} bytes per request{got}; the limit is the server's {_LIMIT_NAME}"
    )


async def refuse(send: Send, exc: errors.ModelyardError, headers: dict) -> None:
    rid = headers.get(b"x-request-id", b"").decode("latin-1")
    await send_json(send, *error_parts(exc, rid))
