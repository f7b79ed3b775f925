"""The operator's pure ``plan``: desired state (registry) vs actual state (Serve apps)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cluster.operator.reconcile import Plan, plan, settled
from cluster.operator.serve_state import AppState, allocation
from cluster.schemas import Allocation, Autoscaling, DeploymentConfig, DeploymentRecord, Task

STOPPED = Allocation(allocation_state="stopped")


def record(name: str = "emb", status: str = "PENDING", version: int = 1, **kw) -> DeploymentRecord:
    return DeploymentRecord(name=name, model_id="m", model_version=version, status=status, **kw)


def deploy_task(name: str = "emb", status: str = "pending", **detail) -> Task:
    return Task(
        id=f"deploy-{name}", kind="deploy", status=status, deployment_name=name, detail=detail
    )


def delete_task(*names: str, status: str = "pending") -> Task:
    return Task(id="delete-1", kind="delete", status=status, detail={"deployments": list(names)})


def plan_mine(deployments, tasks, apps, allocations, **kw) -> Plan:
    """``plan`` with every app in ``apps`` recorded as modelyard's own."""
    return plan(deployments, tasks, apps, allocations, owned=set(apps), **kw)


def test_running_deployment_without_app_is_deployed():
    d = record(status="PENDING")
    p = plan_mine([d], [deploy_task()], {}, {d.serve_app: STOPPED})
    assert p.deploy == [d]
    assert p.delete == []
    assert p.status == {"emb": {"status": "DEPLOYING"}}
    assert p.tasks["deploy-emb"]["status"] == "processing"


def test_active_deployment_whose_app_vanished_is_redeployed():
    d = record(status="ACTIVE")
    p = plan_mine([d], [], {}, {d.serve_app: STOPPED})
    assert p.deploy == [d]
    assert p.status["emb"]["status"] == "DEPLOYING"


def test_fully_allocated_running_app_is_active_and_task_done():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=2)
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=2, running_replicas=2)
    p = plan_mine([d], [deploy_task(status="processing")], {d.serve_app: app}, {d.serve_app: alloc})
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
    p = plan_mine([d], [], {d.serve_app: app}, {d.serve_app: alloc})
    assert (p.deploy, p.delete, p.status, p.removed, p.tasks) == ([], [], {}, [], {})


def test_deploy_failed_app_fails_deployment_and_task():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="DEPLOY_FAILED", message="ImportError: no module x")
    alloc = Allocation(allocation_state="failed", reason="ImportError: no module x")
    p = plan_mine([d], [deploy_task(status="processing")], {d.serve_app: app}, {d.serve_app: alloc})
    assert p.status == {"emb": {"status": "FAILED", "error": "ImportError: no module x"}}
    assert p.tasks["deploy-emb"]["status"] == "failed"
    assert p.tasks["deploy-emb"]["error"] == "ImportError: no module x"
    assert p.deploy == []


def test_deleting_deployment_with_app_gone_is_removed_and_task_done():
    d = record(status="DELETING")
    p = plan_mine([d], [delete_task("emb", status="processing")], {}, {d.serve_app: STOPPED})
    assert p.removed == ["emb"]
    assert p.delete == []
    assert p.deploy == []
    assert p.tasks == {"delete-1": {"status": "done"}}


def test_deleting_deployment_with_app_present_is_deleted():
    d = record(status="DELETING")
    app = AppState(name=d.serve_app, status="RUNNING")
    p = plan_mine([d], [delete_task("emb")], {d.serve_app: app}, {d.serve_app: STOPPED})
    assert p.delete == ["emb--v1"]
    assert p.removed == []
    assert p.deploy == []
    assert p.tasks == {"delete-1": {"status": "processing"}}


def test_deleting_app_already_deleting_is_left_alone():
    d = record(status="DELETING")
    app = AppState(name=d.serve_app, status="DELETING")
    p = plan_mine([d], [delete_task("emb", status="processing")], {d.serve_app: app}, {})
    assert p.delete == []
    assert p.removed == []
    assert p.tasks == {}


def test_stray_app_is_deleted_only_when_modelyard_made_it():
    d = record(status="ACTIVE")
    apps = {
        d.serve_app: AppState(name=d.serve_app, status="RUNNING", target_replicas=1),
        "x--v3": AppState(name="x--v3", status="RUNNING"),
        "other--v1": AppState(name="other--v1", status="RUNNING"),
        "modelyard": AppState(name="modelyard", status="RUNNING"),
        "y--v1": AppState(name="y--v1", status="DELETING"),
    }
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan([d], [], apps, {d.serve_app: alloc}, owned={d.serve_app, "x--v3", "y--v1"})
    # other--v1 is named like a model app but is someone else's; y--v1 is already going.
    assert p.delete == ["x--v3"]
    assert p.deploy == [] and p.status == {} and p.forget == []


