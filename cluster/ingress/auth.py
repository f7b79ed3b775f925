"""The admin key check: one bearer parser for the door and for FastAPI's security dependency.

``cluster.ingress.door`` checks every ``/v1`` request from its headers before any body is
read, and leaves its verdict in the ASGI scope (``KEY_CHECKED``); ``require_key`` declares
the bearer scheme in ``/openapi.json`` and checks the key only where no door ran (an app
built without it, as in unit tests).
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPBearer

from cluster import errors
from cluster.ingress.context import get_key_digest
from cluster.settings import key_digest

MISSING_KEY = "missing 'Authorization: Bearer <key>' header"
# Set in the ASGI scope by cluster.ingress.door once it checked the key, so no layer checks twice.
KEY_CHECKED = "modelyard.key_checked"


def key_problem(authorization: bytes | str | None) -> str | None:
    """Why an ``Authorization`` header value does not carry the admin key, or None if it does.
    The digests are compared in constant time."""
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
