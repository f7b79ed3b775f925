"""One real local Ray per test session, with Serve, the registry, the operator and the
control app on it. Tests talk to the control app over real HTTP.

Logical resources: 16 CPUs and 1 GPU are declared, so placement on GPUs can be checked on
a machine without one (replicas that get the logical GPU still run on the CPU).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-admin-key"
NUM_CPUS = 16
NUM_GPUS = 1

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s=0.25):
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


class LocalCluster:
    """The session's Ray cluster; ``restart`` is a whole-cluster restart plus ``up``."""

    def __init__(self, storage_root: Path) -> None:
        from cluster.settings import Settings

        self.settings = Settings(
            storage_root=storage_root, port=free_port(), api_key=API_KEY, host="127.0.0.1"
        )
        self.url = f"http://127.0.0.1:{self.settings.port}"

    def start(self) -> None:
        import ray

        from cluster.bootstrap import start_control_plane
        from cluster.settings import NAMESPACE, RAY_START_ENV, key_digest

        for name, value in RAY_START_ENV.items():  # as `modelyard up` starts Ray
            os.environ.setdefault(name, value)
        ray.init(
            num_cpus=NUM_CPUS,
            num_gpus=NUM_GPUS,
            namespace=NAMESPACE,
            include_dashboard=True,  # Ray Jobs (fine-tuning) are submitted through it
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}},
        )
        self.info = start_control_plane(self.settings, key_digest(API_KEY), deploy_default=False)
        wait_for(self._healthy, 60, "the control app to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        import ray

        ray.shutdown()

    def restart(self) -> None:
        self.stop()
        self.start()


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


def register(api: httpx.Client, **body) -> dict:
    """Register a model, or add a version when it exists already."""
    resp = api.post("/v1/models", json=body)
    if resp.status_code == 409:
        body = {k: body[k] for k in ("artifact_uri", "metrics") if k in body}
        resp = api.post(f"/v1/models/{body.get('model_id', '')}/versions", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def deploy(api: httpx.Client, timeout_s: float = 180, **body) -> dict:
    """Deploy and wait until the task ends; returns the final task."""
    resp = api.post("/v1/deploy", json=body)
    assert resp.status_code == 202, resp.text
    task = resp.json()

    def ended():
        t = api.get(f"/v1/deploy/{task['id']}").json()
        return t if t["status"] in ("done", "failed", "canceled", "refused") else None

    return wait_for(ended, timeout_s, f"deploy task {task['id']}")
