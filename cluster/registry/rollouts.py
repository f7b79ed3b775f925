"""The registry's side of version swaps: start, the operator's steps, a rollback by request.

A swap is recorded as a ``RolloutState`` on the deployment and a rollout task, written
together; the operator steps it (``apply``), and each step changes the deployment, the task
and the events in one transaction, only while it is still that swap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cluster import errors
from cluster.registry.deployments import DeploymentStore, event
from cluster.registry.models import ModelStore
from cluster.registry.state import RegistryState
from cluster.registry.tasks import TaskStore
from cluster.schemas import (
    DeploymentConfig,
    DeploymentRecord,
    DeploymentStatus,
    RolloutOptions,
    RolloutState,
    Task,
    TaskKind,
    TaskStatus,
    app_name,
    utcnow,
)


def rollback(
    r: RolloutState, reason: str, status: str, now: datetime, measured: dict | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, dict]]]:
    """The step that sends all traffic back to blue now (green is deleted once it has
    drained): the deployment's fields, the task's, and the events. Pure, so the operator's
    state machine can take the same step when a limit is crossed."""
    rollout = r.model_copy(
        update={
            "phase": "aborting",
            "abort_reason": reason,
            "abort_status": status,
            "step_started_at": now,  # the drain is timed from the abort
        }
    )
    record = {"rollout": rollout, "traffic": {r.blue_app: 100}}
    task = {"status": "processing", "detail": {"phase": "aborting", "reason": reason}}
    return record, task, [("rollback", reason, measured or {})]


class RolloutStore:
    def __init__(
        self,
        state: RegistryState,
        models: ModelStore,
        deployments: DeploymentStore,
        tasks: TaskStore,
    ) -> None:
        self._state = state
        self._models = models
        self._deployments = deployments
        self._tasks = tasks

    def start(
        self,
        name: str,
        version: int,
        options: RolloutOptions,
        config: DeploymentConfig | None = None,
        refusal: str | None = None,
    ) -> Task:
        """Begin a swap to ``version`` (and/or ``config``); ``refusal`` records a refused one."""
        record = self._deployments.get(name)
        target = self._models.version(record.model_id, version)
        if record.status != "ACTIVE" or record.rollout is not None:
            raise errors.Conflict(
                f"deployment '{name}' is {record.status}"
                + (" and already swapping versions" if record.rollout else "")
                + "; only an ACTIVE deployment without a swap in progress can swap"
            )
        config = config or record.config
        if version == record.model_version and config == record.config:
            raise errors.Conflict(f"deployment '{name}' already serves v{version}")
        links = {"model_id": record.model_id, "deployment_name": name}
        detail = {
            "from_version": record.model_version,
            "to_version": version,
            "strategy": options.strategy,
        }
        if refusal:
            task = self._tasks.new(
                TaskKind.ROLLOUT, **links, detail=detail, status=TaskStatus.REFUSED, error=refusal
            )
            refused = event(name, "rollout_refused", refusal, {"to_version": version})
            self._state.save(task, refused)
            return task
        task = self._tasks.new(TaskKind.ROLLOUT, **links, detail=detail)
        green = record.serve_app if options.strategy == "in_place" else _green_app(record, version)
        rollout = RolloutState(
            task_id=task.id,
            from_version=record.model_version,
            to_version=target.version,
            blue_app=record.serve_app,
            green_app=green,
            config=config,
            options=options,
        )
        changed = self._deployments.changed(
            name, rollout=rollout, pending_model_version=version, status=DeploymentStatus.UPDATING
        )
        message = f"v{record.model_version} -> v{version} ({options.strategy})"
        self._state.save(task, changed, event(name, "rollout_started", message, detail))
        return task

    def apply(self, name: str, task_id: str, fields: dict, task: dict | None, events: list) -> None:
        """The operator's step of one rollout, applied only if it is still that rollout."""
        record = self._deployments.find(name)
        if record is None or record.rollout is None or record.rollout.task_id != task_id:
            return
        if "rollout" in fields and fields["rollout"] is None and record.status == "UPDATING":
            fields = {**fields, "status": DeploymentStatus.ACTIVE}
        docs: list = [self._deployments.changed(name, **fields)]
        updated = self._tasks.changed(task_id, **task) if task else None
        if updated is not None:
            docs.append(updated)
        docs += [event(name, type_, message, data) for type_, message, data in events]
        self._state.save(*docs)

    def abort(self, name: str) -> Task:
        """Mid-swap rollback: all traffic back to blue at once; green drains, then goes."""
        record = self._deployments.get(name)
        r = record.rollout
        if r is None:
            raise errors.Conflict(f"deployment '{name}' has no swap in progress")
        if r.phase not in ("starting", "shifting") or r.options.strategy == "in_place":
            raise errors.Conflict(
                f"the swap of '{name}' is {r.phase}; roll back once it has finished"
            )
        fields, task, events = rollback(r, "rolled back by request", "canceled", utcnow())
        self.apply(name, r.task_id, fields, task, events)
        return self._tasks.get(r.task_id)


def _green_app(record: DeploymentRecord, version: int) -> str:
    seq = 0
    while app_name(record.name, version, seq) == record.serve_app:
        seq += 1
    return app_name(record.name, version, seq)
