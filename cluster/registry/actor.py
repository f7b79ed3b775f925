"""The registry actor: models, versions, deployments, tasks and the async queue, written
through to SQLite.

``RegistryCore`` is plain Python (unit-testable); ``get_or_create_registry`` runs it as a
detached, restartable, named actor. It composes one store per concept, each given what it
reads in its constructor, and below are the remote methods callers name
(``registry.call("get_deployment", ...)``), grouped by concept: the registry's whole API in
one place. Every mutating method validates first and changes nothing when it raises: a
change of several documents is one SQLite transaction, applied to memory after its commit
(``RegistryState.save``). Methods Ray may run again after a crash (the actor retries its
calls) are idempotent where a retry could add something. Every change of a task goes
through one guarded update (``TaskStore.update``, ``Expect``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cluster.registry.async_predictions import AsyncPredictions
from cluster.registry.async_queue import AsyncLimits, AsyncQueue
from cluster.registry.batch import BatchTasks
from cluster.registry.deploy_tasks import DeployTasks, deployment_name_for
from cluster.registry.deployments import DeploymentStore
from cluster.registry.finetune import FineTuneTasks
from cluster.registry.models import ModelStore
from cluster.registry.rollouts import RolloutStore
from cluster.registry.routing import RoutingTable
from cluster.registry.serve_apps import ServeApps
from cluster.registry.state import RegistryState, Retention
from cluster.registry.store import Store
from cluster.registry.tasks import OPEN, Expect, TaskStore
from cluster.schemas import (
    AsyncTask,
    AsyncTaskPublic,
    BatchPredictCreate,
    DeleteRequest,
    DeploymentConfig,
    DeploymentEvent,
    DeploymentRecord,
    DeploymentUpdate,
    DeployRequest,
    FineTuneCreate,
    ModelCreate,
    ModelPublic,
    ModelVersion,
    Page,
    PredictRequest,
    RolloutOptions,
    Task,
    VersionCreate,
)
from cluster.schemas.nodes import QuarantinedRow

__all__ = ["RegistryCore", "deployment_name_for", "get_or_create_registry", "registry_handle"]


class RegistryCore:
    def __init__(
        self,
        db_path: str | Path,
        result_ttl_s: float = 86400,
        async_limits: AsyncLimits | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._store = Store(Path(db_path))
        self._async = AsyncQueue(self._store, result_ttl_s, async_limits)
        self._state = RegistryState(self._store, retention)
        # Changes with every start, so a restarted registry looks changed to every reader.
        self._boot = uuid.uuid4().hex[:8]
        models = self._models = ModelStore(self._state)
        deployments = self._deployments = DeploymentStore(self._state)
        tasks = self._tasks = TaskStore(self._state)
        self._deploys = DeployTasks(self._state, models, deployments, tasks)
        self._rollouts = RolloutStore(self._state, models, deployments, tasks)
        self._routing = RoutingTable(self._state, models, deployments, self._boot)
        self._finetune = FineTuneTasks(tasks, models, deployments)
        self._batch = BatchTasks(tasks, models, deployments)
        self._predictions = AsyncPredictions(self._async, deployments)
        self._serve_apps = ServeApps(self._store, deployments)

    def ping(self) -> str:
        return self._boot

    def close(self) -> None:
        self._store.close()

    def list_quarantine(self) -> list[QuarantinedRow]:
        """Rows set aside at start because they could not be read (kept as stored)."""
        return [QuarantinedRow.model_validate(row) for row in self._store.quarantined()]

    # ------------------------------------------------------------ models

    def register_model(self, req: ModelCreate) -> ModelVersion:
        return self._models.register(req)

    def add_version(
        self, model_id: str, req: VersionCreate, source: str = "registered"
    ) -> ModelVersion:
        return self._models.add_version(model_id, req, source)

    def get_model(self, model_id: str) -> ModelPublic:
        return self._models.public(model_id)

    def list_models(self) -> list[ModelPublic]:
        return self._models.all()

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        return self._models.versions(model_id)

    def get_version(self, model_id: str, version: int | None = None) -> ModelVersion:
        return self._models.version(model_id, version)

    # ------------------------------------------------------------ deployments

    def get_deployment(self, name: str) -> DeploymentRecord:
        return self._deployments.get(name)

    def list_deployments(self) -> list[DeploymentRecord]:
        return self._deployments.all()

    def update_deployment(self, name: str, **fields: Any) -> DeploymentRecord:
        return self._deployments.update(name, **fields)

    def observe_deployment(self, name: str, seen_status: str, **fields: Any) -> None:
        self._deployments.observe(name, seen_status, **fields)

    def patch_deployment(self, name: str, req: DeploymentUpdate) -> DeploymentRecord:
        return self._deployments.patch(name, req)

    def stop_deployment(self, name: str) -> DeploymentRecord:
        return self._deployments.stop(name)

    def start_deployment(self, name: str) -> DeploymentRecord:
        return self._deployments.start(name)

    def remove_deployment(self, name: str) -> None:
        self._deployments.remove(name)

    def add_event(self, name: str, type_: str, message: str, data: dict | None = None) -> None:
        self._deployments.add_event(name, type_, message, data)

    def list_events(self, name: str) -> list[DeploymentEvent]:
        return self._deployments.events(name)

    def reconcile_view(self) -> tuple[list[DeploymentRecord], list[Task]]:
        """Deployments and open tasks read together, so a task never shows up without the
        deployment it was created with."""
        return self._deployments.all(), self._tasks.unfinished()

    # ------------------------------------------------------------ deploy, delete

    def create_deploy_task(self, req: DeployRequest) -> Task:
        return self._deploys.create_deploy(req)

    def create_delete_task(self, req: DeleteRequest) -> Task:
        return self._deploys.create_delete(req)

    # ------------------------------------------------------------ version swaps

    def start_rollout(
        self,
        name: str,
        version: int,
        options: RolloutOptions,
        config: DeploymentConfig | None = None,
        refusal: str | None = None,
    ) -> Task:
        return self._rollouts.start(name, version, options, config, refusal)

    def apply_rollout(
        self, name: str, task_id: str, fields: dict, task: dict | None, events: list
    ) -> None:
        self._rollouts.apply(name, task_id, fields, task, events)

    def abort_rollout(self, name: str) -> Task:
        return self._rollouts.abort(name)

    # ------------------------------------------------------------ routing, ingress reports

    def routing_snapshot(self, known: str | None = None) -> tuple[str, dict[str, dict] | None]:
        return self._routing.snapshot(known)

    def report_ingress(self, ingress_id: str, generation: str | None, apps: dict) -> None:
        self._routing.report(ingress_id, generation, apps)

    def ingress_view(self, max_age_s: float = 5.0) -> dict[str, Any]:
        return self._routing.ingress_view(max_age_s)

    # ------------------------------------------------------------ tasks

    def get_task(self, task_id: str, kind: str | None = None) -> Task:
        return self._tasks.get(task_id, kind)

    def update_task(self, task_id: str, expect: Expect = OPEN, **fields: Any) -> Task:
        """The one guarded update (``TaskStore.update``): ``fields`` are set only if the
        task is as ``expect`` says (by default: not finished); returns the task as it is."""
        return self._tasks.update(task_id, expect, **fields)

    def latest_task(self, kind: str, model_id: str) -> Task:
        return self._tasks.latest(kind, model_id)

    def list_tasks(
        self, kind: str | None = None, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> Page:
        return self._tasks.page(kind, status, offset, limit)

    def open_tasks(self) -> list[Task]:
        return self._tasks.unfinished()

    # ------------------------------------------------------------ fine-tuning

    def create_finetune_task(self, req: FineTuneCreate) -> Task:
        return self._finetune.create(req)

    def report_progress(self, task_id: str | None, payload: dict[str, Any]) -> None:
        self._finetune.report_progress(task_id, payload)

    def restart_finetune(self, task_id: str, from_scratch: bool) -> Task:
        return self._finetune.restart(task_id, from_scratch)

    # ------------------------------------------------------------ batch predictions

    def create_batch_task(self, name: str, req: BatchPredictCreate) -> Task:
        return self._batch.create(name, req)

    def report_batch_progress(self, task_id: str, progress: dict[str, Any]) -> bool:
        return self._batch.report_progress(task_id, progress)

    def finish_batch(self, task_id: str, progress: dict[str, Any]) -> Task:
        return self._batch.finish(task_id, progress)

    def list_batch_tasks(self, name: str, offset: int = 0, limit: int = 50) -> Page:
        return self._batch.page(name, offset, limit)

    # ------------------------------------------------------------ async predictions

    def enqueue_async(self, name: str, req: PredictRequest) -> AsyncTask:
        return self._predictions.enqueue(name, req)

    def claim_async(self, limit: int, lease_s: float) -> list[AsyncTask]:
        return self._predictions.claim(limit, lease_s)

    def release_async(
        self, task_id: str, error: str | None = None, deployment_unready: bool = False
    ) -> None:
        self._predictions.release(task_id, error, deployment_unready)

    def complete_async(self, task_id: str, **fields: Any) -> None:
        self._predictions.complete(task_id, **fields)

    def get_async(self, task_id: str) -> AsyncTaskPublic:
        return self._predictions.get(task_id)

    # ------------------------------------------------------------ Serve apps modelyard made

    def owned_serve_apps(self) -> list[str]:
        return self._serve_apps.owned()

    def record_serve_app(self, name: str, deployment: str) -> None:
        self._serve_apps.record(name, deployment)

    def forget_serve_apps(self, names: list[str]) -> None:
        self._serve_apps.forget(names)


def get_or_create_registry(
    db_path: str | Path,
    head_node_id: str | None = None,
    result_ttl_s: float = 86400,
    async_limits: AsyncLimits | None = None,
    settings: Any = None,
):
    """The detached registry actor, created once per cluster; safe to call concurrently.
    ``settings`` (a ``Settings``) gives the retention of finished tasks and events."""
    import ray

    from cluster.actors import control_actor_options
    from cluster.settings import REGISTRY_ACTOR

    options = control_actor_options(REGISTRY_ACTOR, head_node_id)
    retention = Retention.from_settings(settings) if settings is not None else None
    actor = (
        ray.remote(RegistryCore)
        .options(**options)
        .remote(str(db_path), result_ttl_s, async_limits, retention)
    )
    try:
        ray.get(actor.ping.remote(), timeout=60)
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"the registry did not start: {startup_error(exc)}") from None
    return actor


def startup_error(exc: BaseException) -> str:
    """The line of a dead registry's error that says why (e.g. its database is in use by
    another control plane), without Ray's traceback around it."""
    text = str(exc)
    for line in text.splitlines():
        if "StoreLocked" in line or "in use by another modelyard control plane" in line:
            return line.split("StoreLocked: ", 1)[-1].strip()
    return text


def registry_handle():
    import ray

    from cluster.settings import NAMESPACE, REGISTRY_ACTOR

    return ray.get_actor(REGISTRY_ACTOR, namespace=NAMESPACE)
