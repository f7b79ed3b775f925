"""The registry's side of batch predictions: create, progress from the job, the end.

A task pins the model version its deployment serves when it is created (a swap during the
job does not change what the job predicts with) and the deployment's resources, which each
Ray Data actor of the job gets (with the request's ``num_cpus_per_copy`` in place of their
CPUs when it is given).
"""

from __future__ import annotations

from typing import Any

from cluster import errors
from cluster.registry.deployments import DeploymentStore
from cluster.registry.models import ModelStore
from cluster.registry.tasks import Expect, TaskStore
from cluster.schemas import BatchPredictCreate, BatchProgress, Page, Task, TaskKind, TaskStatus

KIND = TaskKind.BATCH_PREDICTION.value


class BatchTasks:
    def __init__(self, tasks: TaskStore, models: ModelStore, deployments: DeploymentStore) -> None:
        self._tasks = tasks
        self._models = models
        self._deployments = deployments

    def create(self, name: str, req: BatchPredictCreate) -> Task:
        record = self._deployments.get(name)
        if record.status == "DELETING":
            raise errors.Conflict(f"deployment '{name}' is being deleted")
        for task in self._tasks.all():
            same_output = task.detail.get("request", {}).get("output_uri") == req.output_uri
            if task.kind == KIND and not task.final and same_output:
                raise errors.Conflict(
                    f"batch prediction {task.id} is writing to {req.output_uri}; wait for it "
                    "or choose another output_uri"
                )
        version = self._models.version(record.model_id, record.model_version)
        resources = record.config.resources
        if req.num_cpus_per_copy is not None:
            resources = resources.model_copy(update={"num_cpus": req.num_cpus_per_copy})
        return self._tasks.create(
            TaskKind.BATCH_PREDICTION,
            model_id=record.model_id,
            deployment_name=name,
            detail={
                "request": req.model_dump(mode="json"),
                "model_version": version.version,
                "spec": version.model_dump(mode="json"),
                "resources": resources.model_dump(mode="json"),
                "progress": BatchProgress().model_dump(),
            },
        )

    def report_progress(self, task_id: str, progress: dict[str, Any]) -> bool:
        """The job's progress; ``False`` once the task has ended (canceled): the job stops."""
        try:
            task = self._tasks.update(
                task_id,
                Expect(kind=KIND),
                status=TaskStatus.PROCESSING,
                detail={"progress": progress},
            )
        except errors.NotFound:
            return False
        return not task.final

    def finish(self, task_id: str, progress: dict[str, Any]) -> Task:
        """The job wrote its output: the task is done, with the final counts."""
        return self._tasks.update(task_id, status=TaskStatus.DONE, detail={"progress": progress})

    def page(self, name: str, offset: int = 0, limit: int = 50) -> Page:
        """One deployment's batch predictions, oldest first."""
        page = self._tasks.page(KIND, None, offset, limit, deployment=name)
        if not page.total:
            self._deployments.get(name)
        return page
