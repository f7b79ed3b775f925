"""``pip install modelyard`` against a real server: the client and the CLI's client commands,
in an interpreter where Ray, torch, FastAPI and the trainer cannot be imported
(``tests.no_server_deps``), list deployments and predict on the session's local Ray."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests import no_server_deps
from tests.e2e.support import API_KEY, deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e

NAME = "nodeps-echo"


@pytest.fixture(scope="module")
def echo(api) -> Iterator[str]:
    """An echo deployment, made over the API by this (full) process."""
    register_echo(api, NAME)
    task = deploy(api, model_id=NAME, deployment_name=NAME, timeout_s=240)
    assert task["status"] == "done", task
    yield NAME
    api.post("/v1/delete", json={"deployment_name": NAME})
    wait_for(
        lambda: api.get(f"/v1/deployments/{NAME}").status_code == 404,
        120,
        f"deployment {NAME} to be deleted",
    )


@pytest.fixture
def env(local_cluster) -> dict[str, str]:
    return {"MODELYARD_URL": local_cluster.url, "MODELYARD_API_KEY": API_KEY, "COLUMNS": "200"}


def test_the_client_lists_and_predicts(echo, env):
    result = no_server_deps.run(
        f"""
import json
from cluster.client import Client

with Client() as client:  # MODELYARD_URL and MODELYARD_API_KEY
    names = [d.name for d in client.list_deployments()]
    answer = client.get_deployment({echo!r}).predict({{"x": 1, "words": ["a", "b"]}})
print(json.dumps({{"names": names, "status": answer.status, "result": answer.result}}))
""",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert echo in out["names"]
    assert out["status"] == "SUCCESS"
    assert out["result"]["echo"] == {"x": 1, "words": ["a", "b"]}


def test_the_cli_lists_predicts_and_reports_status(echo, env):
    listed = no_server_deps.run(no_server_deps.cli("deployments"), env=env)
    assert listed.returncode == 0, listed.stderr
    assert echo in listed.stdout and "ACTIVE" in listed.stdout

    predicted = no_server_deps.run(
        no_server_deps.cli("predict", echo, "--args", '{"x": 2}'), env=env
    )
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["status"] == "SUCCESS" and answer["result"]["echo"] == {"x": 2}

    # status reads MODELYARD_URL like every other command.
    status = no_server_deps.run(no_server_deps.cli("status"), env=env)
    assert status.returncode == 0, status.stderr
    assert f"modelyard at {env['MODELYARD_URL']}: up" in status.stdout
    assert echo in status.stdout

    refused = no_server_deps.run(
        no_server_deps.cli("deployments"), env={**env, "MODELYARD_API_KEY": "wrong"}
    )
    assert refused.returncode == 1 and "error 401" in refused.stderr, refused.stderr
