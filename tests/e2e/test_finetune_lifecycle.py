"""A fine-tuning task's life over the real API on real Ray: canceled while it trains (every
training actor and placement group goes with it), caught in a whole-cluster restart (it
shows failed, never stuck in processing), and restarted both times from its checkpoint with
the step count carrying on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.support import FINAL, PAIRS, finetune_task, wait_finetune_status, wait_for

pytestmark = pytest.mark.e2e

MODEL = "tiny-lifecycle"
EVERY = 10  # checkpoint every N steps
MAX_STEPS = 200
PARAMS = {
    "max_steps": MAX_STEPS,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "eval_fraction": 0.25,
    "checkpoint_every_steps": EVERY,
}
# Detached singletons one per cluster, shared by every run and made to outlive them: Ray
# Train's state actor and Ray's autoscaling coordinator (get_if_exists, by its first user).
CLUSTER_WIDE = {"TrainStateActor", "_AutoscalingCoordinatorActor"}


@pytest.fixture(scope="module")
def ft_model(api, tiny_model) -> str:
    r = api.post(
        "/v1/models",
        json={"model_id": MODEL, "kind": "sentence-transformer", "artifact_uri": tiny_model},
    )
    assert r.status_code in (201, 409), r.text
    return MODEL


def _create(api, key: str) -> str:
    body = {
        "embedding_model_id": MODEL,
        "dataset": {"pairs": PAIRS},
        "params": PARAMS,
        "idempotency_key": key,
    }
    r = api.post("/v1/fine-tuning/task", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _wait_checkpointed(api, task_id: str, timeout_s: float = 240) -> dict:
    """Processing, with at least one checkpoint written, and not near its end yet."""

    def checkpointed():
        t = finetune_task(api, task_id)
        assert t["status"] in ("pending", "processing"), t
        return t["status"] == "processing" and (t["detail"].get("checkpoint_step") or 0) and t

    task = wait_for(checkpointed, timeout_s, f"task {task_id} to checkpoint", interval_s=0.2)
    assert task["detail"]["progress"]["step"] < MAX_STEPS, task["detail"]["progress"]
    return task


def _leftovers(submission_id: str) -> dict[str, list]:
    """What Ray still holds for one Ray Job: its actors (driver-side buffer, Train
    controller, workers, placement-group cleaner, the job supervisor) and placement groups."""
    from ray.util.state import list_actors, list_jobs, list_placement_groups

    job_ids = {j.job_id for j in list_jobs() if j.submission_id == submission_id and j.job_id}
    supervisor = f"_ray_internal_job_actor_{submission_id}"
    actors = [
        f"{a.class_name}:{a.state}"
        for a in list_actors(filters=[("state", "!=", "DEAD")], limit=10_000)
        if (a.job_id in job_ids and a.class_name not in CLUSTER_WIDE) or a.name == supervisor
    ]
    groups = [
        f"{g.placement_group_id}:{g.state}"
        for g in list_placement_groups(filters=[("state", "!=", "REMOVED")], limit=10_000)
        if g.creator_job_id in job_ids
    ]
    return {"actors": actors, "placement_groups": groups}


def _wait_freed(submission_id: str, timeout_s: float) -> None:
    last: dict[str, list] = {}

    def freed() -> bool:
        last.update(_leftovers(submission_id))
        return not any(last.values())

    try:
        wait_for(freed, timeout_s, f"Ray to free job {submission_id}", interval_s=0.5)
    except BaseException:
        print("still held:", last)
        raise


def _drivers(config_path: str) -> list[str]:
    """Processes on this machine running the training driver of one run."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended while we looked
            continue
        if config_path.encode() in argv and b"train_jobs.finetune" in argv:
            found.append(cmdline.parent.name)
    return found


