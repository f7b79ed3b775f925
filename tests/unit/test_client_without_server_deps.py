"""``pip install modelyard`` (no ``[server]``): the client and the CLI's client commands
import nothing of the server, and ``up``/``down`` say what to install.

Each test runs a fresh interpreter in which Ray, torch, FastAPI, pydantic-settings, the
trainer and the replicas' code cannot be imported (``tests.no_server_deps``).
"""

from __future__ import annotations

import pytest

from tests import no_server_deps


def test_the_server_packages_cannot_be_imported_there():
    for module in ("ray", "torch", "train_jobs", "fastapi", "cluster.settings"):
        result = no_server_deps.run(f"import {module}\n")
        assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr, module


def test_the_client_and_the_cli_import_no_server_module():
    result = no_server_deps.run(
        "import cluster.client, cluster.cli, cluster.schemas, cluster.schemas.training\n"
        "from cluster.cli import main\n"
        "from cluster.client import Client\n"
        "assert Client(url='http://x').url == 'http://x'\n"
    )
    assert result.returncode == 0, result.stderr


def test_client_commands_run_and_explain_a_server_they_cannot_reach():
    result = no_server_deps.run(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cluster.cli import app\n"
        "for args in (['--help'], ['deployments', '--help'], ['tune', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "out = CliRunner().invoke(app, ['status', '--url', 'http://127.0.0.1:9'])\n"
        "assert out.exit_code == 1, out.output\n"
        "assert 'cannot reach modelyard at http://127.0.0.1:9' in out.stderr, out.stderr\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["up", "down"])
def test_up_and_down_say_to_install_the_server_extras(command):
    result = no_server_deps.run(no_server_deps.cli(command))
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert f"'modelyard {command}' runs the server" in message
    assert "pip install 'modelyard[server]'" in message
    assert "Traceback" not in result.stderr
