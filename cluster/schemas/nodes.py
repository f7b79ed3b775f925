"""The cluster view, pages, and the registry's set-aside rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from cluster.schemas.base import Schema


class NodePublic(Schema):
    node_id: str
    alive: bool
    address: str | None = None
    resources_total: dict[str, float]


class ClusterPublic(Schema):
    nodes: list[NodePublic]
    gpus_total: float
    gpus_free: float
    cpus_total: float
    cpus_free: float


class Page(Schema):
    items: list[Any]
    total: int
    offset: int
    limit: int


class QuarantinedRow(Schema):
    """A registry row set aside at start because it could not be read: kept as stored, for
    an operator to repair or drop (``GET /v1/admin/quarantine``)."""

    qid: int
    table: str
    id: str
    doc: str = Field(description="The document as it was stored.")
    error: str = Field(description="Why it could not be read.")
    at: datetime
