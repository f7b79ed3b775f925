"""The registry's side of deploy and delete: the task and the deployment change, together.

A deploy writes the deployment (new, or a failed or stopped one reset) and its task in one
transaction; deploying what already runs answers with the task that made it, and asking to
delete what an open delete task is deleting answers with that task, so a retry after a
crash adds nothing.
"""

from __future__ import annotations

import re

from cluster import errors
from cluster.registry.deployments import DeploymentStore
from cluster.registry.models import ModelStore
from cluster.registry.state import RegistryState
from cluster.registry.tasks import TaskStore
from cluster.schemas import (
    RUNNING_STATES,
    DeleteRequest,
    DeploymentRecord,
    DeploymentStatus,
    DeployRequest,
    Task,
    TaskKind,
)


def deployment_name_for(model_id: str) -> str:
    """A valid deployment name from a model id: 'all-MiniLM-L6-v2' -> 'all-minilm-l6-v2'."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")
    return slug[:63].rstrip("-") or "model"


class DeployTasks:
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

    def create_deploy(self, req: DeployRequest) -> Task:
        version = self._models.version(req.model_id, req.version)
        name = req.deployment_name or deployment_name_for(req.model_id)
        existing = self._deployments.find(name)
        if existing is not None:
            return self._redeploy(existing, req, version.version)
        record = DeploymentRecord(
            name=name,
            model_id=req.model_id,
            model_version=version.version,
            config=req.config,
            description=req.description,
        )
        task = self._tasks.new(
            TaskKind.DEPLOY,
            model_id=req.model_id,
            deployment_name=name,
            detail={"model_version": version.version, "wait_for": req.wait_for},
        )
        self._state.save(record, task)
        return task

    def _redeploy(self, existing: DeploymentRecord, req: DeployRequest, version: int) -> Task:
        same = (
            existing.model_id == req.model_id
            and existing.model_version == version
            and existing.config == req.config
            and existing.status in RUNNING_STATES
        )
        if same:
            # Deploying what is already there is a no-op: answer with the task that made it.
            for task in reversed(list(self._tasks.all())):
                if task.kind == TaskKind.DEPLOY.value and task.deployment_name == existing.name:
                    return task
            return self._tasks.latest(TaskKind.DEPLOY.value, req.model_id)
        if existing.status not in ("FAILED", "STOPPED"):
            raise errors.Conflict(
                f"deployment '{existing.name}' already serves {existing.model_id} "
                f"v{existing.model_version} ({existing.status}); delete it first or pick "
                "another deployment_name"
            )
        if existing.model_id != req.model_id:
            raise errors.Conflict(
                f"deployment '{existing.name}' belongs to model '{existing.model_id}'; "
                "delete it first or pick another deployment_name"
            )
        record = self._deployments.changed(
            existing.name,
            model_version=version,
            config=req.config,
            status=DeploymentStatus.PENDING,
            error=None,
        )
        task = self._tasks.new(
            TaskKind.DEPLOY,
            model_id=req.model_id,
            deployment_name=existing.name,
            detail={"model_version": version, "wait_for": req.wait_for},
        )
        self._state.save(record, task)
        return task

    def create_delete(self, req: DeleteRequest) -> Task:
        if req.deployment_name is not None:
            targets = [self._deployments.get(req.deployment_name)]
        else:
            self._models.model(req.model_id)
            targets = [d for d in self._deployments.all() if d.model_id == req.model_id]
            if not targets:
                raise errors.NotFound(f"model '{req.model_id}' has no deployments to delete")
        names = [t.name for t in targets]
        for open_task in self._tasks.unfinished():
            # Asking again (a retry after a crash, or a second click) while that delete is
            # still going answers with its task rather than a second one.
            if open_task.kind == TaskKind.DELETE.value and open_task.detail["deployments"] == names:
                return open_task
        task = self._tasks.new(
            TaskKind.DELETE,
            model_id=targets[0].model_id,
            deployment_name=targets[0].name if len(targets) == 1 else None,
            detail={"deployments": names, "reason": req.reason},
        )
        deleting = [
            self._deployments.changed(r.name, status=DeploymentStatus.DELETING) for r in targets
        ]
        self._state.save(*deleting, task)
        return task
