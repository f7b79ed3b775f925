"""The operator's pure ``plan``: desired state (registry) vs actual state (Serve apps)."""

from __future__ import annotations

from cluster.operator import Plan, plan, settled
from cluster.schemas import Allocation, DeploymentRecord, Task
from cluster.serving import AppState

STOPPED = Allocation(allocation_state="stopped")


def record(name: str = "emb", status: str = "PENDING", version: int = 1, **kw) -> DeploymentRecord:
    return DeploymentRecord(name=name, model_id="m", model_version=version, status=status, **kw)


def deploy_task(name: str = "emb", status: str = "pending", **detail) -> Task:
    return Task(
        id=f"deploy-{name}", kind="deploy", status=status, deployment_name=name, detail=detail
    )


def delete_task(*names: str, status: str = "pending") -> Task:
    return Task(id="delete-1", kind="delete", status=status, detail={"deployments": list(names)})


def test_running_deployment_without_app_is_deployed():
    d = record(status="PENDING")
    p = plan([d], [deploy_task()], {}, {d.serve_app: STOPPED})
    assert p.deploy == [d]
    assert p.delete == []
    assert p.status == {"emb": {"status": "DEPLOYING"}}
    assert p.tasks["deploy-emb"]["status"] == "processing"


def test_active_deployment_whose_app_vanished_is_redeployed():
    d = record(status="ACTIVE")
    p = plan([d], [], {}, {d.serve_app: STOPPED})
    assert p.deploy == [d]
    assert p.status["emb"]["status"] == "DEPLOYING"


def test_fully_allocated_running_app_is_active_and_task_done():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=2)
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=2, running_replicas=2)
    p = plan([d], [deploy_task(status="processing")], {d.serve_app: app}, {d.serve_app: alloc})
    assert p.deploy == []
    assert p.delete == []
    assert p.status == {"emb": {"status": "ACTIVE", "error": None}}
    assert p.tasks == {
        "deploy-emb": {"status": "done", "detail": {"allocation_state": "fully_allocated"}}
    }


def test_active_and_unchanged_needs_nothing():
    d = record(status="ACTIVE")
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=1)
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan([d], [], {d.serve_app: app}, {d.serve_app: alloc})
    assert (p.deploy, p.delete, p.status, p.removed, p.tasks) == ([], [], {}, [], {})


def test_deploy_failed_app_fails_deployment_and_task():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="DEPLOY_FAILED", message="ImportError: no module x")
    alloc = Allocation(allocation_state="failed", reason="ImportError: no module x")
    p = plan([d], [deploy_task(status="processing")], {d.serve_app: app}, {d.serve_app: alloc})
    assert p.status == {"emb": {"status": "FAILED", "error": "ImportError: no module x"}}
    assert p.tasks["deploy-emb"]["status"] == "failed"
    assert p.tasks["deploy-emb"]["error"] == "ImportError: no module x"
    assert p.deploy == []


def test_deleting_deployment_with_app_gone_is_removed_and_task_done():
    d = record(status="DELETING")
    p = plan([d], [delete_task("emb", status="processing")], {}, {d.serve_app: STOPPED})
    assert p.removed == ["emb"]
    assert p.delete == []
    assert p.deploy == []
    assert p.tasks == {"delete-1": {"status": "done"}}


def test_deleting_deployment_with_app_present_is_deleted():
    d = record(status="DELETING")
    app = AppState(name=d.serve_app, status="RUNNING")
    p = plan([d], [delete_task("emb")], {d.serve_app: app}, {d.serve_app: STOPPED})
    assert p.delete == ["emb--v1"]
    assert p.removed == []
    assert p.deploy == []
    assert p.tasks == {"delete-1": {"status": "processing"}}


def test_deleting_app_already_deleting_is_left_alone():
    d = record(status="DELETING")
    app = AppState(name=d.serve_app, status="DELETING")
    p = plan([d], [delete_task("emb", status="processing")], {d.serve_app: app}, {})
    assert p.delete == []
    assert p.removed == []
    assert p.tasks == {}


def test_stray_app_is_deleted():
    d = record(status="ACTIVE")
    apps = {
        d.serve_app: AppState(name=d.serve_app, status="RUNNING", target_replicas=1),
        "x--v3": AppState(name="x--v3", status="RUNNING"),
        "modelyard": AppState(name="modelyard", status="RUNNING"),
        "y--v1": AppState(name="y--v1", status="DELETING"),
    }
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan([d], [], apps, {d.serve_app: alloc})
    # Not the control app (not named like a model app), not one already being deleted.
    assert p.delete == ["x--v3"]
    assert p.deploy == []


def test_old_version_app_of_a_swapped_deployment_is_deleted():
    d = record(status="ACTIVE", version=2)
    apps = {
        "emb--v1": AppState(name="emb--v1", status="RUNNING"),
        "emb--v2": AppState(name="emb--v2", status="RUNNING", target_replicas=1),
    }
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan([d], [], apps, {"emb--v2": alloc})
    assert p.delete == ["emb--v1"]


def test_stopped_deployment_app_is_deleted():
    d = record(status="STOPPED")
    app = AppState(name=d.serve_app, status="RUNNING")
    p = plan([d], [], {d.serve_app: app}, {d.serve_app: STOPPED})
    assert p.delete == ["emb--v1"]
    assert p.deploy == []
    assert p.status == {}


def test_pending_deploy_task_becomes_processing_with_reason():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="DEPLOYING", target_replicas=1)
    reason = "insufficient GPU: each replica needs GPU=1 but the cluster has GPU=0 in total"
    alloc = Allocation(allocation_state="starting", target_replicas=1, reason=reason)
    p = plan([d], [deploy_task()], {d.serve_app: app}, {d.serve_app: alloc})
    assert p.status == {"emb": {"status": "DEPLOYING", "error": reason}}
    assert p.tasks["deploy-emb"] == {
        "status": "processing",
        "detail": {"allocation_state": "starting", "reason": reason},
    }


def test_processing_task_updates_only_when_allocation_changes():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="DEPLOYING", target_replicas=2)
    alloc = Allocation(allocation_state="started", target_replicas=2, running_replicas=1)
    apps, allocs = {d.serve_app: app}, {d.serve_app: alloc}
    same = deploy_task(status="processing", allocation_state="started")
    assert plan([d], [same], apps, allocs).tasks == {}
    moved = deploy_task(status="processing", allocation_state="starting")
    assert plan([d], [moved], apps, allocs).tasks["deploy-emb"]["detail"] == {
        "allocation_state": "started",
        "reason": None,
    }


def test_deploy_task_of_deleted_deployment_is_canceled():
    d = record(status="DELETING")
    p = plan([d], [deploy_task(), deploy_task("gone")], {}, {})
    assert p.tasks["deploy-emb"]["status"] == "canceled"
    assert p.tasks["deploy-gone"]["status"] == "canceled"


def test_settled_only_when_nothing_needs_a_quick_reaction():
    at_rest = [record(status="ACTIVE"), record(name="old", status="STOPPED")]
    batch = Task(id="b", kind="batch_prediction", status="processing", deployment_name="emb")
    assert settled(at_rest, [batch], Plan())
    assert not settled([record(status="DEPLOYING")], [], Plan())
    assert not settled(at_rest, [deploy_task(status="processing")], Plan())
    assert not settled(at_rest, [batch.model_copy(update={"status": "pending"})], Plan())
    assert not settled(at_rest, [], Plan(status={"emb": {"status": "FAILED"}}))
