"""The registry's fine-tuning bookkeeping: idempotent creates, progress, restarts."""

from __future__ import annotations

import pytest

from cluster import errors
from cluster.registry import RegistryCore
from cluster.schemas import FineTuneCreate, ModelCreate

PAIRS = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(8)]


@pytest.fixture
def reg(tmp_path) -> RegistryCore:
    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id="emb", kind="sentence-transformer", artifact_uri="/m"))
    return reg


def create(**overrides) -> FineTuneCreate:
    body = {"embedding_model_id": "emb", "dataset": {"pairs": PAIRS}, **overrides}
    return FineTuneCreate.model_validate(body)


def test_one_key_one_task_and_a_changed_body_conflicts(reg):
    first = reg.create_finetune_task(create(idempotency_key="k"))
    assert reg.create_finetune_task(create(idempotency_key="k")).id == first.id
    with pytest.raises(errors.Conflict, match="'k'"):
        reg.create_finetune_task(create(idempotency_key="k", params={"max_steps": 3}))
    assert reg.create_finetune_task(create(idempotency_key="other")).id != first.id
    assert reg.create_finetune_task(create()).id != reg.create_finetune_task(create()).id
    assert reg.list_tasks("fine_tuning").total == 4


def test_unknown_model_or_deployment_is_refused_at_create(reg):
    with pytest.raises(errors.NotFound):
        reg.create_finetune_task(create(embedding_model_id="nope"))
    with pytest.raises(errors.NotFound):
        reg.create_finetune_task(create(deploy_to="no-such-deployment"))


def test_progress_percent_eta_history_and_metrics(reg):
    task = reg.create_finetune_task(create())
    reg.update_task(task.id, status="processing")
    reg.report_progress(
        task.id,
        {"event": "eval_before", "step": 0, "ts": 100.0, "metrics_before": {"recall@1": 0.5}},
    )
    reg.report_progress(
        task.id, {"event": "step", "step": 5, "total_steps": 10, "ts": 110.0, "loss": 1.0}
    )
    progress = reg.get_task(task.id).detail["progress"]
    assert progress["percent"] == 50.0 and progress["step"] == 5
    assert progress["eta_s"] == pytest.approx(10.0)
    reg.report_progress(
        task.id,
        {
            "event": "done",
            "step": 10,
            "total_steps": 10,
            "ts": 120.0,
            "metrics_before": {"recall@1": 0.5},
            "metrics_after": {"recall@1": 0.75},
        },
    )
    detail = reg.get_task(task.id).detail
    assert detail["metrics_after"] == {"recall@1": 0.75}
    assert [p["step"] for p in detail["history"]] == [0, 5, 10]


def test_restart_only_when_not_running_and_survives_a_registry_restart(reg, tmp_path):
    task = reg.create_finetune_task(create())
    with pytest.raises(errors.Conflict, match="pending"):
        reg.restart_finetune(task.id, from_scratch=False)
    reg.force_task(task.id, status="canceled")
    again = reg.restart_finetune(task.id, from_scratch=True)
    assert again.status == "pending" and again.detail["run"] == 2
    assert again.detail["from_scratch"] is True
    reloaded = RegistryCore(tmp_path / "r.db")
    assert reloaded.get_task(task.id).detail["run"] == 2
