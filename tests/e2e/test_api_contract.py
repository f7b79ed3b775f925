"""Errors at the edge: auth, unknown ids, malformed bodies, all in the JSON error format."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"type", "message", "request_id"}
    return err


def test_health_needs_no_key(local_cluster):
    assert httpx.get(f"{local_cluster.url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}]
)
def test_v1_routes_need_the_admin_key(local_cluster, headers):
    for method, path in [
        ("GET", "/v1/deployments"),
        ("POST", "/v1/deploy"),
        ("GET", "/v1/cluster"),
    ]:
        resp = httpx.request(method, f"{local_cluster.url}{path}", headers=headers, json={})
        assert _error(resp, 401)["type"] == "unauthorized"


def test_unknown_ids_are_404(api):
    assert _error(api.get("/v1/deploy/deploy-doesnotexist"), 404)["type"] == "not_found"
    _error(api.get("/v1/delete/delete-doesnotexist"), 404)
    _error(api.get("/v1/deploy-status/no-such-model"), 404)
    _error(api.get("/v1/deployments/no-such-deployment"), 404)
    _error(api.get("/v1/models/no-such-model"), 404)
    _error(api.post("/v1/deployments/nope/predict", json={"args": {"texts": ["x"]}}), 404)
    err = _error(api.post("/v1/deploy", json={"model_id": "no-such-model"}), 404)
    assert "no-such-model" in err["message"]


def test_malformed_bodies_are_422_naming_the_field(api):
    err = _error(api.post("/v1/deploy", json={"model_id": "m", "config": {"num_replicas": 0}}), 422)
    assert "config.num_replicas" in err["message"]
    err = _error(api.post("/v1/deploy", json={"version": 1}), 422)
    assert "model_id" in err["message"]
    err = _error(
        api.post(
            "/v1/deploy",
            json={"model_id": "m", "config": {"max_batch_size": 64, "max_ongoing_requests": 8}},
        ),
        422,
    )
    assert "max_batch_size" in err["message"] and "max_ongoing_requests" in err["message"]
    err = _error(api.post("/v1/delete", json={}), 422)
    assert "model_id" in err["message"] and "deployment_name" in err["message"]
    resp = api.post(
        "/v1/deploy", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _error(resp, 422)


def test_request_id_is_echoed(api):
    resp = api.get("/v1/deploy/deploy-nope", headers={"X-Request-ID": "abc-123"})
    assert _error(resp, 404)["request_id"] == "abc-123"


def test_cluster_view(api):
    view = api.get("/v1/cluster").json()
    assert view["gpus_total"] == 1 and view["cpus_total"] == 16
    assert view["nodes"] and view["nodes"][0]["alive"]


def test_models_routes(api):
    body = {"model_id": "tiny-echo", "kind": "custom", "predictor": "tests.predictors:Echo"}
    first = api.post("/v1/models", json=body)
    assert first.status_code in (201, 409)
    _error(api.post("/v1/models", json=body), 409)
    second = api.post("/v1/models/tiny-echo/versions", json={"metrics": {"recall@1": 0.5}})
    assert second.status_code == 201, second.text
    version = second.json()["version"]
    model = api.get("/v1/models/tiny-echo").json()
    assert model["latest_version"] == version and version in model["versions"]
    assert any(m["model_id"] == "tiny-echo" for m in api.get("/v1/models").json())
    versions = api.get("/v1/models/tiny-echo/versions").json()
    assert versions[-1]["metrics"] == {"recall@1": 0.5}
    err = _error(api.post("/v1/models", json={"model_id": "t2", "kind": "torch"}), 422)
    assert "predictor" in err["message"]
