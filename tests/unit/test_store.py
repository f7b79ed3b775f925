"""The registry's storage: transactions, the single-writer lock, quarantine, retention, and
inline fine-tuning datasets written once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest

from cluster import errors
from cluster.registry.actor import RegistryCore
from cluster.registry.state import Retention
from cluster.registry.store import Store, StoreLocked
from cluster.schemas import (
    DeleteRequest,
    DeployRequest,
    FineTuneCreate,
    ModelCreate,
    VersionCreate,
    utcnow,
)

EMB = ModelCreate(model_id="emb", kind="sentence-transformer", artifact_uri="/m")
ECHO = ModelCreate(model_id="echo", kind="custom", predictor="tests.predictors:Echo")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "registry.db"


def rows(db, table: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(f"SELECT id, doc FROM {table}").fetchall())


# ------------------------------------------------------------------ transactions


class Boom(RuntimeError):
    pass


def fail_on(monkeypatch, store: Store, table: str) -> None:
    """The next write to ``table`` raises, as a full disk would."""
    put = store.put

    def flaky(t, key, doc):
        if t == table:
            raise Boom(f"cannot write {t}")
        put(t, key, doc)

    monkeypatch.setattr(store, "put", flaky)


def test_a_failed_write_leaves_disk_and_memory_as_they_were(db, monkeypatch):
    reg = RegistryCore(db)
    reg.register_model(ECHO)
    before = (reg.list_deployments(), reg.list_tasks().items, rows(db, "deployments"))
    fail_on(monkeypatch, reg._store, "tasks")  # the deployment row is written first
    with pytest.raises(Boom):
        reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="a"))
    assert (reg.list_deployments(), reg.list_tasks().items, rows(db, "deployments")) == before
    with pytest.raises(errors.NotFound):
        reg.get_deployment("a")
    monkeypatch.undo()
    reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="a"))
    reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="b"))
    fail_on(monkeypatch, reg._store, "tasks")
    with pytest.raises(Boom):
        reg.create_delete_task(DeleteRequest(model_id="echo"))
    assert {d.status for d in reg.list_deployments()} == {"PENDING"}
    assert {json.loads(d)["status"] for d in rows(db, "deployments").values()} == {"PENDING"}
    reg.close()
    assert {d.status for d in RegistryCore(db).list_deployments()} == {"PENDING"}


def test_register_model_writes_the_model_and_version_1_together(db, monkeypatch):
    reg = RegistryCore(db)
    fail_on(monkeypatch, reg._store, "versions")
    with pytest.raises(Boom):
        reg.register_model(EMB)
    assert reg.list_models() == [] and rows(db, "models") == {}
    monkeypatch.undo()
    assert reg.register_model(EMB).version == 1


def test_a_transaction_rolls_back_every_write_in_it(db):
    store = Store(db)
    with pytest.raises(Boom), store.transaction():
        store.put("models", "a", EMB)
        with store.transaction():  # a nested one joins the outer
            store.put("models", "b", EMB)
        raise Boom()
    assert store.load("models", ModelCreate) == []
    with store.transaction():
        store.put("models", "a", EMB)
    assert [k for k, _ in store.load("models", ModelCreate)] == ["a"]


def test_commits_are_synced_in_full_in_wal_mode(db):
    # Every commit answers a client (a task id, a version): a power cut must not undo it.
    store = Store(db)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# ------------------------------------------------------------------ one writer

HOLD = """
import sys, time
from pathlib import Path
from cluster.registry.store import Store, StoreLocked
try:
    Store(Path(sys.argv[1]), lock_wait_s=float(sys.argv[2]))
except StoreLocked as exc:
    print("LOCKED", exc)
    sys.exit(3)
