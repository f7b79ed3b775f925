"""The client commands of the ``modelyard`` CLI against ``httpx.MockTransport``: what they
send, what they print, and their exit codes (0 ok, 1 server error or failed task, 2 usage)."""

from __future__ import annotations

import json

import httpx
import pytest

from cluster.cli import app, common
from cluster.client import Client
from tests.unit.client_support import NOW, deployment_body, error, rollout_task, run, runner, task


def sequence(*bodies: dict):
    """A route answering each body in turn, then the last one again."""
    items = list(bodies)
    return lambda request: httpx.Response(200, json=items.pop(0) if len(items) > 1 else items[0])


SWAPPING = deployment_body(
    status="UPDATING",
    pending_model_version=2,
    traffic={"d--v1": 50, "d--v2": 50},
    rollout={
        "task_id": "rollout-1",
        "from_version": 1,
        "to_version": 2,
        "blue_app": "d--v1",
        "green_app": "d--v2",
        "config": {},
        "options": {"steps": [50, 100]},
        "phase": "shifting",
        "step_index": 0,
    },
    allocation={
        "allocation_state": "starting",
        "target_replicas": 2,
        "running_replicas": 1,
        "routing_table": {
            "r-started": {"node_id": "node-1", "routing_state": "started"},
            "r-waiting": {"routing_state": "starting", "reason": "insufficient GPU"},
        },
        "reason": "insufficient GPU",
    },
)


# ---------------------------------------------------------------- deploy, delete


def test_deploy_sends_the_config_given_and_prints_the_task(serve):
    server = serve({("POST", "/v1/deploy"): task("pending")})
    result = run("deploy", "m", "--name", "d", "--replicas", "2", "--gpus", "0.5")
    assert result.exit_code == 0, result.output
    assert "deploy deploy-abc: pending" in result.stdout
    (sent,) = server.bodies("POST")
    assert sent["model_id"] == "m" and sent["deployment_name"] == "d"
    assert sent["config"] == {"num_replicas": 2, "resources": {"num_gpus": 0.5}}


def test_deploy_wait_follows_the_task_and_fails_with_it(serve, no_sleep):
    states = sequence(task("processing"), task("failed", error="weights are corrupt"))
    serve({("POST", "/v1/deploy"): task("pending"), ("GET", "/v1/tasks/deploy-abc"): states})
    result = run("deploy", "m", "--wait")
    assert result.exit_code == 1
    assert "failed" in result.stderr and "weights are corrupt" in result.stderr


def test_server_errors_print_message_and_request_id_and_exit_1(serve):
    serve({("POST", "/v1/deploy"): error(409, "conflict", "deployment 'd' serves model 'x'")})
    result = run("deploy", "m", "--name", "d")
    assert result.exit_code == 1
    assert "error 409 conflict: deployment 'd' serves model 'x'" in result.stderr
    assert "request id: rid-1" in result.stderr and result.stdout == ""


def test_predictor_failures_show_the_traceback(serve):
    failure = error(500, "predictor_error", "boom", status="FAILURE", traceback="Traceback: x")
    serve({("POST", "/v1/deployments/d/predict"): failure})
    result = run("predict", "d", "--args", "{}")
    assert result.exit_code == 1 and "boom" in result.stderr and "Traceback: x" in result.stderr


def test_unreachable_server_exits_1(serve):
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    serve({("GET", "/v1/deployments"): refuse})
    result = run("deployments")
    assert result.exit_code == 1 and "cannot reach modelyard at http://cli.test" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("delete",),
        ("delete", "--model", "m", "--name", "d"),
        ("predict", "d"),
        ("predict", "d", "--texts", "a", "--args", "{}"),
        ("predict", "d", "--args", "not json"),
        ("predict", "d", "--args", "[1, 2]"),
        ("deploy", "m", "--replicas", "0"),
        ("swap", "d", "2", "--steps", "ten,100"),
        ("swap", "d", "2", "--steps", "10,50"),
        ("swap", "d", "2", "--strategy", "blue"),
        ("tasks", "--kind", "training"),
        ("describe",),
    ],
)
def test_usage_errors_exit_2_without_changing_anything(serve, args):
    server = serve({})
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert server.seen == []


