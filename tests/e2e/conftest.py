"""One real local Ray per test session, with Serve, the registry, the operator and the
control app on it. Tests talk to the control app over real HTTP. The cluster and the
helpers behind these fixtures are in tests/e2e/support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import API_KEY, LocalCluster, build_tiny_model, wait_for


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("modelyard-root"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def api(local_cluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=local_cluster.url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture
def clean_serve(api) -> Iterator[None]:
    """Delete every deployment after the test and wait until Serve has no model apps left."""
    yield
    from ray import serve

    names = [d["name"] for d in api.get("/v1/deployments").json()]
    for name in names:
        api.post("/v1/delete", json={"deployment_name": name})

    def gone() -> bool:
        apps = set(serve.status().applications)
        return not api.get("/v1/deployments").json() and apps <= {"modelyard"}

    wait_for(gone, 120, "every deployment and model app to be deleted")


@pytest.fixture
def artifact_dir(local_cluster, tmp_path) -> Path:
    """A folder of this test inside the storage root: the API takes local artifacts and
    predict files only from there. Named like ``tmp_path``, which stays outside it."""
    path = local_cluster.settings.root / "test-artifacts" / tmp_path.name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tiny_model(local_cluster, tmp_path_factory) -> str:
    """A tiny sentence-transformers model inside the storage root (the API registers local
    artifacts only from there), built once per module that asks for it."""
    name = tmp_path_factory.mktemp("tiny-model").name
    return build_tiny_model(local_cluster.settings.root / "test-artifacts" / name)
