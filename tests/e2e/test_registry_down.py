"""Nothing hangs while the registry is down: control routes answer 503 with Retry-After
within a few seconds, predictions keep flowing from the ingress's routing cache, and a
registry created again under its name is found again by the ingress."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import ray

from cluster.registry import get_or_create_registry, registry_handle
from cluster.settings import ASYNC_WORKER_ACTOR, NAMESPACE, OPERATOR_ACTOR
from tests.conftest import deploy, wait_for
from tests.e2e.test_deploy import register_echo

pytestmark = pytest.mark.e2e

ANSWER_WITHIN_S = 5.0


def _registry_pid() -> int:
    handle = registry_handle()
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def _assert_control_route_is_503_fast(api: httpx.Client) -> None:
    start = time.monotonic()
    resp = api.get("/v1/deployments", timeout=ANSWER_WITHIN_S + 5)
    elapsed = time.monotonic() - start
    assert resp.status_code == 503, resp.text
    assert elapsed < ANSWER_WITHIN_S, f"503 took {elapsed:.1f}s"
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


def _recreate_control_actors(local_cluster) -> None:
    """The operator and async worker keep the handle they were created with, which points
    at the killed registry; they are created again so the rest of the suite has them."""
    from cluster.async_worker import get_or_create_async_worker
    from cluster.bootstrap import _dashboard_url
    from cluster.operator import get_or_create_operator

    head = ray.get_runtime_context().get_node_id()
    for name in (OPERATOR_ACTOR, ASYNC_WORKER_ACTOR):
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    wait_for(lambda: not _named(OPERATOR_ACTOR) and not _named(ASYNC_WORKER_ACTOR), 30, "names")
    get_or_create_operator(head, str(local_cluster.settings.root), _dashboard_url())
    get_or_create_async_worker(head_node_id=head)


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
    _recreate_control_actors(local_cluster)
    register_echo(api, "after-recreate")
    assert deploy(api, model_id="after-recreate")["status"] == "done"
    _predicts(api, "after-recreate")
