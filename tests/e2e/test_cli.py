"""The ``modelyard`` client commands against the real control app on the session's Ray."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from tests.e2e.support import API_KEY, deploy, register, wait_for

pytestmark = pytest.mark.e2e

runner = CliRunner()
NAME = "cli-swap"


@pytest.fixture
def cli(local_cluster):
    env = {"MODELYARD_URL": local_cluster.url, "MODELYARD_API_KEY": API_KEY, "COLUMNS": "200"}

    def invoke(*args: str, code: int | None = 0):
        """Run one command; check its exit code unless ``code`` is None."""
        result = runner.invoke(app, list(args), env=env)
        assert code is None or result.exit_code == code, (args, result.output)
        return result

    return invoke


def _artifact(artifact_dir, name: str, **conf) -> str:
    path = artifact_dir / f"{name}.json"
    path.write_text(json.dumps(conf))
    return str(path)


def test_register_deploy_describe_predict(cli, clean_serve, artifact_dir):
    model_id = f"cli-{uuid.uuid4().hex[:8]}"
    uri = _artifact(artifact_dir, "v1")
    out = cli(
        "register",
        model_id,
        "--kind",
        "custom",
        "--predictor",
        "tests.predictors:Versioned",
        "--artifact-uri",
        uri,
    ).stdout
    assert f"registered {model_id} v1 (custom)" in out
    assert model_id in cli("models").stdout
    cli("register", model_id, "--kind", "custom", "--predictor", "a:B", code=1)

    done = cli("deploy", model_id, "--name", NAME, "--cpus", "0.5", "--wait", "--timeout", "240")
    assert "done" in done.stdout
    listed = cli("deployments").stdout
    assert NAME in listed and "ACTIVE" in listed and "100% v1" in listed

    described = cli("describe", NAME).stdout
    for text in (
        "ACTIVE",
        "0.5 CPU",
        "traffic split",
        f"{NAME}--v1",
        "100%",
        "allocation: fully_allocated, 1/1 replicas",
        "started",
    ):
        assert text in described, text

    answer = json.loads(cli("predict", NAME, "--args", '{"x": 1}').stdout)
    assert answer["result"] == {"echo": {"x": 1}} and answer["model_version"] == 1
    missing = cli("describe", "no-such-deployment", code=1)
    assert "404 not_found" in missing.stderr and "request id:" in missing.stderr


def test_swap_live_then_events_tasks_stop_start(cli, api, clean_serve, artifact_dir):
    model_id = f"cli-{uuid.uuid4().hex[:8]}"
    register(
        api,
        model_id=model_id,
        kind="custom",
        predictor="tests.predictors:Versioned",
        artifact_uri=_artifact(artifact_dir, "v1"),
    )
    assert deploy(api, model_id=model_id, deployment_name=NAME)["status"] == "done"
    resp = api.post(
        f"/v1/models/{model_id}/versions", json={"artifact_uri": _artifact(artifact_dir, "v2")}
    )
    assert resp.status_code == 201, resp.text
    v2 = resp.json()["version"]

    swapped = cli(
        "swap",
        NAME,
        str(v2),
        "--steps",
        "50,100",
        "--interval",
        "0.5",
        "--min-requests",
        "0",
        "--timeout",
        "240",
    ).stdout
    assert "done" in swapped and "traffic split" in swapped and f"{NAME}--v{v2}" in swapped
    assert f"{model_id} v{v2}" in cli("describe", NAME).stdout
    assert "rollout_done" in cli("events", NAME).stdout
    tasks = cli("tasks", "--kind", "rollout", "--status", "done", "--limit", "500").stdout
    assert NAME in tasks

    assert f"{NAME}: STOPPED" in cli("stop", NAME).stdout
    refused = cli("predict", NAME, "--args", "{}", code=1)
    assert "503" in refused.stderr and "stopped" in refused.stderr
    assert f"{NAME}: ACTIVE" in cli("start", NAME, "--wait", "--timeout", "120").stdout
    wait_for(
        lambda: cli("predict", NAME, "--args", "{}", code=None).exit_code == 0,
        20,
        "predictions after start",
    )
