"""The registry on real Ray: NaN refused over HTTP, one writer per database, and a registry
restart on a database with a row it cannot read (it starts, serves the rest, lists the row)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest
import ray

from cluster.settings import NAMESPACE, REGISTRY_ACTOR
from tests.e2e.support import ROOT, wait_for

pytestmark = pytest.mark.e2e

JSON = {"content-type": "application/json"}


def test_nan_and_infinity_are_refused_over_http_and_nothing_is_registered(api):
    body = (
        '{"model_id": "integrity-nan", "kind": "custom", "predictor": "tests.predictors:Echo", '
        '"metrics": {"recall_at_1": NaN}}'
    )
    resp = api.post("/v1/models", content=body, headers=JSON)
    assert resp.status_code == 422, resp.text
    assert "metrics.recall_at_1" in resp.json()["error"]["message"]
    assert api.get("/v1/models/integrity-nan").status_code == 404
    kwargs = body.replace(
        '"metrics": {"recall_at_1": NaN}', '"predictor_kwargs": {"x": [Infinity]}'
    )
    resp = api.post("/v1/models", content=kwargs, headers=JSON)
    assert resp.status_code == 422, resp.text
    assert "predictor_kwargs.x.0" in resp.json()["error"]["message"]


def test_a_second_control_plane_on_the_same_database_is_refused(local_cluster):
    probe = (
        "import sys; from pathlib import Path\n"
        "from cluster.registry.store import Store, StoreLocked\n"
        "try:\n    Store(Path(sys.argv[1]), lock_wait_s=0)\n"
        "except StoreLocked as exc:\n    print(exc); sys.exit(3)\n"
    )
    db = str(local_cluster.settings.db_path)
    out = subprocess.run(
        [sys.executable, "-c", probe, db], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert db in out.stdout and "in use by another modelyard control plane" in out.stdout


def test_a_restarted_registry_sets_an_unreadable_row_aside_and_serves_the_rest(api, local_cluster):
    body = {"model_id": "integrity-bad", "kind": "custom", "predictor": "tests.predictors:Echo"}
    assert api.post("/v1/models", json=body).status_code in (201, 409)
    models_before = {m["model_id"] for m in api.get("/v1/models").json()}
    db = local_cluster.settings.db_path
    with sqlite3.connect(db, timeout=10) as conn:  # what an older modelyard could write
        (doc,) = conn.execute("SELECT doc FROM versions WHERE id = 'integrity-bad@1'").fetchone()
        version = json.loads(doc)
        version["metrics"] = {"recall_at_1": float("nan")}
        conn.execute(
            "UPDATE versions SET doc = ? WHERE id = 'integrity-bad@1'", (json.dumps(version),)
        )
    ray.kill(ray.get_actor(REGISTRY_ACTOR, namespace=NAMESPACE), no_restart=False)

    def listed() -> set[str] | None:
        try:
            resp = api.get("/v1/models", timeout=5)
        except httpx.HTTPError:
            return None
        return {m["model_id"] for m in resp.json()} if resp.status_code == 200 else None

    # Wrapped in a list: the rest may be no model at all, and an empty set is still an answer.
    (after,) = wait_for(
        lambda: (m := listed()) is not None and "integrity-bad" not in m and [m],
        120,
        "the restarted registry to serve models again",
    )
    assert after == models_before - {"integrity-bad"}
    held = api.get("/v1/admin/quarantine")
    assert held.status_code == 200, held.text
    rows = {(r["table"], r["id"]) for r in held.json()}
    assert {("versions", "integrity-bad@1"), ("models", "integrity-bad")} <= rows
    assert httpx.get(f"{local_cluster.url}/v1/admin/quarantine", timeout=10).status_code == 401
