"""Batch predictions from the client and the CLI, against httpx.MockTransport."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from cluster.cli import app, common
from cluster.client import Client, describe_task
from cluster.schemas import (
    Task,
)

# ------------------------------------------------------------------ client and CLI


def batch_task(status: str, done: int = 0) -> dict:
    progress = {"rows_done": done, "rows_total": 10, "percent": done * 10.0, "errors": 0}
    return {"id": "batch_prediction-1", "kind": "batch_prediction", "status": status,
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
            "deployment_name": "d", "detail": {"progress": progress}}  # fmt: skip


class Server:
    """Answers by (method, path); keeps the JSON bodies it was sent."""

    def __init__(self, routes: dict) -> None:
        self.routes, self.sent = routes, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.content:
            self.sent.append(json.loads(request.content))
        answer = self.routes[(request.method, request.url.path)]
        return httpx.Response(200, json=answer() if callable(answer) else answer)


def batch_server() -> Server:
    answers = [batch_task("processing", 5), batch_task("done", 10)]
    deployment = {"name": "d", "model_id": "m", "model_version": 1, "app_name": "d--v1",
                  "status": "ACTIVE"}  # fmt: skip
    return Server(
        {
            ("GET", "/v1/deployments/d"): deployment,
            ("POST", "/v1/deployments/d/batch-predictions"): batch_task("pending"),
            ("GET", "/v1/tasks/batch_prediction-1"): lambda: answers.pop(0),
        }
    )


def test_client_batch_predict_sends_the_request_and_waits(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    server = batch_server()
    client = Client(url="http://t", api_key="k", transport=httpx.MockTransport(server))
    with client:
        deployment = client.get_deployment("d")
        task = deployment.batch_predict("in.jsonl", "out.jsonl", wait=True, batch_size=8)
    assert task.status == "done" and task.detail["progress"]["rows_done"] == 10
    sent = server.sent
    assert sent == [{"input_uri": "in.jsonl", "output_uri": "out.jsonl", "batch_size": 8,
                     "overwrite": False}]  # fmt: skip
    assert "rows 5/10 (50.0%)" in describe_task(Task.model_validate(batch_task("processing", 5)))


def test_cli_batch_predict_waits_and_prints_the_task(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    server = batch_server()
    monkeypatch.setattr(
        common,
        "make_client",
        lambda url, key: Client(url="http://t", api_key="k", transport=httpx.MockTransport(server)),
    )
    result = CliRunner().invoke(
        app,
        ["batch-predict", "d", "in.jsonl", "out.jsonl", "--wait", "--overwrite"]
        + ["--concurrency", "2", "--num-cpus-per-copy", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "batch_prediction-1: done" in result.output and "rows 10/10" in result.output
    sent = server.sent[0]
    assert sent["overwrite"] is True
    assert sent["concurrency"] == 2 and sent["num_cpus_per_copy"] == 1
