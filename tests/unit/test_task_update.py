"""The one guarded task update (``TaskStore.update`` through ``RegistryCore.update_task``):
a stale expectation changes nothing, a finished task is not reopened, and neither is
written to disk."""

from __future__ import annotations

import pytest

from cluster import errors
from cluster.registry.actor import RegistryCore
from cluster.registry.tasks import ANY_STATE, Expect
from cluster.schemas import FINAL_TASK_STATES, DeployRequest, ModelCreate, TaskStatus

MODEL = "emb"


@pytest.fixture
def reg(tmp_path) -> RegistryCore:
    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id=MODEL, kind="sentence-transformer", artifact_uri="/m"))
    return reg


def task_id(reg: RegistryCore) -> str:
    return reg.create_deploy_task(DeployRequest(model_id=MODEL)).id


def reloaded(reg: RegistryCore, tmp_path):
    """The registry as a restart would read it back."""
    return RegistryCore(tmp_path / "r.db")


def test_a_stale_status_is_refused_and_nothing_is_written(reg, tmp_path):
    tid = task_id(reg)
    reg.update_task(tid, Expect(status="pending"), status="processing", detail={"a": 1})
    # A second caller read "pending" too, before the first one's update.
    now = reg.update_task(tid, Expect(status="pending"), status="failed", error="stale")
    assert (now.status, now.error, now.detail["a"]) == ("processing", None, 1)
    assert reloaded(reg, tmp_path).get_task(tid).status == "processing"


def test_a_stale_run_is_refused(reg):
    tid = task_id(reg)
    reg.update_task(tid, Expect(run=1), detail={"run": 2})  # a restart moved it on
    assert reg.update_task(tid, Expect(run=1), status="failed").status == "pending"
    assert reg.update_task(tid, Expect(run=2), status="processing").status == "processing"


@pytest.mark.parametrize("final", sorted(FINAL_TASK_STATES))
def test_a_finished_task_is_not_reopened(reg, tmp_path, final):
    tid = task_id(reg)
    reg.update_task(tid, status=final)
    for expect in (Expect(), Expect(status=final), Expect(run=1)):
        after = reg.update_task(tid, expect, status="pending", error="reopened", detail={"x": 1})
        assert (after.status, after.error) == (final, None) and "x" not in after.detail
    assert reloaded(reg, tmp_path).get_task(tid).status == final


def test_only_an_update_that_says_so_changes_a_finished_task(reg, tmp_path):
    tid = task_id(reg)
    reg.update_task(tid, status="failed", error="the training job STOPPED")
    now = reg.update_task(tid, ANY_STATE, status="canceled", error="canceled by request")
    assert (now.status, now.error) == ("canceled", "canceled by request")
    assert reloaded(reg, tmp_path).get_task(tid).status == "canceled"


def test_another_kind_is_not_found_and_unchanged(reg):
    tid = task_id(reg)
    with pytest.raises(errors.NotFound):
        reg.update_task(tid, Expect(kind="fine_tuning"), status="failed")
    assert reg.get_task(tid).status == "pending"
    with pytest.raises(errors.NotFound):
        reg.update_task("no-such-task", status="failed")


def test_a_job_reporting_for_a_task_that_ended_or_is_gone_is_told_to_stop(reg):
    assert reg.report_batch_progress("no-such-task", {"rows_done": 1}) is False
    tid = task_id(reg)  # a deploy task: not a batch prediction
    assert reg.report_batch_progress(tid, {"rows_done": 1}) is False
    assert reg.get_task(tid).status == "pending"


def test_finished_states_are_the_task_states_but_pending_and_processing():
    from cluster.schemas import FAILED_TASK_STATES

    open_states = {TaskStatus.PENDING.value, TaskStatus.PROCESSING.value}
    assert {s.value for s in TaskStatus} - open_states == FINAL_TASK_STATES
    assert FINAL_TASK_STATES - {"done"} == FAILED_TASK_STATES
