"""The registry: models, versions, deployments and tasks, written through to SQLite.

``RegistryCore`` is plain Python (unit-testable); ``get_or_create_registry`` runs it as a
detached, restartable, named actor. Every mutating method validates first and changes
nothing when it raises: a change of several documents is one SQLite transaction, applied
to memory after its commit (``RegistryState.save``). Methods Ray may run again after a
crash (the actor retries its calls) are idempotent where a retry could add something.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from cluster import errors
from cluster.registry.async_queue import AsyncLimits, AsyncQueue
from cluster.registry.batch import BatchTasks
from cluster.registry.finetune import FineTuneTasks
from cluster.registry.models import ModelVersions
from cluster.registry.rollouts import RolloutTasks
from cluster.registry.state import RegistryState, Retention
from cluster.registry.store import Store
from cluster.schemas import (
    FINAL_TASK_STATES,
    RUNNING_STATES,
    AsyncTask,
    AsyncTaskPublic,
    DeleteRequest,
    DeploymentRecord,
    DeploymentStatus,
    DeploymentUpdate,
    DeployRequest,
    Page,
    PredictRequest,
    Task,
    TaskKind,
    utcnow,
)
from cluster.schemas.base import finite
from cluster.schemas.nodes import QuarantinedRow


def deployment_name_for(model_id: str) -> str:
    """A valid deployment name from a model id: 'all-MiniLM-L6-v2' -> 'all-minilm-l6-v2'."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")
    return slug[:63].rstrip("-") or "model"


