"""HTTP plumbing shared by every route: the JSON error format, the error table and auth.

Errors always answer ``{"error": {"type", "message", "request_id"}}``; predictor failures
add ``"traceback"`` and ``"status": "FAILURE"``, as a prediction response would.
"""

from __future__ import annotations

import hmac
import logging
import uuid

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import errors
from cluster.api.deps import get_key_digest
from cluster.settings import key_digest

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


def error_response(
    request: Request, status: int, error_type: str, message: str, /, **extra: object
) -> JSONResponse:
    body, headers = error_body(status, error_type, message, request_id(request), **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def error_parts(
    exc: errors.ModelyardError | ValidationError, rid: str = ""
) -> tuple[int, dict, dict[str, str]]:
    """Status, body and headers for an error raised outside FastAPI's handlers."""
    rid = rid or uuid.uuid4().hex
    if isinstance(exc, ValidationError):
        return 422, *error_body(422, "validation_error", _field_message(exc), rid)
    status = exc.status_code
    return status, *error_body(status, exc.error_type, exc.message, rid, **_extra(exc))


class FastJSONResponse(Response):
    """JSON via orjson: the predict path serialises hundreds of floats per answer."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def unwrap(exc: BaseException) -> BaseException:
    """A ``RayTaskError`` from an actor call carries the actor's own exception as ``cause``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _field_message(exc: RequestValidationError | ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the one mapping from exceptions to HTTP answers."""

    @app.exception_handler(errors.ModelyardError)
    async def _modelyard(request: Request, exc: errors.ModelyardError) -> JSONResponse:
        return _answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "validation_error", _field_message(exc))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(request, 422, "validation_error", _field_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        inner = unwrap(exc)
        if isinstance(inner, errors.ModelyardError):
            return _answer(request, inner)
        # The exception's text can name files and internals: it goes to the log only, and
        # the answer carries the request id that finds it there.
        rid = request_id(request)
        logger.error("unhandled error (request %s)", rid, exc_info=inner)
        body, headers = error_body(500, "internal_error", INTERNAL_MESSAGE, rid)
        return JSONResponse(body, status_code=500, headers=headers)


def _answer(request: Request, exc: errors.ModelyardError) -> JSONResponse:
    return error_response(request, exc.status_code, exc.error_type, exc.message, **_extra(exc))


def _extra(exc: errors.ModelyardError) -> dict:
    if isinstance(exc, errors.PredictorFailed):
        return {"status": "FAILURE", "traceback": exc.traceback}
    if isinstance(exc, (errors.Overloaded, errors.NotReady)) and exc.retry_after_s is not None:
        return {"retry_after_s": exc.retry_after_s}
    return {}


MISSING_KEY = "missing 'Authorization: Bearer <key>' header"
# Set in the ASGI scope by cluster.ingress.door once it checked the key, so no layer checks twice.
KEY_CHECKED = "modelyard.key_checked"


def key_problem(authorization: bytes | str | None) -> str | None:
    """Why an ``Authorization`` header value does not carry the admin key, or None if it does.

    The one bearer check, used by the guard middleware, ``require_key`` and the fast lane;
    the digests are compared in constant time.
    """
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return MISSING_KEY
    if not hmac.compare_digest(key_digest(token), get_key_digest()):
        return "wrong API key"
    return None


class _AdminKey(HTTPBearer):
    """``require_key``: a security dependency, so /openapi.json shows the bearer scheme."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        if request.scope.get(KEY_CHECKED):
            return
        problem = key_problem(request.headers.get("authorization"))
        if problem is not None:
            raise errors.Unauthorized(problem)


require_key = _AdminKey(auto_error=False)
