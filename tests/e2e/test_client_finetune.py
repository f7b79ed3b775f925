"""Fine-tuning through ``cluster.client`` and the ``modelyard`` CLI against the real control
app: real Ray Jobs running a real TorchTrainer on a tiny sentence-transformers model, kept
to a few steps so each run takes seconds of training."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.client import (
    BadRequestError,
    Client,
    ConflictError,
    FineTuningPage,
    FineTuningTask,
    NotFoundError,
    TaskFailedError,
)
from tests.e2e.support import API_KEY, PAIRS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MODEL = "client-ft-st"
QUICK = {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, "eval_fraction": 0.25}


@pytest.fixture(scope="module")
def client(local_cluster) -> Iterator[Client]:
    with Client(url=local_cluster.url, api_key=API_KEY, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def model(client, tiny_model) -> str:
    with contextlib.suppress(ConflictError):
        client.register_model(MODEL, kind="sentence-transformer", artifact_uri=tiny_model)
    return MODEL


def test_create_wait_list_get_logs_restart_cancel(client, model):
    key = f"client-ft-{uuid.uuid4().hex[:8]}"
    task = client.create_fine_tuning_task(model, PAIRS, params=QUICK, idempotency_key=key)
    assert isinstance(task, FineTuningTask) and task.status in ("pending", "processing")
    again = client.get_model(model).fine_tune(PAIRS, params=QUICK, idempotency_key=key)
    assert again.id == task.id
    with pytest.raises(ConflictError, match=key) as info:
        client.create_fine_tuning_task(model, PAIRS[:40], params=QUICK, idempotency_key=key)
    assert info.value.request_id

    final = task.wait(timeout=600, progress=True)
    assert final.status == "done" and task.status == "done", task.error
    assert task.progress.step == 3 and task.progress.percent == 100.0
    assert task.progress.loss is not None
    assert set(task.metrics_before) >= {"recall@1", "mrr"} and set(task.metrics_after)
    version = client.list_versions(model)[-1]
    assert task.model_version == version.version and version.source == task.id
    assert "step" in task.logs()

    page = client.list_fine_tuning_tasks(limit=500, status="done")
    assert isinstance(page, FineTuningPage) and page.total >= 1
    assert task.id in [t.id for t in page]
    assert client.get_fine_tuning_task(task.id).model_version == task.model_version
    assert task.cancel().status == "done"  # an ended task stays as it ended

    assert task.restart(from_scratch=True).status == "pending"
    with pytest.raises(ConflictError, match="cancel it first"):
        task.restart()
    assert task.cancel().status == "canceled"
    with pytest.raises(TaskFailedError, match="canceled") as ended:
        task.wait(timeout=60)
    assert ended.value.task.status == "canceled"


def test_dataset_file_bad_input_and_unknown_ids(client, model, local_cluster):
    root = local_cluster.settings.root
    path = root / f"client-pairs-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    task = client.create_fine_tuning_task(model, path, params={**QUICK, "max_steps": 500})
    assert task.info.detail["request"]["dataset"]["uri"] == str(path)
    assert task.cancel().status == "canceled"
    canceled = client.list_fine_tuning_tasks(status="canceled", limit=500)
    assert task.id in [t.id for t in canceled] and canceled.total == len(canceled)

    bad = root / "client-bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    with pytest.raises(BadRequestError, match="line 2") as info:
        client.create_fine_tuning_task(model, bad)
    assert info.value.status_code == 422 and info.value.request_id
    with pytest.raises(BadRequestError, match="storage root"):
        client.create_fine_tuning_task(model, "/etc/passwd")
    with pytest.raises(NotFoundError):
        client.create_fine_tuning_task("no-such-model", PAIRS)
    with pytest.raises(NotFoundError):
        client.get_fine_tuning_task("fine_tuning-nope")


def test_cli_tune_wait_tasks_logs_restart_cancel(local_cluster, model, tmp_path):
    env = {"MODELYARD_URL": local_cluster.url, "MODELYARD_API_KEY": API_KEY, "COLUMNS": "200"}
    runner = CliRunner()

    def cli(*args: str, code: int = 0):
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output)
        return result

    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    quick = ("--max-steps", "2", "--batch-size", "8", "--eval-fraction", "0.25")
    tuned = cli(
        "tune", model, "--pairs-file", str(pairs_file), *quick, "--wait", "--timeout", "600"
    )
    # Ray's own warnings may land on stdout too: find the task's line.
    line = next(x for x in tuned.stdout.splitlines() if x.startswith("fine_tuning "))
    assert ": done (step 2/2" in line and "model v" in line, tuned.output
    assert "recall@1:" in tuned.stdout and "2/2" in tuned.stderr  # metrics; the bar's end
    task_id = line.split()[1].rstrip(":")

    listed = cli("tasks", "--kind", "fine_tuning", "--status", "done", "--limit", "500").stdout
    assert task_id in listed and "step 2/2" in listed
    assert "step" in cli("logs", task_id).stdout
    assert f"fine_tuning {task_id}: pending" in cli("restart", task_id).stdout
    assert f"fine_tuning {task_id}: canceled" in cli("cancel", task_id).stdout
    missing = cli("restart", "fine_tuning-nope", code=1)
    assert "404" in missing.stderr and "request id:" in missing.stderr
    bad = cli("tune", model, "--dataset", "/etc/passwd", code=1)
    assert "storage root" in bad.stderr
