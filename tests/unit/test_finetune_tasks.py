"""The registry's fine-tuning bookkeeping: idempotent creates, progress, restarts."""

from __future__ import annotations

import pytest

from cluster import errors
from cluster.registry.actor import RegistryCore
from cluster.registry.tasks import ANY_STATE, Expect
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
    reg.update_task(task.id, ANY_STATE, status="canceled")
    again = reg.restart_finetune(task.id, from_scratch=True)
    assert again.status == "pending" and again.detail["run"] == 2
    assert again.detail["from_scratch"] is True
    reloaded = RegistryCore(tmp_path / "r.db")
    assert reloaded.get_task(task.id).detail["run"] == 2


def test_a_resumed_run_restarts_the_eta_and_history_names_runs_and_checkpoints(reg):
    task = reg.create_finetune_task(create())
    reg.update_task(task.id, status="processing")
    for payload in (
        {"event": "started", "step": 0, "total_steps": 20, "ts": 100.0},
        {"event": "step", "step": 4, "total_steps": 20, "ts": 104.0, "loss": 2.0},
        {"event": "checkpoint", "step": 4, "total_steps": 20, "ts": 104.5},
    ):
        reg.report_progress(task.id, payload)
    assert reg.get_task(task.id).detail["checkpoint_step"] == 4
    reg.update_task(task.id, ANY_STATE, status="canceled")
    reg.restart_finetune(task.id, from_scratch=False)
    reg.update_task(task.id, status="processing")
    # Resumed an hour later from step 4: the ETA counts from the resume, not the first run.
    reg.report_progress(task.id, {"event": "started", "step": 4, "total_steps": 20, "ts": 3700})
    reg.report_progress(task.id, {"event": "step", "step": 12, "total_steps": 20, "ts": 3708})
    detail = reg.get_task(task.id).detail
    assert detail["progress"]["first_step"] == 4
    assert detail["progress"]["eta_s"] == pytest.approx(8.0)
    assert [(p["run"], p["event"], p["step"]) for p in detail["history"]] == [
        (1, "started", 0),
        (1, "step", 4),
        (1, "checkpoint", 4),
        (2, "started", 4),
        (2, "step", 12),
    ]


def test_a_stale_operator_update_cannot_undo_a_cancel_or_a_restart(reg):
    task = reg.create_finetune_task(create())
    reg.update_task(task.id, Expect(run=1), status="processing", detail={"job_id": "j-run1"})
    reg.update_task(task.id, ANY_STATE, status="canceled")
    # The operator's loop read run 1 as processing before the cancel; its late update is void.
    assert reg.update_task(task.id, Expect(run=1), status="failed").status == "canceled"
    reg.restart_finetune(task.id, from_scratch=False)
    now = reg.update_task(task.id, Expect(run=1), status="failed", error="STOPPED")
    assert (now.status, now.error, now.detail["job_id"]) == ("pending", None, None)
    assert reg.update_task(task.id, Expect(run=2), status="processing").status == "processing"


def test_run_names_resume_the_newest_start_over_and_from_scratch_starts_a_new_one(reg):
    from cluster.registry.finetune import scratch_runs

    task = reg.create_finetune_task(create())
    names = [scratch_runs(task.detail)]
    for from_scratch in (False, True, False, True, False):
        reg.update_task(task.id, ANY_STATE, status="failed")
        names.append(scratch_runs(reg.restart_finetune(task.id, from_scratch).detail))
    assert names == [0, 0, 1, 1, 2, 2]
    assert scratch_runs({"from_scratch": True}) == 1  # a record written before scratch_runs
