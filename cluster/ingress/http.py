"""The one HTTP error format and the one table from exceptions to answers.

Errors always answer ``{"error": {"type", "message", "request_id"}}``; predictor failures
add ``"traceback"`` and ``"status": "FAILURE"``, as a prediction response would. ``error_parts``
is the table: FastAPI's handlers (``install_error_handlers``) and the ASGI layers in front of
FastAPI (the door, the predict route) both answer through it, so an error reads the same
whichever layer met it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import errors

logger = logging.getLogger("modelyard.http")
INTERNAL_MESSAGE = "internal error; the server log has the details under this request_id"


def request_id(request: Request) -> str:
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def error_body(
    status: int, error_type: str, message: str, request_id: str, /, **extra: object
) -> tuple[dict, dict[str, str]]:
    """The JSON error body and its headers (``Retry-After`` on a 429, and on a 503 that
    says when to come back)."""
    # Positional-only: a predictor failure's body carries its own "status": "FAILURE".
    body: dict = {"error": {"type": error_type, "message": message, "request_id": request_id}}
    retry_after = extra.pop("retry_after_s", 1 if status == 429 else None)
    body.update(extra)
    headers = {}
    if retry_after is not None and status in (429, 503):
        headers["Retry-After"] = str(max(1, round(float(retry_after))))  # type: ignore[arg-type]
    return body, headers


def error_parts(exc: BaseException, rid: str = "") -> tuple[int, dict, dict[str, str]]:
    """Status, body and headers answering ``exc``; ``rid`` is the request's id (a new one
    when the request has none)."""
    rid = rid or uuid.uuid4().hex
    if isinstance(exc, (ValidationError, RequestValidationError)):
        return 422, *error_body(422, "validation_error", field_message(exc), rid)
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, *error_body(exc.status_code, "http_error", str(exc.detail), rid)
    inner = exc if isinstance(exc, errors.ModelyardError) else errors.unwrap(exc)
    if isinstance(inner, errors.ModelyardError):
        status = inner.status_code
        return status, *error_body(status, inner.error_type, inner.message, rid, **_extra(inner))
    # The exception's text can name files and internals: it goes to the log only, and the
    # answer carries the request id that finds it there.
    logger.error("unhandled error (request %s)", rid, exc_info=inner)
    return 500, *error_body(500, "internal_error", INTERNAL_MESSAGE, rid)


def field_message(exc: RequestValidationError | ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _extra(exc: errors.ModelyardError) -> dict:
    if isinstance(exc, errors.PredictorFailed):
        return {"status": "FAILURE", "traceback": exc.traceback}
    if isinstance(exc, (errors.Overloaded, errors.NotReady)) and exc.retry_after_s is not None:
        return {"retry_after_s": exc.retry_after_s}
    return {}


def install_error_handlers(app: FastAPI) -> None:
    """Register the one mapping from exceptions to HTTP answers."""

    async def answer(request: Request, exc: Exception) -> JSONResponse:
        status, body, headers = error_parts(exc, request_id(request))
        return JSONResponse(body, status_code=status, headers=headers)

    for kind in (
        errors.ModelyardError,
        RequestValidationError,
        ValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, answer)


class FastJSONResponse(Response):
    """JSON via orjson: the predict path serialises hundreds of floats per answer."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def send_json(
    send: Any, status: int, payload: Any, extra_headers: dict[str, str] | None = None
) -> None:
    """A whole JSON answer on an ASGI ``send``, for the layers in front of FastAPI."""
    data = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    if extra_headers:
        headers += [(k.lower().encode(), v.encode()) for k, v in extra_headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