def test_delete_by_name_or_model(serve):
    server = serve({("POST", "/v1/delete"): task("pending", kind="delete", id="delete-1")})
    assert run("delete", "--name", "d", "--reason", "done").exit_code == 0
    assert run("delete", "--model", "m").exit_code == 0
    assert server.bodies("POST") == [
        {"deployment_name": "d", "reason": "done"},
        {"model_id": "m"},
    ]


# ---------------------------------------------------------------- reading


def test_deployments_and_describe_show_traffic_rollout_and_allocation(serve):
    serve({("GET", "/v1/deployments"): [SWAPPING], ("GET", "/v1/deployments/d"): SWAPPING})
    listed = run("deployments")
    assert listed.exit_code == 0
    assert "v1 -> v2" in listed.stdout and "50% v1, 50% v2" in listed.stdout
    result = run("describe", "d")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "traffic split",
        "d--v2",
        "50%",
        "rollout",
        "shifting",
        "1/2 of [50, 100]",
        "allocation: starting, 1/2 replicas",
        "r-waiting",
        "insufficient GPU",
        "node-1",
    ):
        assert text in out, text


def test_predict_prints_json_and_pins_versions(serve):
    answer = {
        "status": "SUCCESS",
        "result": {"embeddings": [[0.5]]},
        "model_version": 2,
        "request_id": None,
    }
    server = serve({("POST", "/v1/deployments/d/predict"): answer})
    result = run("predict", "d", "--texts", "a", "--texts", "b", "--version", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == answer
    assert run("predict", "d", "--args", '{"x": 1}').exit_code == 0
    assert server.bodies("POST") == [
        {"args": {"texts": ["a", "b"]}, "version": 2},
        {"args": {"x": 1}},
    ]


def test_events_tasks_and_models(serve):
    event = {
        "deployment": "d",
        "type": "rollback",
        "message": "error rate 50%",
        "data": {"error_rate": 0.5},
        "at": NOW,
    }
    page = {"items": [rollout_task("done")], "total": 9, "offset": 0, "limit": 1}
    model = {
        "model_id": "m",
        "kind": "custom",
        "predictor": "p:C",
        "latest_version": 2,
        "versions": [1, 2],
        "created_at": NOW,
    }
    server = serve(
        {
            ("GET", "/v1/deployments/d"): deployment_body(),
            ("GET", "/v1/deployments/d/events"): [event],
            ("GET", "/v1/tasks"): page,
            ("GET", "/v1/models"): [model],
        }
    )
    events = run("events", "d")
    assert (
        events.exit_code == 0 and "rollback" in events.stdout and "error_rate=0.5" in events.stdout
    )
    tasks = run("tasks", "--kind", "rollout", "--status", "done", "--limit", "1")
    assert tasks.exit_code == 0 and "rollout-1" in tasks.stdout and "1 of 9" in tasks.stdout
    assert server.seen[-1][2] == {"kind": "rollout", "status": "done", "offset": "0", "limit": "1"}
    models = run("models")
    assert models.exit_code == 0 and "1,2" in models.stdout and "p:C" in models.stdout


def test_register(serve):
    version = {
        "model_id": "m",
        "version": 1,
        "kind": "custom",
        "artifact_uri": "",
        "predictor": "p:C",
        "created_at": NOW,
    }
    model = {
        "model_id": "m",
        "kind": "custom",
        "predictor": "p:C",
        "latest_version": 1,
        "versions": [1],
        "created_at": NOW,
    }
    server = serve({("POST", "/v1/models"): version, ("GET", "/v1/models/m"): model})
    result = run("register", "m", "--kind", "custom", "--predictor", "p:C")
    assert result.exit_code == 0, result.output
    assert "registered m v1 (custom)" in result.stdout
    assert server.bodies("POST")[0]["predictor"] == "p:C"


# ---------------------------------------------------------------- swaps and lifecycle


def test_swap_watches_until_the_task_ends(serve, no_sleep):
    done = deployment_body(model_version=2, previous_version=1, serve_app="d--v2")
    window = {"requests": 4, "errors": 0, "error_rate": 0.0, "p99_ms": 7.5}
    shifting = {"phase": "shifting", "traffic_percent": 50, "window": window}
    tasks = sequence(rollout_task("processing", shifting), rollout_task("done", {"phase": "done"}))
    server = serve(
        {
            ("GET", "/v1/deployments/d"): sequence(deployment_body(), SWAPPING, done),
            ("PUT", "/v1/deployments/d/model-version"): rollout_task("pending"),
            ("GET", "/v1/tasks/rollout-1"): tasks,
        }
    )
    result = run("swap", "d", "2", "--steps", "50,100", "--interval", "0.5", "--min-requests", "0")
    assert result.exit_code == 0, result.output
    assert server.bodies("PUT") == [
        {
            "version": 2,
            "rollout": {"steps": [50, 100], "step_interval_s": 0.5, "min_requests_per_step": 0},
        }
    ]
    assert "rollout rollout-1: done" in result.stdout
    assert "d--v2" in result.stdout and "100%" in result.stdout  # the final traffic split


def test_a_refused_or_failed_swap_exits_1(serve, no_sleep):
    refused = rollout_task("refused", error="not enough free resources: GPU=1 (free 0)")
    serve({("PUT", "/v1/deployments/d/model-version"): refused})
    result = run("swap", "d", "2")
    assert result.exit_code == 1 and "not enough free resources" in result.stderr

    failed = rollout_task("failed", error="rolled back at 50%: error rate 40.0%")
    serve(
        {
            ("PUT", "/v1/deployments/d/model-version"): rollout_task("pending"),
            ("GET", "/v1/tasks/rollout-1"): failed,
        }
    )
    result = run("swap", "d", "2")
    assert result.exit_code == 1 and "rolled back at 50%" in result.stderr


def test_rollback_stop_start(serve, no_sleep):
    server = serve(
        {
            ("POST", "/v1/deployments/d/rollback"): rollout_task("processing"),
            ("POST", "/v1/deployments/d/stop"): deployment_body(status="STOPPED"),
            ("POST", "/v1/deployments/d/start"): deployment_body(status="PENDING"),
        }
    )
    assert "rollout rollout-1: processing" in run("rollback", "d").stdout
    assert "d: STOPPED" in run("stop", "d").stdout
    assert "d: PENDING" in run("start", "d").stdout
    assert run("start", "d", "--wait").stdout.strip() == "d: ACTIVE"
    params = server.seen[-1][2]
    assert params["wait"] == "true" and 599 < float(params["timeout_s"]) <= 600
    failed = deployment_body(status="FAILED", error="weights are corrupt")
    server.routes[("GET", "/v1/deployments/d")] = sequence(deployment_body(), failed)
    result = run("start", "d", "--wait")
    assert result.exit_code == 1 and "weights are corrupt" in result.stderr


# ---------------------------------------------------------------- where to connect


def test_url_and_key_come_from_options_then_environment(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(
        common,
        "make_client",
        lambda url, key: (
            seen.append((url, key))
            or Client(
                url="http://x",
                api_key="k",
                transport=httpx.MockTransport(lambda r: httpx.Response(200, json=[])),
            )
        ),
    )
    assert runner.invoke(app, ["models", "--url", "http://a:1", "--api-key", "s"]).exit_code == 0
    env = {"MODELYARD_URL": "http://b:2", "MODELYARD_API_KEY": "t"}
    assert runner.invoke(app, ["deployments"], env=env).exit_code == 0
    # status finds the server as every other command does (it once read only host and port).
    assert runner.invoke(app, ["status"], env=env).exit_code == 0
    assert runner.invoke(app, ["status", "--url", "http://c:3", "--api-key", "u"]).exit_code == 0
    assert seen == [
        ("http://a:1", "s"),
        ("http://b:2", "t"),
        ("http://b:2", "t"),
        ("http://c:3", "u"),
    ]


def test_default_url_is_host_and_port(monkeypatch):
    monkeypatch.setenv("MODELYARD_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELYARD_PORT", "9123")
    assert common.default_url() == "http://127.0.0.1:9123"
    monkeypatch.setenv("MODELYARD_HOST", "head.internal")
    assert common.make_client(None, "k").url == "http://head.internal:9123"


def test_status_lists_the_deployments_or_says_where_it_looked(serve, monkeypatch):
    serve({("GET", "/v1/deployments"): [deployment_body()]})
    result = run("status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "modelyard at http://cli.test: up"
    assert lines[1].split()[:4] == ["d", "m", "v1", "ACTIVE"]
    monkeypatch.setattr(common, "make_client", lambda url, key: Client(url=url, api_key=key))
    result = runner.invoke(app, ["status"], env={"MODELYARD_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 1
    assert "cannot reach modelyard at http://127.0.0.1:9" in result.stderr


def test_a_port_that_is_no_port_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("MODELYARD_URL", raising=False)
    result = runner.invoke(app, ["deployments"], env={"MODELYARD_PORT": "eighty"})
    assert result.exit_code == 2 and "MODELYARD_PORT must be a port" in result.output


def test_every_setting_is_an_up_option():
    import inspect

    from cluster.cli import server
    from cluster.settings import Settings

    options = set(inspect.signature(server.up).parameters)
    assert set(Settings.model_fields) <= options, set(Settings.model_fields) - options


# ---------------------------------------------------------------- down


def test_down_deletes_only_modelyards_apps_and_says_what_it_left(monkeypatch, tmp_path):
    from cluster import bootstrap
    from cluster.cli import server

    seen = {}

    def stop(db_path):
        seen["db_path"] = db_path
        return bootstrap.StopReport(
            deleted=["modelyard", "emb--v1"], left=["other--v1"], source="registry"
        )

    monkeypatch.setattr(server, "_connect", lambda *a, **k: False)
    monkeypatch.setattr(bootstrap, "stop_control_plane", stop)
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path))
    result = run("down", "--ray-address", "ray://shared:10001")
    assert result.exit_code == 0, result.output
    assert seen["db_path"] == tmp_path.resolve() / "registry.db"
    assert "deleted modelyard, emb--v1 (modelyard's apps from registry)" in result.output
    assert "left running (not modelyard's): other--v1" in result.output


@pytest.mark.parametrize("started_by_up", [True, False])
def test_down_stops_a_local_ray_only_when_up_started_it(monkeypatch, tmp_path, started_by_up):
    from cluster import bootstrap
    from cluster.cli import server

    stopped = []
    monkeypatch.setattr(server, "_connect", lambda *a, **k: False)
    monkeypatch.setattr(
        bootstrap, "stop_control_plane", lambda db: bootstrap.StopReport([], [], "registry")
    )
    monkeypatch.setattr(server.subprocess, "run", lambda cmd, **k: stopped.append(cmd))
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path))
    marker = tmp_path / "ray-started-by-up"
    if started_by_up:
        marker.write_text("1\n")
    result = run("down")
    assert result.exit_code == 0, result.output
    assert bool(stopped) == started_by_up
    assert not marker.exists()


def test_down_deletes_the_control_app_first_then_only_recorded_apps():
    from cluster.bootstrap import apps_to_delete

    present = dict.fromkeys(["other--v1", "emb--v2", "modelyard", "emb--v1", "mine"])
    assert apps_to_delete(present, {"emb--v1", "emb--v2", "gone--v1"}) == [
        "modelyard",
        "emb--v1",
        "emb--v2",
    ]
    assert apps_to_delete({"other--v1": None}, {"emb--v1"}) == []


def test_down_without_a_registry_reads_the_apps_it_recorded_from_its_database(tmp_path):
    from cluster.bootstrap import owned_apps_in_db
    from cluster.registry.actor import RegistryCore

    db = tmp_path / "registry.db"
    assert owned_apps_in_db(db) == set()  # no database: nothing is known to be modelyard's
    core = RegistryCore(db)
    core.record_serve_app("emb--v1", "emb")
    core.record_serve_app("emb--v2", "emb")
    core.forget_serve_apps(["emb--v1"])
    assert owned_apps_in_db(db) == {"emb--v2"}  # read beside the live registry, too
    core.close()
