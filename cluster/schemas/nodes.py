"""The cluster view."""

from __future__ import annotations

from typing import Any

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