def test_a_foreign_app_named_like_a_model_app_is_never_deleted():
    foreign = {"other--v1": AppState(name="other--v1", status="RUNNING")}
    assert plan([], [], foreign, {}).delete == []
    stopped = record(name="other", status="STOPPED")
    assert plan([stopped], [], foreign, {stopped.serve_app: STOPPED}).delete == []
    gone = record(name="other", status="DELETING")
    p = plan([gone], [delete_task("other")], foreign, {gone.serve_app: STOPPED})
    # The deployment goes; the app of the same name that modelyard never made stays.
    assert p.delete == [] and p.removed == ["other"] and p.tasks == {"delete-1": {"status": "done"}}


def test_a_deploy_never_replaces_a_foreign_app_of_the_same_name():
    d = record(status="PENDING")
    foreign = {d.serve_app: AppState(name=d.serve_app, status="RUNNING", target_replicas=1)}
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan([d], [deploy_task()], foreign, {d.serve_app: alloc})
    assert p.deploy == [] and p.delete == []
    assert p.status["emb"]["status"] == "FAILED"
    assert "'emb--v1' that modelyard did not create" in p.status["emb"]["error"]
    assert p.tasks["deploy-emb"]["status"] == "failed"
    assert p.tasks["deploy-emb"]["error"] == p.status["emb"]["error"]


def test_records_of_own_apps_that_are_gone_and_unwanted_are_forgotten():
    d = record(status="ACTIVE")
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=1)
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    owned = {d.serve_app, "emb--v0", "old--v2"}
    p = plan([d], [], {d.serve_app: app}, {d.serve_app: alloc}, owned=owned)
    assert p.forget == ["emb--v0", "old--v2"]
    # A wanted app that Serve has not shown yet (just submitted) stays recorded.
    p = plan([d], [], {}, {d.serve_app: STOPPED}, owned=owned)
    assert d.serve_app not in p.forget and p.deploy == [d]


def test_old_version_app_of_a_swapped_deployment_is_deleted():
    d = record(status="ACTIVE", version=2)
    apps = {
        "emb--v1": AppState(name="emb--v1", status="RUNNING"),
        "emb--v2": AppState(name="emb--v2", status="RUNNING", target_replicas=1),
    }
    alloc = Allocation(allocation_state="fully_allocated", target_replicas=1, running_replicas=1)
    p = plan_mine([d], [], apps, {"emb--v2": alloc})
    assert p.delete == ["emb--v1"]


def test_stopped_deployment_app_is_deleted():
    d = record(status="STOPPED")
    app = AppState(name=d.serve_app, status="RUNNING")
    p = plan_mine([d], [], {d.serve_app: app}, {d.serve_app: STOPPED})
    assert p.delete == ["emb--v1"]
    assert p.deploy == []
    assert p.status == {}


def test_pending_deploy_task_becomes_processing_with_reason():
    d = record(status="DEPLOYING")
    app = AppState(name=d.serve_app, status="DEPLOYING", target_replicas=1)
    reason = "insufficient GPU: each replica needs GPU=1 but the cluster has GPU=0 in total"
    alloc = Allocation(allocation_state="starting", target_replicas=1, reason=reason)
    p = plan_mine([d], [deploy_task()], {d.serve_app: app}, {d.serve_app: alloc})
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
    assert plan_mine([d], [same], apps, allocs).tasks == {}
    moved = deploy_task(status="processing", allocation_state="starting")
    assert plan_mine([d], [moved], apps, allocs).tasks["deploy-emb"]["detail"] == {
        "allocation_state": "started",
        "reason": None,
    }


def test_deploy_task_of_deleted_deployment_is_canceled():
    d = record(status="DELETING")
    p = plan_mine([d], [deploy_task(), deploy_task("gone")], {}, {})
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


# ---------------------------------------------------------------- no state that never ends

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def waiting_deploy(waited_s: float, alloc: Allocation):
    d = record(status="DEPLOYING", config=DeploymentConfig(num_replicas=2))
    app = AppState(name=d.serve_app, status="DEPLOYING", target_replicas=2)
    task = deploy_task(
        status="processing", allocation_state=alloc.allocation_state, reason=alloc.reason
    )
    task = task.model_copy(update={"created_at": T0})
    now = T0 + timedelta(seconds=waited_s)
    return plan_mine(
        [d], [task], {d.serve_app: app}, {d.serve_app: alloc}, now=now, deploy_timeout_s=60
    )


def test_a_deploy_that_cannot_be_placed_fails_after_the_timeout_with_the_reason():
    reason = "insufficient GPU: each replica needs GPU=4 but the cluster has GPU=1 in total"
    alloc = Allocation(allocation_state="starting", target_replicas=2, reason=reason)
    assert waiting_deploy(59, alloc).tasks == {}  # still within the bound
    p = waiting_deploy(60, alloc)
    error = p.tasks["deploy-emb"]["error"]
    assert p.tasks["deploy-emb"]["status"] == "failed"
    assert (
        error
        == f"not ready within 60s (MODELYARD_DEPLOY_TIMEOUT_S): 0 of 2 replicas running; {reason}"
    )
    assert p.status == {"emb": {"status": "FAILED", "error": error}}


