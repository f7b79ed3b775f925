"""modelyard's exceptions, one tree, mapped to HTTP statuses in one table.

ModelyardError                 500
 +-- BadRequest                400
 |    +-- CapacityError        400  (a request the cluster can never satisfy)
 |    +-- PayloadTooLarge      413  (a body over MODELYARD_MAX_BODY_BYTES, refused unread)
 +-- Unauthorized              401
 +-- NotFound                  404
 +-- Conflict                  409
 +-- Overloaded                429  (queue full; carries retry_after_s)
 +-- PredictorFailed           500  (the model code raised; carries its traceback)
 +-- NotReady                  503  (carries retry_after_s when waiting helps)
 |    +-- Unavailable          503  (a control actor or replica cannot be reached now)
 +-- UpstreamTimeout           504

Two helpers read the exceptions Ray raises around them, for every caller outside the HTTP
layer too (the control plane, the predict path): ``unwrap`` (the exception an actor raised,
out of Ray's wrapper) and ``replica_lost`` (a call that may be sent again). They import
Ray only when called, so this module stays importable without it.
"""

from __future__ import annotations


class ModelyardError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(ModelyardError):
    status_code = 400
    error_type = "bad_request"


class InvalidInput(BadRequest):
    status_code = 422
    error_type = "validation_error"


class CapacityError(BadRequest):
    error_type = "insufficient_capacity"


class PayloadTooLarge(BadRequest):
    status_code = 413
    error_type = "payload_too_large"


class Unauthorized(ModelyardError):
    status_code = 401
    error_type = "unauthorized"


class NotFound(ModelyardError):
    status_code = 404
    error_type = "not_found"


class Conflict(ModelyardError):
    status_code = 409
    error_type = "conflict"


class Overloaded(ModelyardError):
    status_code = 429
    error_type = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PredictorFailed(ModelyardError):
    status_code = 500
    error_type = "predictor_error"

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


class NotReady(ModelyardError):
    status_code = 503
    error_type = "not_ready"

    # None: retrying as is will not help (a stopped deployment needs a start).
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(NotReady):
    error_type = "unavailable"

    def __init__(self, message: str, retry_after_s: float | None = 1.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class UpstreamTimeout(ModelyardError):
    status_code = 504
    error_type = "timeout"


def unwrap(exc: BaseException) -> BaseException:
    """A ``RayTaskError`` from an actor call carries the actor's own exception as ``cause``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def replica_lost(exc: BaseException) -> bool:
    """Whether a handle call failed because its replica died or went away mid-request: the
    case where the same request, sent again, goes to another replica (predictions are
    idempotent). An error raised inside the replica (``RayTaskError``) is not one."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import ReplicaUnavailableError

    if isinstance(exc, RayTaskError):
        return False
    return isinstance(exc, (RayActorError, ReplicaUnavailableError))
