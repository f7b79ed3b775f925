"""The errors the client raises, read from the server's JSON error answers.

ModelyardHTTPError            .status_code .type .message .request_id .body
 +-- BadRequestError          400, 422
 +-- AuthenticationError      401, 403
 +-- NotFoundError            404
 +-- ConflictError            409
 +-- RateLimitError           429, once max_retries retries are spent; .retry_after
 +-- ServerError              5xx
      +-- PredictorError      500: the model's own code raised; .traceback
      +-- RequestTimeoutError 504 (also a builtin TimeoutError)
DeploymentFailedError         wait_for_deployment saw the deployment FAILED
TaskFailedError               a task waited on ended failed, canceled or refused; .task
"""

from __future__ import annotations

from typing import Any

import httpx

from cluster.schemas import DeploymentPublic, Task


class ModelyardHTTPError(Exception):
    """An error answer, read from the server's ``{"error": {type, message, request_id}}``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str = "",
        request_id: str | None = None,
        traceback: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(
            f"{status_code} {type}: {message}" if type else f"{status_code}: {message}"
        )
        self.message = message
        self.status_code = status_code
        self.type = type
        self.request_id = request_id
        self.traceback = traceback
        self.body = body


class BadRequestError(ModelyardHTTPError):
    pass


class AuthenticationError(ModelyardHTTPError):
    pass


class NotFoundError(ModelyardHTTPError):
    pass


class ConflictError(ModelyardHTTPError):
    pass


class RateLimitError(ModelyardHTTPError):
    retry_after: float | None = None


class ServerError(ModelyardHTTPError):
    pass


class PredictorError(ServerError):
    """The predictor raised; ``.traceback`` is its traceback from the replica."""


class RequestTimeoutError(ServerError, TimeoutError):
    pass


class DeploymentFailedError(RuntimeError):
    def __init__(self, deployment: DeploymentPublic) -> None:
        super().__init__(f"deployment '{deployment.name}' failed: {deployment.error}")
        self.deployment = deployment


class TaskFailedError(RuntimeError):
    """A task the client waited on ended failed, canceled or refused; ``.task`` is the task
    as it ended, with the server's reason in ``.task.error``."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"{task.kind} task {task.id} {task.status}: {task.error or 'no reason'}")
        self.task = task


_BY_STATUS: dict[int, type[ModelyardHTTPError]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
    504: RequestTimeoutError,
}


def error_from_response(resp: httpx.Response) -> ModelyardHTTPError:
    """The typed exception for an error answer (JSON error format, or any other body)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": resp.text or resp.reason_phrase}
    traceback = body.get("traceback") if isinstance(body, dict) else None
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None:
        if resp.status_code == 500 and traceback is not None:
            cls = PredictorError
        else:
            cls = ServerError if resp.status_code >= 500 else ModelyardHTTPError
    exc = cls(
        str(err.get("message", "")),
        status_code=resp.status_code,
        type=str(err.get("type", "")),
        request_id=err.get("request_id") or resp.headers.get("x-request-id"),
        traceback=traceback,
        body=body,
    )
    if isinstance(exc, RateLimitError):
        exc.retry_after = retry_after(resp)
    return exc


def retry_after(resp: httpx.Response, default: float = 1.0) -> float:
    """``Retry-After`` in seconds (the HTTP-date form falls back to ``default``)."""
    try:
        return max(0.0, float(resp.headers["Retry-After"]))
    except (KeyError, ValueError):
        return default