def test_a_deploy_half_placed_at_the_timeout_says_how_far_it_got():
    alloc = Allocation(allocation_state="started", target_replicas=2, running_replicas=1)
    error = waiting_deploy(61, alloc).tasks["deploy-emb"]["error"]
    assert "1 of 2 replicas running; replicas were placed but did not become healthy" in error


def test_a_failed_deployments_own_app_is_deleted():
    d = record(status="FAILED", error="not ready within 60s")
    app = AppState(name=d.serve_app, status="DEPLOYING", target_replicas=1)
    p = plan_mine([d], [], {d.serve_app: app}, {d.serve_app: STOPPED})
    assert p.delete == [d.serve_app] and p.deploy == []


def scale_to_zero(status: str = "DEPLOYING") -> DeploymentRecord:
    config = DeploymentConfig(autoscaling=Autoscaling(min_replicas=0, max_replicas=2))
    return record(status=status, config=config)


def test_a_deployment_scaled_to_zero_is_active_and_its_deploy_done():
    d = scale_to_zero()
    # Serve marks an app with 0 of 0 replicas RUNNING; the allocation view is full.
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=0)
    alloc = allocation(app, {"CPU": 4}, {"CPU": 4})
    assert (alloc.allocation_state, alloc.target_replicas) == ("fully_allocated", 0)
    p = plan_mine([d], [deploy_task(status="processing")], {d.serve_app: app}, {d.serve_app: alloc})
    assert p.status == {"emb": {"status": "ACTIVE", "error": None}}
    assert p.tasks["deploy-emb"]["status"] == "done"


def test_a_deployment_waking_from_zero_stays_active():
    d = scale_to_zero("ACTIVE")
    pending = {"replica_id": "r1", "state": "STARTING", "node_id": None}
    app = AppState(name=d.serve_app, status="RUNNING", target_replicas=1, replicas=[pending])
    alloc = allocation(app, {"CPU": 4}, {"CPU": 4})
    assert alloc.allocation_state == "starting"
    assert plan_mine([d], [], {d.serve_app: app}, {d.serve_app: alloc}).status == {}
    # A fixed-size deployment with nothing running is not ready, though.
    fixed = record(status="ACTIVE")
    assert plan_mine([fixed], [], {d.serve_app: app}, {d.serve_app: alloc}).status == {
        "emb": {"status": "DEPLOYING", "error": None}
    }


def test_a_still_deploying_zero_replica_app_is_not_fully_allocated():
    app = AppState(name="emb--v1", status="DEPLOYING", target_replicas=0)
    assert allocation(app, {}, {}).allocation_state == "starting"


# ---------------------------------------------------------------- the record of own apps


def test_the_registry_keeps_its_own_apps_across_restarts(tmp_path):
    from cluster.registry.actor import RegistryCore

    db = tmp_path / "r.db"
    core = RegistryCore(db)
    core.record_serve_app("emb--v1", "emb")
    core.record_serve_app("emb--v1", "emb")  # a retried call records it once
    core.record_serve_app("emb--v2", "emb")
    core.forget_serve_apps(["emb--v2", "never--v1"])
    core.close()
    again = RegistryCore(db)
    assert again.owned_serve_apps() == ["emb--v1"]
    again.close()


def test_a_database_from_before_apps_were_recorded_adopts_its_deployments_apps(tmp_path):
    from cluster.registry.actor import RegistryCore
    from cluster.schemas import DeployRequest, ModelCreate

    db = tmp_path / "r.db"
    core = RegistryCore(db)
    core.register_model(ModelCreate(model_id="m", kind="custom", predictor="serve_apps.x:P"))
    core.create_deploy_task(DeployRequest(model_id="m", deployment_name="emb"))
    core.close()
    again = RegistryCore(db)
    assert again.owned_serve_apps() == ["emb--v1"]
    again.close()


def test_replica_counts_that_could_never_be_reached_are_refused_naming_the_field():
    import pytest
    from pydantic import ValidationError

    assert DeploymentConfig(autoscaling={"min_replicas": 0, "max_replicas": 1}).replicas_wanted == 1
    for bad, field_name in (
        ({"autoscaling": {"max_replicas": 5000}}, "max_replicas"),
        ({"autoscaling": {"min_replicas": 5000, "max_replicas": 5000}}, "min_replicas"),
        ({"num_replicas": 5000}, "num_replicas"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, r"max_replicas \(2\) must be >="),
    ):
        with pytest.raises(ValidationError, match=field_name):
            DeploymentConfig.model_validate(bad)