print("OPENED")
"""


def open_elsewhere(db, wait_s: float = 0.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HOLD, str(db), str(wait_s)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_process_cannot_open_the_registry_database(db):
    store = Store(db)
    other = open_elsewhere(db)
    assert other.returncode == 3, other.stderr
    assert str(db) in other.stdout and f"{db}.lock" in other.stdout
    assert "MODELYARD_STORAGE_ROOT" in other.stdout  # says how to fix it
    store.close()
    assert open_elsewhere(db).stdout.strip() == "OPENED"


def test_one_process_shares_its_lock_and_a_stranger_is_refused(db):
    import fcntl
    import os

    first, second = Store(db), Store(db)  # a registry restart acted out in one process
    fd = os.open(f"{db}.lock", os.O_RDWR)  # another open file, as another process has
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    first.close()
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    second.close()
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the last Store closed
    with pytest.raises(StoreLocked, match="in use by another modelyard control plane"):
        Store(db, lock_wait_s=0.2)
    os.close(fd)


# ------------------------------------------------------------------ quarantine


def corrupt(db, table: str, key: str, doc: str | bytes) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (doc, key))


def test_a_registry_with_unreadable_rows_starts_and_serves_the_rest(db):
    reg = RegistryCore(db)
    reg.register_model(EMB)
    reg.register_model(ECHO)
    reg.add_version("echo", VersionCreate(metrics={"acc": 0.5}))
    deploy = reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="echo"))
    reg.create_deploy_task(DeployRequest(model_id="emb", deployment_name="emb"))
    reg.close()
    v2 = json.loads(rows(db, "versions")["echo@2"])
    v2["metrics"] = {"recall_at_1": float("nan")}  # as json.dumps writes it: NaN
    corrupt(db, "versions", "echo@2", json.dumps(v2))
    corrupt(db, "deployments", "emb", "{not json")
    corrupt(db, "models", "emb", b"\xff\xfe not utf-8")

    again = RegistryCore(db)
    assert [m.model_id for m in again.list_models()] == ["echo"]
    assert [v.version for v in again.list_versions("echo")] == [1]
    assert [d.name for d in again.list_deployments()] == ["echo"]
    assert again.get_task(deploy.id).deployment_name == "echo"
    assert again.create_deploy_task(DeployRequest(model_id="echo", deployment_name="e2"))
    # Numbering goes on past the version set aside: "echo v2" never means two things.
    assert again.add_version("echo", VersionCreate(artifact_uri="/3")).version == 3
    held = {(q.table, q.id): q for q in again.list_quarantine()}
    assert set(held) == {("versions", "echo@2"), ("deployments", "emb"), ("models", "emb")}
    assert (
        "NaN" in held["versions", "echo@2"].doc
        and "recall_at_1" in held["versions", "echo@2"].error
    )
    assert held["deployments", "emb"].doc == "{not json"
    assert "emb" not in rows(db, "models")  # moved, not copied: the next start is clean
    again.close()
    assert len(RegistryCore(db).list_quarantine()) == 3


def test_a_model_whose_versions_are_all_unreadable_is_set_aside_too(db):
    reg = RegistryCore(db)
    reg.register_model(ECHO)
    reg.close()
    corrupt(db, "versions", "echo@1", "[]")
    again = RegistryCore(db)
    assert again.list_models() == []
    with pytest.raises(errors.NotFound):
        again.get_model("echo")
    assert {q.table for q in again.list_quarantine()} == {"versions", "models"}


# ------------------------------------------------------------------ idempotent retries


def test_a_retried_add_version_adds_nothing(db):
    reg = RegistryCore(db)
    reg.register_model(EMB)
    with pytest.raises(errors.Conflict):
        reg.register_model(EMB)  # Ray re-running the call after a crash
    assert [v.version for v in reg.list_versions("emb")] == [1]
    run1 = VersionCreate(artifact_uri="/ft/task-1/model-run1", metrics={"r": 0.7})
    first = reg.add_version("emb", run1, "fine_tuning-1")
    assert reg.add_version("emb", run1, "fine_tuning-1") == first
    run2 = VersionCreate(artifact_uri="/ft/task-1/model-run2")  # the task restarted
    assert reg.add_version("emb", run2, "fine_tuning-1").version == 3
    same = VersionCreate(artifact_uri="/v4")
    v4 = reg.add_version("emb", same)
    assert reg.add_version("emb", same) == v4
    assert [v.version for v in reg.list_versions("emb")] == [1, 2, 3, 4]
    reg.add_version("emb", VersionCreate(artifact_uri="/v5"))
    assert reg.add_version("emb", same).version == 6  # not right after itself: a new one


# ------------------------------------------------------------------ retention


def finished_deploy(reg: RegistryCore, name: str) -> str:
    task = reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name=name))
    reg.update_task(task.id, status="done")
    return task.id


def test_finished_tasks_go_after_their_time_but_the_newest_per_deployment_stays(db):
    reg = RegistryCore(db)
    reg.register_model(ECHO)
    a1 = finished_deploy(reg, "a")
    reg.update_deployment("a", status="FAILED")
    a2 = finished_deploy(reg, "a")  # a redeploy of a failed one
    b1 = finished_deploy(reg, "b")
    open_task = reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="c")).id
    state = reg._state
    assert state.purge(utcnow() + timedelta(days=29)) == 0
    assert state.purge(utcnow() + timedelta(days=31)) == 1
    assert [t.id for t in reg.list_tasks().items] == [a2, b1, open_task]
    assert a1 not in rows(db, "tasks")
    reg.close()
    assert [t.id for t in RegistryCore(db).list_tasks().items] == [a2, b1, open_task]


def test_finished_tasks_beyond_the_count_go_oldest_first(db):
    reg = RegistryCore(db, retention=Retention(max_finished_tasks=2, purge_every_s=0))
    reg.register_model(ECHO)
    ids = [finished_deploy(reg, f"d{i}") for i in range(3)]
    reg.remove_deployment("d0")
    reg.remove_deployment("d1")
    # The newest of each kind per model stays whatever the count: d2's (and a write purges).
    reg.register_model(EMB)
    assert [t.id for t in reg.list_tasks().items] == ids[1:]
    assert set(rows(db, "tasks")) == set(ids[1:])


def test_events_are_kept_per_deployment_up_to_the_count_and_the_time(db):
    reg = RegistryCore(db, retention=Retention(events_per_deployment=3, purge_every_s=3600))
    reg.register_model(ECHO)
    reg.create_deploy_task(DeployRequest(model_id="echo", deployment_name="a"))
    for i in range(5):
        reg.add_event("a", "note", f"n{i}")
    reg.add_event("b", "note", "other")
    assert reg._state.purge() == 2
    assert [e.message for e in reg.list_events("a")] == ["n2", "n3", "n4"]
    assert len(rows(db, "events")) == 4
    assert reg._state.purge(utcnow() + timedelta(days=31)) == 4
    assert reg.list_events("a") == [] and rows(db, "events") == {}


def test_retention_settings_reach_the_registry():
    from cluster.settings import Settings

    settings = Settings(task_retention_days=2, max_finished_tasks=5, events_per_deployment=7)
    retention = Retention.from_settings(settings)
    assert (retention.task_days, retention.max_finished_tasks) == (2, 5)
    assert retention.events_per_deployment == 7
    with pytest.raises(ValueError, match="max_finished_tasks"):
        Settings(max_finished_tasks=0)


# ------------------------------------------------------------------ inline datasets


def test_inline_pairs_are_written_once_not_with_every_progress_report(db):
    reg = RegistryCore(db)
    reg.register_model(EMB)
    pairs = [{"anchor": f"q{i}", "positive": f"d{i}"} for i in range(200)]
    req = FineTuneCreate(embedding_model_id="emb", dataset={"pairs": pairs})
    task = reg.create_finetune_task(req)
    with sqlite3.connect(db) as conn:
        written = conn.execute("SELECT seq FROM datasets WHERE id = ?", (task.id,)).fetchone()
    for step in range(1, 4):
        reg.report_progress(task.id, {"event": "step", "step": step, "total_steps": 9})
    stored = rows(db, "tasks")[task.id]
    assert "q199" not in stored and len(stored) < 2000  # the task row refers to them
    with sqlite3.connect(db) as conn:
        seq = conn.execute("SELECT seq FROM datasets WHERE id = ?", (task.id,)).fetchone()
    assert seq == written  # never rewritten
    assert reg.get_task(task.id).detail["request"]["dataset"]["pairs"] == pairs
    reg.close()
    again = RegistryCore(db).get_task(task.id)
    assert again.detail["request"]["dataset"]["pairs"] == pairs
    assert again.detail["progress"]["step"] == 3
    assert FineTuneCreate.model_validate(again.detail["request"]) == req


def test_a_diverged_run_is_recorded_not_refused(db):
    reg = RegistryCore(db)
    reg.register_model(EMB)
    task = reg.create_finetune_task(
        FineTuneCreate(embedding_model_id="emb", dataset={"uri": "/data/pairs.jsonl"})
    )
    nan = float("nan")
    reg.report_progress(task.id, {"event": "step", "step": 1, "total_steps": 2, "loss": nan})
    reg.report_progress(
        task.id, {"event": "done", "step": 2, "metrics_after": {"recall_at_1": nan, "mrr": 0.5}}
    )
    detail = reg.get_task(task.id).detail
    assert detail["history"][0]["loss"] is None
    assert detail["metrics_after"] == {"mrr": 0.5}


# ------------------------------------------------------------------ the admin view


class FakeControl:
    """The control plane as the routes see it: registry calls go to a RegistryCore."""

    class router:  # noqa: N801 - shaped like ControlPlane.router
        @staticmethod
        def start() -> None:
            pass

    def __init__(self, reg: RegistryCore) -> None:
        self.reg = reg

    async def call(self, method: str, *args, **kwargs):
        return getattr(self.reg, method)(*args, **kwargs)


def test_get_admin_quarantine_lists_the_rows_set_aside_for_the_admin_only(db):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from cluster.api import system
    from cluster.ingress import context
    from cluster.ingress.auth import require_key
    from cluster.ingress.http import install_error_handlers
    from cluster.settings import key_digest

    reg = RegistryCore(db)
    reg.register_model(ECHO)
    reg.close()
    corrupt(db, "versions", "echo@1", '{"model_id": "echo", "version": NaN}')
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(system.router, prefix="/v1", dependencies=[Depends(require_key)])
    context.configure(control=FakeControl(RegistryCore(db)), key_digest=key_digest("k"))
    client = TestClient(app)
    assert client.get("/v1/admin/quarantine").status_code == 401
    resp = client.get("/v1/admin/quarantine", headers={"Authorization": "Bearer k"})
    assert resp.status_code == 200, resp.text
    rows = {(r["table"], r["id"]): r for r in resp.json()}
    assert set(rows) == {("versions", "echo@1"), ("models", "echo")}
    assert rows["versions", "echo@1"]["doc"] == '{"model_id": "echo", "version": NaN}'
    assert "none of its versions" in rows["models", "echo"]["error"]
