"""What the client sends and reads: request bodies, tolerant parsing, typed pages.

Bodies are built with the server's own schemas (``cluster.schemas``), which forbid unknown
fields, so a typo fails here before any request is sent. Answers are read leniently: a newer
server may add fields, at any depth, and this client ignores them.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from pydantic import BaseModel

from cluster.schemas import Page, PredictRequest, PredictResponse, Task

S = TypeVar("S", bound=BaseModel)

# pydantic >= 2.12 takes ``extra`` per call (and applies it to nested models too); older
# versions read answers with the schemas' own strict setting.
_PER_CALL_EXTRA = "extra" in inspect.signature(BaseModel.model_validate).parameters


def parse(schema: type[S], data: Any) -> S:
    """``data`` (a decoded JSON answer) as ``schema``, ignoring fields it does not know."""
    if _PER_CALL_EXTRA:
        return schema.model_validate(data, extra="ignore")
    return schema.model_validate(data)


def body(request: BaseModel) -> dict[str, Any]:
    """A request's JSON body: the fields the caller set, without top-level nulls, so the
    server applies its own defaults to the rest."""
    data = request.model_dump(mode="json", exclude_unset=True)
    return {k: v for k, v in data.items() if v is not None}


class EndpointRequest(PredictRequest):
    """A prediction: ``args`` (the predictor's keyword arguments) or ``url`` of a JSON args
    object, never both; ``version`` pins a live version; ``request_id`` is echoed back."""


class EndpointResponse(PredictResponse):
    """A prediction's answer: ``status``, ``result``, ``model_version``, ``request_id``."""


class TaskPage(Page):
    """One page of ``GET /v1/tasks``: ``items`` (oldest first), ``total``, ``offset``,
    ``limit``."""

    items: list[Task]
