"""Nothing hangs while the registry is down: control routes answer 503 with Retry-After
within a few seconds, predictions keep flowing from the ingress's routing cache, and a
registry created again under its name is found again by the ingress, the operator and the
async worker, none of them created again."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
import ray

from cluster.registry.actor import get_or_create_registry, registry_handle
from cluster.settings import ASYNC_WORKER_ACTOR, NAMESPACE, OPERATOR_ACTOR
from tests.e2e.support import deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e

# The client gives up after this; a control route waiting on the stopped registry would hang.
ANSWER_WITHIN_S = 5.0


def _registry_pid() -> int:
    handle = registry_handle()
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def _assert_control_route_is_503_fast(api: httpx.Client) -> None:
    resp = api.get("/v1/deployments", timeout=ANSWER_WITHIN_S)
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) >= 1
    error = resp.json()["error"]
    assert error["type"] == "unavailable" and error["request_id"]


def _predicts(api: httpx.Client, name: str) -> None:
    resp = api.post(f"/v1/deployments/{name}/predict", json={"args": {"n": 1}}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["echo"] == {"n": 1}


def _control_answers(api: httpx.Client) -> bool:
    try:
        return api.get("/v1/deployments", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_paused_registry_gives_503_and_predictions_go_on(api, clean_serve):
    register_echo(api, "paused-echo")
    assert deploy(api, model_id="paused-echo")["status"] == "done"
    _predicts(api, "paused-echo")  # the routing cache now holds the deployment
    pid = _registry_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        _assert_control_route_is_503_fast(api)
        _predicts(api, "paused-echo")
        resp = api.get("/v1/tasks", timeout=ANSWER_WITHIN_S + 5)
        assert resp.status_code == 503 and "Retry-After" in resp.headers
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _control_answers(api), 60, "the registry to answer again")
    _predicts(api, "paused-echo")


def _actor_id(name: str) -> str:
    return ray.get_actor(name, namespace=NAMESPACE)._actor_id.hex()


def _async_result(api: httpx.Client, name: str, args: dict) -> dict:
    resp = api.post(f"/v1/deployments/{name}/async-predict", json={"args": args}, timeout=30)
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    return wait_for(
        lambda: (s := api.get(f"/v1/async-tasks/{task_id}").json())["status"] != "PENDING" and s,
        60,
        "the async prediction to finish",
    )


def _named(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def test_a_registry_killed_for_good_then_created_again_is_found_again(
    api, local_cluster, clean_serve
):
    register_echo(api, "recreated-echo")
    assert deploy(api, model_id="recreated-echo")["status"] == "done"
    _predicts(api, "recreated-echo")
    settings = local_cluster.settings
    head = ray.get_runtime_context().get_node_id()
    before = {name: _actor_id(name) for name in (OPERATOR_ACTOR, ASYNC_WORKER_ACTOR)}

    ray.kill(registry_handle(), no_restart=True)
    try:
        _assert_control_route_is_503_fast(api)
        _predicts(api, "recreated-echo")
    finally:
        wait_for(lambda: not _named("modelyard-registry"), 30, "the registry's name to be free")
        get_or_create_registry(settings.db_path, head, settings.async_result_ttl_s)

    # The ingress's handle points at the dead instance: it must look the name up again.
    wait_for(lambda: _control_answers(api), 30, "control routes to answer 200 again")
    names = [d["name"] for d in api.get("/v1/deployments").json()]
    assert "recreated-echo" in names  # reloaded from the database
    # The operator and the async worker were not created again: their gateways found the
    # new registry, so a deploy is reconciled and an async prediction is claimed and reported.
    register_echo(api, "after-recreate")
    assert deploy(api, model_id="after-recreate", timeout_s=120)["status"] == "done"
    _predicts(api, "after-recreate")
    state = _async_result(api, "after-recreate", {"n": 2})
    assert state["status"] == "SUCCESS", state
    assert state["result"]["echo"] == {"n": 2}
    assert {name: _actor_id(name) for name in before} == before