def _restart_to_done(api, task_id: str, last_checkpoint: int) -> dict:
    """Restart (resume is the default) and check the new run carries the step count on."""
    r = api.put(f"/v1/fine-tuning/task/{task_id}/restart")
    assert r.status_code == 202, r.text
    run = r.json()["detail"]["run"]
    done = wait_finetune_status(api, task_id, FINAL, 420)
    assert done["status"] == "done", done
    detail = done["detail"]
    history = [p for p in detail["history"] if p["run"] == run]
    (started,) = [p["step"] for p in history if p["event"] == "started"]
    steps = [p["step"] for p in history if p["event"] == "step"]
    # From the newest checkpoint the earlier run wrote, not from step 0.
    assert started == last_checkpoint > 0, (started, last_checkpoint)
    assert steps == list(range(started + 1, MAX_STEPS + 1))
    assert detail["progress"]["first_step"] == started
    assert detail["progress"]["step"] == MAX_STEPS and detail["progress"]["percent"] == 100.0
    # The new run's own Ray Job log says the same.
    logs = api.get(f"/v1/fine-tuning/task/{task_id}/logs").json()["logs"]
    events = [json.loads(line) for line in logs.splitlines() if line.startswith('{"event"')]
    assert [e["step"] for e in events if e["event"] == "started"] == [started]
    assert [e["step"] for e in events if e["event"] == "step"][0] == started + 1
    assert detail["model_version"] >= 1
    return done


@pytest.mark.timeout(900)
def test_cancel_while_processing_frees_ray_then_restart_carries_the_steps_on(api, ft_model):
    task_id = _create(api, "lifecycle-cancel")
    running = _wait_checkpointed(api, task_id)
    job = running["detail"]["job_id"]
    held = _leftovers(job)
    # The filter sees the run while it trains: its actors and its placement group.
    assert any(a.startswith("RayTrainWorker:ALIVE") for a in held["actors"]), held
    assert any(a.startswith("TrainController:ALIVE") for a in held["actors"]), held
    assert held["placement_groups"], held

    asked = time.monotonic()
    r = api.put(f"/v1/fine-tuning/task/{task_id}/cancel", timeout=40)
    assert r.status_code == 200, r.text
    canceled = wait_finetune_status(api, task_id, FINAL, max(1.0, 30 - (time.monotonic() - asked)))
    assert canceled["status"] == "canceled", canceled
    _wait_freed(job, max(1.0, 30 - (time.monotonic() - asked)))
    print(f"canceled and freed in {time.monotonic() - asked:.1f}s")
    assert canceled["detail"]["progress"]["step"] < MAX_STEPS
    time.sleep(2)  # a late progress call or operator tick must not revive it
    assert finetune_task(api, task_id)["status"] == "canceled"

    _restart_to_done(api, task_id, canceled["detail"]["checkpoint_step"])


@pytest.mark.timeout(900)
def test_whole_cluster_restart_fails_a_processing_task_then_restart_resumes(
    api, local_cluster, ft_model
):
    task_id = _create(api, "lifecycle-cluster-restart")
    running = _wait_checkpointed(api, task_id)

    went_down = time.monotonic()
    local_cluster.restart()  # ray.shutdown() + a fresh ray.init() + the `up` sequence

    seen = []

    def failed():
        t = finetune_task(api, task_id)
        seen.append(t["status"])
        return t if t["status"] in FINAL else None

    gone = wait_for(failed, 60, f"task {task_id} to leave processing after the restart")
    assert gone["status"] == "failed", gone
    assert "cluster restarted" in gone["error"] and "restart the task" in gone["error"]
    assert gone["detail"]["job_id"] == running["detail"]["job_id"]
    print(f"statuses seen after the restart: {seen[:3]} ... {seen[-1]} ({len(seen)} polls)")
    # Nothing of the old run trains on: its driver went with the cluster.
    config = running["detail"]["config"]
    wait_for(lambda: not _drivers(config), 90, f"the old run's driver to exit: {_drivers(config)}")
    print(f"old driver gone {time.monotonic() - went_down:.1f}s after the cluster went down")

    _restart_to_done(api, task_id, gone["detail"]["checkpoint_step"])