class RegistryCore(ModelVersions, RolloutTasks, FineTuneTasks, BatchTasks):
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
        # The state's own dicts, read directly by the mixins; only _state.save changes them.
        self._models = self._state.models
        self._versions = self._state.versions
        self._deployments = self._state.deployments
        self._tasks = self._state.tasks
        self._events = self._state.events
        # With the generation, a fresh boot id makes a restarted registry look changed to
        # every cached reader.
        self._boot = uuid.uuid4().hex[:8]
        # Ingress reports live in memory only: they are rebuilt within a second.
        self._ingress: dict[str, tuple[float, str | None, dict]] = {}

    def ping(self) -> str:
        return self._boot

    @property
    def _generation(self) -> int:
        return self._state.generation

    def close(self) -> None:
        self._store.close()

    def list_quarantine(self) -> list[QuarantinedRow]:
        """Rows set aside at start because they could not be read (kept as stored)."""
        return [QuarantinedRow.model_validate(row) for row in self._store.quarantined()]

    # ------------------------------------------------------------ deployments

    def get_deployment(self, name: str) -> DeploymentRecord:
        try:
            return self._deployments[name]
        except KeyError:
            raise errors.NotFound(f"deployment '{name}' does not exist") from None

    def list_deployments(self) -> list[DeploymentRecord]:
        return list(self._deployments.values())

    def _changed(self, name: str, **fields: Any) -> DeploymentRecord:
        """The deployment with ``fields`` set, validated, not yet saved. Numbers the
        operator measured (an unbounded p99 in a rollout baseline) are kept as null."""
        record = self.get_deployment(name).model_copy(update=fields)
        changed = DeploymentRecord.model_validate(finite(record.model_dump()))
        changed.updated_at = utcnow()
        return changed

    def update_deployment(self, name: str, **fields: Any) -> DeploymentRecord:
        """Set fields the control plane owns (status, error, versions)."""
        record = self._changed(name, **fields)
        self._state.save(record)
        return record

    def observe_deployment(self, name: str, seen_status: str, **fields: Any) -> None:
        """The operator's status update, applied only if nobody changed the status since the
        operator read it (a delete or stop that raced the reconcile wins)."""
        record = self._deployments.get(name)
        if record is not None and record.status == seen_status:
            self.update_deployment(name, **fields)

    def reconcile_view(self) -> tuple[list[DeploymentRecord], list[Task]]:
        """Deployments and open tasks read together, so a task never shows up without the
        deployment it was created with."""
        return self.list_deployments(), self.open_tasks()

    def patch_deployment(self, name: str, req: DeploymentUpdate) -> DeploymentRecord:
        """Metadata and in-place config changes; resource changes go through
        ``start_rollout`` (the control plane decides which)."""
        fields = req.model_dump(exclude_none=True, exclude={"config", "rollout"})
        if req.config is not None:
            record = self.get_deployment(name)
            if req.config.resources != record.config.resources:
                raise errors.Conflict("a change of resources needs new replicas: roll it out")
            if record.rollout is not None:
                raise errors.Conflict(f"deployment '{name}' is swapping versions; wait for it")
            fields["config"] = req.config
        record = self._changed(name, **fields)
        changed = sorted(req.model_dump(exclude_none=True))
        self._state.save(record, self._event(name, "updated", f"changed {changed}"))
        return record

    # ------------------------------------------------------------ tasks

    @staticmethod
    def _task(kind: TaskKind, **fields: Any) -> Task:
        """A new task, not yet saved."""
        return Task(id=f"{kind.value}-{uuid.uuid4().hex[:16]}", kind=kind, **fields)

    def _new_task(self, kind: TaskKind, **fields: Any) -> Task:
        return self._put_task(self._task(kind, **fields))

    def _put_task(self, task: Task) -> Task:
        task.updated_at = utcnow()
        self._state.save(task)
        return task

    def _task_update(self, task_id: str, **fields: Any) -> Task | None:
        """The task with ``fields`` set (``detail`` merged), not yet saved; None once it has
        ended. Numbers from a job (a diverged loss) are kept as null."""
        task = self.get_task(task_id)
        if task.status in FINAL_TASK_STATES:
            return None
        detail = {**task.detail, **fields.pop("detail", {})}
        # The request was validated when the task was made and never changes; it may hold
        # 10,000 inline pairs, and progress reports come every few steps: not walked again.
        request = detail.pop("request", None)
        updated = Task.model_validate(finite({**dict(task), **fields, "detail": detail}))
        if request is not None:
            updated.detail["request"] = request
        updated.updated_at = utcnow()
        return updated

    def get_task(self, task_id: str, kind: str | None = None) -> Task:
        task = self._tasks.get(task_id)
        if task is None or (kind is not None and task.kind != kind):
            raise errors.NotFound(f"no {kind or ''} task with id '{task_id}'".replace("  ", " "))
        return task

    def update_task(self, task_id: str, **fields: Any) -> Task:
        updated = self._task_update(task_id, **fields)
        if updated is None:
            return self.get_task(task_id)
        self._state.save(updated)
        return updated

    def latest_task(self, kind: str, model_id: str) -> Task:
        for task in reversed(list(self._tasks.values())):
            if task.kind == kind and task.model_id == model_id:
                return task
        raise errors.NotFound(f"model '{model_id}' has no {kind} task")

    def list_tasks(
        self,
        kind: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page:
        """Tasks oldest first: a stable order, so paging never skips or repeats one."""
        matching = [
            t
            for t in self._tasks.values()
            if (kind is None or t.kind == kind) and (status is None or t.status == status)
        ]
        return Page(
            items=matching[offset : offset + limit], total=len(matching), offset=offset, limit=limit
        )

    def open_tasks(self) -> list[Task]:
        return [t for t in self._tasks.values() if t.status not in FINAL_TASK_STATES]

    # ------------------------------------------------------------ deploy / delete

    def create_deploy_task(self, req: DeployRequest) -> Task:
        version = self.get_version(req.model_id, req.version)
        name = req.deployment_name or deployment_name_for(req.model_id)
        existing = self._deployments.get(name)
        if existing is not None:
            return self._redeploy(existing, req, version.version)
        record = DeploymentRecord(
            name=name,
            model_id=req.model_id,
            model_version=version.version,
            config=req.config,
            description=req.description,
        )
        task = self._task(
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
            for task in reversed(list(self._tasks.values())):
                if task.kind == TaskKind.DEPLOY.value and task.deployment_name == existing.name:
                    return task
            return self.latest_task(TaskKind.DEPLOY.value, req.model_id)
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
        record = self._changed(
            existing.name,
            model_version=version,
            config=req.config,
            status=DeploymentStatus.PENDING,
            error=None,
        )
        task = self._task(
            TaskKind.DEPLOY,
            model_id=req.model_id,
            deployment_name=existing.name,
            detail={"model_version": version, "wait_for": req.wait_for},
        )
        self._state.save(record, task)
        return task

    def create_delete_task(self, req: DeleteRequest) -> Task:
        if req.deployment_name is not None:
            targets = [self.get_deployment(req.deployment_name)]
        else:
            self._model(req.model_id)
            targets = [d for d in self._deployments.values() if d.model_id == req.model_id]
            if not targets:
                raise errors.NotFound(f"model '{req.model_id}' has no deployments to delete")
        names = [t.name for t in targets]
        for open_task in self.open_tasks():
            # Asking again (a retry after a crash, or a second click) while that delete is
            # still going answers with its task rather than a second one.
            if open_task.kind == TaskKind.DELETE.value and open_task.detail["deployments"] == names:
                return open_task
        task = self._task(
            TaskKind.DELETE,
            model_id=targets[0].model_id,
            deployment_name=targets[0].name if len(targets) == 1 else None,
            detail={"deployments": names, "reason": req.reason},
        )
        deleting = [self._changed(r.name, status=DeploymentStatus.DELETING) for r in targets]
        self._state.save(*deleting, task)
        return task

    # ------------------------------------------------------------ async predictions

    def enqueue_async(self, name: str, req: PredictRequest) -> AsyncTask:
        """Safe to run twice (Ray re-runs it after a crash): a request with a request_id
        already queued for ``name`` answers its task."""
        self.get_deployment(name)
        return self._async.enqueue(name, req)

    def claim_async(self, limit: int, lease_s: float) -> list[AsyncTask]:
        """Claimable tasks, fairly across deployments. A deleted deployment's tasks end
        FAILURE here; a stopped or failed one's wait (until their TTL) unclaimed, so they
        hold no worker slot."""
        waiting, leases = [], {}
        for name in self._async.deployments():
            record = self._deployments.get(name)
            if record is None:
                self._async.fail_deployment(name, f"deployment '{name}' was deleted")
            elif record.status in ("STOPPED", "FAILED", "DELETING"):
                waiting.append(name)
            else:
                # A lease outlives the prediction (its timeout, and the one resend when its
                # replica dies), so a slow answer is not counted as a lost worker.
                leases[name] = max(lease_s, 2 * record.config.request_timeout_s + 10)
        return self._async.claim(limit, lease_s, skip=waiting, lease_for=leases)

    def release_async(
        self, task_id: str, error: str | None = None, deployment_unready: bool = False
    ) -> None:
        """Give a claimed task back. ``deployment_unready``: its deployment was not ready or
        full (the deployment is paused, the task's attempts are not spent); ``error``: the
        try failed and may succeed later (an attempt is counted, with back-off)."""
        if deployment_unready:
            self._async.defer(task_id)
        elif error is not None:
            self._async.retry(task_id, error)
        else:
            self._async.release(task_id)

    def complete_async(self, task_id: str, **fields: Any) -> None:
        self._async.complete(task_id, **fields)

    def get_async(self, task_id: str) -> AsyncTaskPublic:
        return AsyncTaskPublic.of(self._async.get(task_id))

    # ------------------------------------------------------------ Serve apps modelyard made
    # Only these are ever deleted (by the operator, by `modelyard down`), so a shared
    # cluster's other Serve apps are left alone whatever their names.

    def _serve_apps(self) -> dict[str, Any]:
        if getattr(self, "_own_apps", None) is None:
            from cluster.schemas.deployments import ServeApp

            self._own_apps = dict(self._store.load("serve_apps", ServeApp))
            if not self._own_apps:
                # A database from before apps were recorded: its deployments' apps are its own.
                for d in self._deployments.values():
                    for app in d.live_apps:
                        self.record_serve_app(app, d.name)
        return self._own_apps

    def owned_serve_apps(self) -> list[str]:
        return list(self._serve_apps())

    def record_serve_app(self, name: str, deployment: str) -> None:
        from cluster.schemas.deployments import ServeApp

        apps = self._serve_apps()
        if name not in apps:
            app = ServeApp(name=name, deployment=deployment)
            self._store.put("serve_apps", name, app)
            apps[name] = app

    def forget_serve_apps(self, names: list[str]) -> None:
        apps = self._serve_apps()
        for name in names:
            if name in apps:
                self._store.delete("serve_apps", name)
                del apps[name]

    # ------------------------------------------------------------ end of Serve apps


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
