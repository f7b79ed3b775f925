"""Only what modelyard made: a Serve app someone else runs on the cluster, named like one of
modelyard's model apps (``<name>--v<N>``), keeps running and answering through reconciles,
a deploy that would have replaced it, and a deploy and delete of a deployment beside it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from ray import serve

from tests.e2e.support import API_KEY, deploy, wait_for

pytestmark = pytest.mark.e2e

FOREIGN = "other--v1"
PREFIX = "/someone-elses-app"


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
class Other:
    async def __call__(self, request) -> str:
        return "not modelyard's"


@pytest.fixture
def foreign_app(local_cluster, clean_serve) -> Iterator[str]:
    """A Serve app of someone else's, deployed straight through Serve, deleted at the end
    (before ``clean_serve`` checks that only the control app is left)."""
    serve.run(Other.bind(), name=FOREIGN, route_prefix=PREFIX)
    try:
        yield f"{local_cluster.url}{PREFIX}"
    finally:
        serve.delete(FOREIGN)


def answers(url: str) -> bool:
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.text == "not modelyard's"


def running() -> bool:
    app = serve.status().applications.get(FOREIGN)
    return app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING"


def register_echo(api, model_id: str) -> None:
    body = {"model_id": model_id, "kind": "custom", "predictor": "tests.predictors:Echo"}
    r = api.post("/v1/models", json={**body, "artifact_uri": ""})
    assert r.status_code in (201, 409), r.text


def test_a_foreign_app_named_like_a_model_app_is_left_alone(api, foreign_app):
    assert answers(foreign_app)
    time.sleep(6)  # three settled reconcile ticks: the old operator deleted it in the first
    assert running() and answers(foreign_app)

    register_echo(api, "own-echo")
    # A deployment whose app would be named like the foreign one fails; the app is untouched.
    clash = deploy(api, model_id="own-echo", deployment_name="other", timeout_s=60)
    assert clash["status"] == "failed", clash
    assert f"'{FOREIGN}' that modelyard did not create" in clash["error"]
    assert running() and answers(foreign_app)
    r = api.post("/v1/delete", json={"deployment_name": "other"})
    assert r.status_code == 202, r.text
    wait_for(lambda: api.get("/v1/deployments/other").status_code == 404, 60, "'other' to go")
    assert running() and answers(foreign_app)

    # A deployment of modelyard's own beside it: deployed, serving, deleted; it stays.
    task = deploy(api, model_id="own-echo", deployment_name="mine", timeout_s=120)
    assert task["status"] == "done", task
    r = api.post("/v1/deployments/mine/predict", json={"args": {"x": 1}})
    assert r.status_code == 200, r.text
    assert api.post("/v1/delete", json={"deployment_name": "mine"}).status_code == 202
    wait_for(lambda: "mine--v1" not in serve.status().applications, 60, "mine's Serve app to go")
    time.sleep(4)
    assert running() and answers(foreign_app)


def test_down_deletes_modelyards_apps_and_leaves_the_foreign_one(api, local_cluster, foreign_app):
    from cluster.bootstrap import start_control_plane, stop_control_plane
    from cluster.settings import CONTROL_APP, key_digest

    register_echo(api, "own-echo")
    task = deploy(api, model_id="own-echo", deployment_name="mine", timeout_s=120)
    assert task["status"] == "done", task
    try:
        report = stop_control_plane(local_cluster.settings.db_path, timeout_s=60)
        assert report.deleted[0] == CONTROL_APP and "mine--v1" in report.deleted
        assert FOREIGN not in report.deleted and FOREIGN in report.left
        assert report.source == "registry"
        apps = set(serve.status().applications)
        assert CONTROL_APP not in apps and "mine--v1" not in apps
        assert running() and answers(foreign_app)
    finally:
        # Back up for the rest of the session: the registry reloads from its database.
        local_cluster.info = start_control_plane(
            local_cluster.settings, key_digest(API_KEY), deploy_default=False
        )
        wait_for(local_cluster._healthy, 60, "the control app to answer /healthz again")
    # The operator restores modelyard's deployment; the foreign app is still untouched.
    wait_for(
        lambda: api.get("/v1/deployments/mine").json().get("status") == "ACTIVE",
        120,
        "'mine' to be restored",
    )
    assert running() and answers(foreign_app)
