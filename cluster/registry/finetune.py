"""The registry's side of fine-tuning: idempotent creates, progress, restarts.

One actor, one thread: a create is atomic, so concurrent creates with one idempotency key
make exactly one task. An inline dataset is written to disk once, with the create; progress
reports rewrite the task's row without it (``RegistryState``). The operator's updates of one
run (``cluster.jobs.finetune_runner``) name it (``Expect(run=...)``), so one that lands after
a cancel or a restart changes nothing.
"""

from __future__ import annotations

import math
import time
from typing import Any

from cluster import errors
from cluster.registry.deployments import DeploymentStore
from cluster.registry.models import ModelStore
from cluster.registry.tasks import ANY_STATE, TaskStore
from cluster.schemas import FineTuneCreate, Task, TaskKind, TaskStatus

KIND = TaskKind.FINE_TUNING.value
HISTORY = 500  # progress points kept per task


class FineTuneTasks:
    def __init__(self, tasks: TaskStore, models: ModelStore, deployments: DeploymentStore) -> None:
        self._tasks = tasks
        self._models = models
        self._deployments = deployments

    def create(self, req: FineTuneCreate) -> Task:
        fingerprint = req.fingerprint()
        if req.idempotency_key:
            for task in self._tasks.all():
                if task.kind == KIND and task.idempotency_key == req.idempotency_key:
                    if task.detail.get("fingerprint") != fingerprint:
                        raise errors.Conflict(
                            f"idempotency_key '{req.idempotency_key}' was used for a different "
                            f"request (task {task.id}); use a new key"
                        )
                    return task
        model = self._models.public(req.embedding_model_id)
        if model.kind != "sentence-transformer":
            raise errors.BadRequest(
                f"model '{model.model_id}' is '{model.kind}'; fine-tuning needs a "
                "sentence-transformer model"
            )
        version = self._models.version(req.embedding_model_id, req.version)
        if req.deploy_to is not None:
            self._deployments.get(req.deploy_to)
        return self._tasks.create(
            TaskKind.FINE_TUNING,
            model_id=req.embedding_model_id,
            deployment_name=req.deploy_to,
            idempotency_key=req.idempotency_key,
            detail={
                "request": req.model_dump(mode="json"),
                "fingerprint": fingerprint,
                "base_version": version.version,
                "run": 1,
                "from_scratch": False,
                "progress": {"step": 0, "percent": 0.0},
                "history": [],
            },
        )

    def report_progress(self, task_id: str | None, payload: dict[str, Any]) -> None:
        """Called by the training job (rank 0), fire-and-forget: a report for a task that
        is gone or has ended changes nothing."""
        task = self._tasks.find(task_id or "")
        if task is None or task.kind != KIND or task.final:
            return
        detail = dict(task.detail)
        event = payload.get("event")
        if event in ("eval_before", "done") and payload.get("metrics_before") is not None:
            detail["metrics_before"] = measured(payload["metrics_before"])
        if event == "done" and payload.get("metrics_after") is not None:
            detail["metrics_after"] = measured(payload["metrics_after"])
        if event == "checkpoint" and payload.get("step") is not None:
            detail["checkpoint_step"] = payload["step"]
        if payload.get("step") is not None:
            previous = {} if event == "started" else detail.get("progress", {})
            detail["progress"] = _progress(previous, payload)
            point = {k: payload.get(k) for k in ("step", "epoch", "loss", "ts")}
            point |= {"event": event, "run": detail.get("run", 1)}
            detail["history"] = [*detail.get("history", []), point][-HISTORY:]
        self._tasks.update(task.id, detail=detail)

    def restart(self, task_id: str, from_scratch: bool) -> Task:
        task = self._tasks.get(task_id, KIND)
        if task.status in ("pending", "processing"):
            raise errors.Conflict(f"task {task_id} is {task.status}; cancel it first")
        if task.status == "refused":
            raise errors.Conflict(f"task {task_id} was refused: {task.error}")
        detail = {
            **task.detail,
            "run": task.detail.get("run", 1) + 1,
            "from_scratch": from_scratch,
            # A fresh Ray Train run name per from-scratch start; resuming keeps the latest.
            "scratch_runs": scratch_runs(task.detail) + int(from_scratch),
            "job_id": None,
            "submit_tries": 0,
            "poll_tries": 0,
        }
        if from_scratch:
            detail["checkpoint_step"] = None
        # Only a finished task gets here: the update must not refuse one.
        return self._tasks.update(
            task_id, ANY_STATE, status=TaskStatus.PENDING, error=None, detail=detail
        )


def measured(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers: a NaN (a diverged run) is no measurement, and a
    version's ``metrics`` refuses it."""
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def scratch_runs(detail: dict[str, Any]) -> int:
    """How many times the task started over; older records only hold ``from_scratch``."""
    return detail.get("scratch_runs", int(bool(detail.get("from_scratch"))))


def _progress(previous: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Progress of the current run: ``first_step`` is where it started (0, or the step of
    the checkpoint it resumed from), and the ETA counts from there."""
    step, total = payload.get("step") or 0, payload.get("total_steps") or 0
    now = payload.get("ts") or time.time()
    first = previous.get("first_step_ts") or now
    first_step = previous.get("first_step", step)
    done = step - first_step
    eta = (total - step) * (now - first) / done if done > 0 and total else None
    return {
        "step": step,
        "total_steps": total,
        "percent": round(100.0 * step / total, 1) if total else 0.0,
        "epoch": payload.get("epoch"),
        "loss": payload.get("loss"),
        "eta_s": round(eta, 1) if eta is not None else None,
        "first_step_ts": first,
        "first_step": first_step,
    }
