"""What the client and CLI unit tests share: a fake server answering by route through
``httpx.MockTransport``, the bodies it answers with, and a CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from typer.testing import CliRunner

from cluster.cli import app
from cluster.client import Client

NOW = "2025-01-01T00:00:00Z"

PAIRS = [{"anchor": f"q{i}", "positive": f"a{i}"} for i in range(8)]

PATH = "/v1/fine-tuning/task"


def make_client(handler: Callable[[httpx.Request], httpx.Response], **kwargs) -> Client:
    return Client(
        url="http://modelyard.test", api_key="k", transport=httpx.MockTransport(handler), **kwargs
    )


def error(code: int, type_: str, message: str, /, **extra) -> httpx.Response:
    body = {"error": {"type": type_, "message": message, "request_id": "rid-1"}, **extra}
    headers = {"Retry-After": "0"} if code == 429 else {}
    return httpx.Response(code, json=body, headers=headers)


def task(status: str = "done", **fields) -> dict:
    return {"id": "deploy-abc", "kind": "deploy", "status": status, "created_at": NOW,
            "updated_at": NOW, **fields}  # fmt: skip


class Server:
    """Answers by (method, path) from ``routes`` (a JSON body, a Response or a callable);
    records every request with its decoded body."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, dict, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, dict(request.url.params), sent))
        answer = self.routes[(request.method, request.url.path)]
        answer = answer(request) if callable(answer) else answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def bodies(self, method: str) -> list[Any]:
        return [b for m, _, _, b in self.seen if m == method]


def deployment_body(**fields) -> dict:
    return {
        "name": "d",
        "model_id": "m",
        "model_version": 1,
        "app_name": "d--v1",
        "status": "ACTIVE",
        **fields,
    }


def rollout_task(status: str = "processing", detail: dict | None = None, **fields) -> dict:
    detail = {"from_version": 1, "to_version": 2, "strategy": "green", **(detail or {})}
    return task(status, id="rollout-1", kind="rollout", detail=detail, **fields)


def ft_task(status: str = "pending", step: int = 0, total: int = 6, **detail) -> dict:
    progress = {"step": step, "total_steps": total, "percent": 100.0 * step / total,
                "loss": 0.5 / (step + 1), "epoch": 0.5, "eta_s": 1.0}  # fmt: skip
    return {"id": "ft-1", "kind": "fine_tuning", "status": status, "model_id": "m",
            "created_at": NOW, "updated_at": NOW,
            "detail": {"progress": progress, **detail}}  # fmt: skip


def steps(*answers: dict):
    """A route answering each body in turn, then the last one again."""
    items = list(answers)
    return lambda request: httpx.Response(200, json=items.pop(0) if len(items) > 1 else items[0])


runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})
