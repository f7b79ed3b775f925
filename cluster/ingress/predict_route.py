"""The predict route: ``POST /v1/deployments/{name}/predict``, the ingress's hot path.

The door (``cluster.ingress.door``) hands it every such request once the key is checked and
the body bounded, and ``serve`` answers it: read the body, validate it once
(``PredictRequest.model_validate_json``), read ``X-Model-Version`` (a version pinned by
header), ask the predict service, render the answer once (orjson). Errors answer through
``cluster.ingress.http.error_parts``, the table FastAPI's handlers use, so they read the
same as any route's.
"""

from __future__ import annotations

import re
from typing import Any

from cluster import errors
from cluster.ingress import context
from cluster.ingress.http import error_parts, send_json
from cluster.schemas import PredictRequest

PATH = re.compile(r"/v1/deployments/([^/]+)/predict")
VERSION_HEADER = b"x-model-version"


async def serve(name: str, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
    """Answer one prediction on ASGI ``receive`` / ``send``; ``headers`` as the door read them."""
    body = await read_body(receive)
    if body is None:
        return  # the client left, or the door refused the body: no one to answer
    await send_json(send, *await answer(name, body, headers))


async def answer(
    name: str, body: bytes, headers: dict[bytes, bytes]
) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON payload and extra headers of the prediction ``body`` asks of ``name``."""
    try:
        req = PredictRequest.model_validate_json(body)
        version = pinned_version(headers.get(VERSION_HEADER))
        return 200, await context.get_control().predictions.predict(name, req, version), {}
    except Exception as exc:  # noqa: BLE001 - every failure answers in the one error format
        return error_parts(exc, headers.get(b"x-request-id", b"").decode("latin-1"))


def pinned_version(value: bytes | None) -> int | None:
    """The version an ``X-Model-Version`` header pins: a whole number >= 1 (else 422)."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise errors.InvalidInput(
            f"header X-Model-Version: a model version, a whole number >= 1 (got {text!r})"
        )
    return int(text)


async def read_body(receive: Any) -> bytes | None:
    """The whole body, or None when the client left before sending all of it. The door in
    front bounds its size."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # the usual case: one message, nothing to join
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
