"""The operator: a reconciler that makes Serve match what the registry says should run.

Deploy and delete requests only write the desired state (a deployment record and a task);
the operator compares it with Serve's actual applications on every tick and acts on the
difference. Because it reads both sides fresh each time, a restarted registry, operator,
ingress or whole cluster converges back without any replay log.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cluster.operator.serve import AppState, RayServeGateway, allocation
from cluster.schemas import (
    RUNNING_STATES,
    Allocation,
    DeploymentConfig,
    DeploymentRecord,
    ModelVersion,
    Task,
    utcnow,
)

logger = logging.getLogger("modelyard.operator")

# Bound on each registry call of the reconcile loop; one past it fails that tick, and the
# next tick reads everything again.
REGISTRY_TIMEOUT_S = 30.0
APP_NAME_RE = re.compile(r"^(?P<deployment>[a-z0-9-]+)--v(?P<version>\d+)(-\d+)?$")


class ServeGateway(Protocol):
    def applications(self) -> dict[str, AppState]: ...
    def resources(self) -> tuple[dict[str, float], dict[str, float]]: ...
    def deploy(
        self, app_name: str, version: ModelVersion, config: DeploymentConfig, rolling: bool = False
    ) -> None: ...
    def delete(self, app_name: str) -> None: ...


# An operator with nothing in flight ticks this often instead (every change kicks it anyway):
# an idle cluster's control plane stays quiet, which matters on small nodes.
SETTLED_TICK_S = 2.0
# Tasks whose progress comes from their own Ray Job, not from the operator's reaction time.
JOB_TASK_KINDS = ("batch_prediction", "fine_tuning")


@dataclass
class Plan:
    """What one reconcile tick decided: registry updates and Serve actions."""

    deploy: list[DeploymentRecord] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: dict[str, DeploymentConfig] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)  # own apps gone from Serve, unwanted


def settled(deployments: list[DeploymentRecord], tasks: list[Task], p: Plan) -> bool:
    """Nothing the operator must react to quickly: every deployment at rest, no deploy or
    delete task open, no task waiting to start, and this tick changed nothing."""
    return (
        all(d.status in ("ACTIVE", "STOPPED", "FAILED") for d in deployments)
        and all(t.kind in JOB_TASK_KINDS and t.status != "pending" for t in tasks if not t.final)
        and not (p.deploy or p.delete or p.status or p.removed or p.tasks)
    )


def desired_status(record: DeploymentRecord, alloc: Allocation, app: AppState | None) -> dict:
    """The deployment status that Serve's actual state implies."""
    if app is None or app.status == "DELETING":
        return {"status": "DEPLOYING"}
    if alloc.allocation_state == "failed":
        return {"status": "FAILED", "error": alloc.reason or "the Serve app failed to deploy"}
    if alloc.allocation_state == "fully_allocated" and app.status == "RUNNING":
        return {"status": "ACTIVE", "error": None}
    if record.status == "ACTIVE" and alloc.running_replicas > 0:
        return {"status": "ACTIVE", "error": None}
    if record.status == "ACTIVE" and app.status == "RUNNING" and _scales_to_zero(record):
        # Waking from zero: the first requests wait in Serve's queue for the replica.
        return {"status": "ACTIVE", "error": None}
    return {"status": "DEPLOYING", "error": alloc.reason}


def _scales_to_zero(record: DeploymentRecord) -> bool:
    return record.config.autoscaling is not None and record.config.autoscaling.min_replicas == 0


def plan(
    deployments: list[DeploymentRecord],
    open_tasks: list[Task],
    apps: dict[str, AppState],
    allocations: dict[str, Allocation],
    *,
    owned: Collection[str] = (),
    now: datetime | None = None,
    deploy_timeout_s: float | None = None,
) -> Plan:
    """Pure decision logic: compare desired with actual and say what to change.

    ``owned`` names the Serve apps modelyard created (the registry's record): only those
    are ever deleted, so a Serve app someone else runs on a shared cluster is left alone
    even when its name looks like one of modelyard's.
    """
    out = Plan()
    owned = set(owned)
    wanted_apps = set()
    by_name = {d.name: d for d in deployments}
    for d in deployments:
        app = apps.get(d.serve_app)
        if d.status in RUNNING_STATES:
            wanted_apps.update(d.live_apps)
            _plan_running(d, app, allocations, owned, out)
        elif d.status == "DELETING":
            present = [a for a in d.live_apps if a in apps and a in owned]
            if not present:
                out.removed.append(d.name)
            out.delete += [a for a in present if apps[a].status != "DELETING"]
    # Apps of versions no deployment serves any more (a delete that raced a restart, a
    # stopped or failed deployment's app): modelyard's own only.
    for name, app in apps.items():
        if name in owned and name not in wanted_apps and name not in out.delete:
            m = APP_NAME_RE.match(name)
            owner = by_name.get(m["deployment"]) if m else None
            if app.status != "DELETING" and (owner is None or owner.status != "DELETING"):
                out.delete.append(name)
    out.forget = sorted(owned - wanted_apps - set(apps))
    for task in open_tasks:
        update = _task_update(task, by_name, out, allocations, now, deploy_timeout_s)
        if update:
            out.tasks[task.id] = update
    return out


def _plan_running(
    d: DeploymentRecord,
    app: AppState | None,
    allocations: dict[str, Allocation],
    owned: set[str],
    out: Plan,
) -> None:
    if app is not None and d.serve_app not in owned and d.status in ("PENDING", "DEPLOYING"):
        # Deploying would replace someone else's app of that name; never touch it.
        out.status[d.name] = {
            "status": "FAILED",
            "error": f"a Serve app named '{d.serve_app}' that modelyard did not create runs "
            "on this cluster; delete this deployment and pick another deployment_name",
        }
        return
    if app is None:
        out.deploy.append(d)
    elif d.rollout is None and d.applied_config is not None and d.config != d.applied_config:
        out.deploy.append(d)  # an in-place config change (replicas, limits, batching)
    if d.rollout is not None:
        return  # status stays UPDATING; the rollout's own step decides the rest
    new = desired_status(d, allocations[d.serve_app], app)
    if new["status"] != d.status or new.get("error") != d.error:
        out.status[d.name] = new


def _task_update(
    task: Task,
    by_name: dict[str, DeploymentRecord],
    out: Plan,
    allocations: dict[str, Allocation],
    now: datetime | None = None,
    deploy_timeout_s: float | None = None,
) -> dict[str, Any] | None:
    if task.kind == "deploy":
        return _deploy_task_update(task, by_name, out, allocations, now, deploy_timeout_s)
    if task.kind == "delete":
        names = task.detail.get("deployments", [])
        left = [n for n in names if n in by_name and n not in out.removed]
        if not left:
            return {"status": "done"}
        if task.status == "pending":
            return {"status": "processing"}
    return None


def _deploy_task_update(
    task: Task,
    by_name: dict[str, DeploymentRecord],
    out: Plan,
    allocations: dict[str, Allocation],
    now: datetime | None,
    deploy_timeout_s: float | None,
) -> dict[str, Any] | None:
    record = by_name.get(task.deployment_name or "")
    if record is None or record.status == "DELETING":
        return {"status": "canceled", "error": "the deployment was deleted"}
    status = out.status.get(record.name, {}).get("status", record.status)
    alloc = allocations.get(record.serve_app)
    detail = {"allocation_state": alloc.allocation_state if alloc else None}
    if status == "ACTIVE":
        return {"status": "done", "detail": detail}
    if status == "FAILED":
        error = out.status.get(record.name, {}).get("error") or record.error
        return {"status": "failed", "error": error, "detail": detail}
    detail["reason"] = alloc.reason if alloc else None
    if now is not None and deploy_timeout_s is not None and status in ("PENDING", "DEPLOYING"):
        waited = (now - task.created_at).total_seconds()
        if waited >= deploy_timeout_s:
            error = timeout_reason(alloc, deploy_timeout_s)
            out.status[record.name] = {"status": "FAILED", "error": error}
            return {"status": "failed", "error": error, "detail": detail}
    if task.status == "pending" or any(task.detail.get(k) != v for k, v in detail.items()):
        return {"status": "processing", "detail": detail}
    return None


def timeout_reason(alloc: Allocation | None, timeout_s: float) -> str:
    """Why a deploy ended failed after waiting: what could not be placed or started."""
    running = alloc.running_replicas if alloc else 0
    target = alloc.target_replicas if alloc else 0
    why = (alloc.reason if alloc else None) or "replicas were placed but did not become healthy"
    return (
        f"not ready within {timeout_s:g}s (MODELYARD_DEPLOY_TIMEOUT_S): {running} of {target} "
        f"replicas running; {why}"
    )


class Operator:
    """Runs ``plan`` against the registry and Serve in a loop (as a detached actor)."""

    def __init__(
        self,
        registry: Any,
        gateway: ServeGateway | None = None,
        tick_s: float = 0.5,
        finetune: Any = None,
        batch: Any = None,
        deploy_timeout_s: float | None = None,
    ):
        from cluster.ingress.routing import registry_gateway

        # Bounded calls that find a registry killed for good and created again by name.
        self._registry = registry_gateway(registry, REGISTRY_TIMEOUT_S)
        for runner in (finetune, batch):
            if runner is not None:
                # The runners call the registry too: through the same gateway, they use the
                # registry it finds again under its name.
                runner._registry = self._registry
        self._deploy_timeout_s = deploy_timeout_s
        self._finetune = finetune
        self._batch = batch
        self._gateway = gateway or RayServeGateway()
        self._tick_s = tick_s
        self._settled = False  # nothing in flight: tick every SETTLED_TICK_S instead
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def ping(self) -> bool:
        return True

    def cancel_finetune(self, task_id: str):
        """Stop a fine-tuning task's Ray Job (its Train actors go with it) and mark it."""
        return self._finetune.cancel(task_id)

    def cancel_batch(self, task_id: str):
        """Mark a batch-prediction task canceled and stop its Ray Job."""
        return self._batch.cancel(task_id)

    def finetune_logs(self, task_id: str) -> str:
        task = self._registry.call_sync("get_task", task_id, "fine_tuning")
        job_id = task.detail.get("job_id")
        return self._finetune.jobs().get_job_logs(job_id) if job_id else ""

    def kick(self) -> None:
        """Reconcile now instead of at the next tick."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop:
            try:
                self.reconcile_once()
            except Exception:  # keep reconciling; the next tick re-reads everything
                logger.exception("reconcile failed")
                self._settled = False
            self._wake.wait(max(self._tick_s, SETTLED_TICK_S) if self._settled else self._tick_s)
            self._wake.clear()

    def reconcile_once(self) -> Plan:
        with self._lock:
            deployments, tasks = self._registry.call_sync("reconcile_view")
            owned = set(self._registry.call_sync("owned_serve_apps"))
            apps = self._gateway.applications()
            total, free = self._gateway.resources()
            allocations = {
                d.serve_app: allocation(apps.get(d.serve_app), total, free) for d in deployments
            }
            p = plan(
                deployments,
                tasks,
                apps,
                allocations,
                owned=owned,
                now=utcnow(),
                deploy_timeout_s=self._deploy_timeout_s,
            )
            self._apply(p, {d.name: d.status for d in deployments})
            if self._finetune is not None:
                self._finetune.tick([t for t in tasks if t.kind == "fine_tuning"])
            if self._batch is not None:
                self._batch.tick([t for t in tasks if t.kind == "batch_prediction"])
            rolling = [d for d in deployments if d.rollout is not None and d.status == "UPDATING"]
            self._settled = settled(deployments, tasks, p) and not rolling
            if rolling:
                view = self._registry.call_sync("ingress_view")
                for d in rolling:
                    green = apps.get(d.rollout.green_app)
                    alloc = allocation(green, total, free)
                    self._step_rollout(d, green, alloc, view, d.rollout.green_app in owned)
            return p

    def _step_rollout(self, record, green, green_alloc, view, green_owned: bool = True) -> None:
        from cluster.operator.rollout import step

        r = record.rollout
        out = step(record, green, green_alloc, view, utcnow(), green_owned=green_owned)
        if out.deploy:
            version = r.from_version if out.deploy == "blue_in_place" else r.to_version
            spec = self._registry.call_sync("get_version", record.model_id, version)
            config = record.config if out.deploy == "blue_in_place" else r.config
            rolling = out.deploy != "green"
            try:
                self._own(r.green_app, record.name)
                self._gateway.deploy(r.green_app, spec, config, rolling=rolling)
            except Exception as exc:
                logger.exception("deploy of %s failed", r.green_app)
                out.task = {"status": "failed", "error": f"deploy failed: {exc}"}
                out.record = {"rollout": None, "pending_model_version": None, "traffic": {}}
        for app in out.delete:
            self._gateway.delete(app)
        self._registry.call_sync(
            "apply_rollout", record.name, r.task_id, out.record, out.task, out.events
        )

    def _apply(self, p: Plan, seen: dict[str, str]) -> None:
        reg = self._registry
        for record in p.deploy:
            try:
                version = reg.call_sync("get_version", record.model_id, record.model_version)
                self._own(record.serve_app, record.name)
                self._gateway.deploy(record.serve_app, version, record.config)
                p.applied[record.name] = record.config
            except Exception as exc:  # a bad artifact or config: record it, do not retry
                logger.exception("deploy of %s failed", record.name)
                p.status[record.name] = {"status": "FAILED", "error": f"deploy failed: {exc}"}
        for app_name in p.delete:
            self._gateway.delete(app_name)
        for name, config in p.applied.items():
            p.status.setdefault(name, {})["applied_config"] = config
        for name, fields in p.status.items():
            reg.call_sync("observe_deployment", name, seen[name], **fields)
        for name in p.removed:
            reg.call_sync("remove_deployment", name)
        for task_id, fields in p.tasks.items():
            reg.call_sync("update_task", task_id, **fields)
        if p.forget:
            reg.call_sync("forget_serve_apps", p.forget)

    def _own(self, app_name: str, deployment: str) -> None:
        """Record an app as modelyard's before Serve hears of it, so a crash between the
        two can leave only a record without an app (forgotten later), never an app that
        nothing would clean up."""
        self._registry.call_sync("record_serve_app", app_name, deployment)


def get_or_create_operator(
    head_node_id: str | None = None,
    storage_root: str = "",
    dashboard_url: str | None = None,
    deploy_timeout_s: float | None = None,
):
    import ray

    from cluster.actors import control_actor_options
    from cluster.jobs.batch_runner import BatchRunner
    from cluster.jobs.finetune_runner import FineTuneRunner
    from cluster.registry.actor import registry_handle
    from cluster.settings import OPERATOR_ACTOR, Settings

    if deploy_timeout_s is None:  # every deploy is bounded, however the operator is made
        deploy_timeout_s = Settings.model_fields["deploy_timeout_s"].default
    options = control_actor_options(OPERATOR_ACTOR, head_node_id, max_concurrency=4)
    registry = registry_handle()
    finetune = FineTuneRunner(registry, storage_root, dashboard_url) if storage_root else None
    batch = BatchRunner(registry, dashboard_url)
    actor = (
        ray.remote(Operator)
        .options(**options)
        .remote(registry, None, 0.5, finetune, batch, deploy_timeout_s)
    )
    ray.get(actor.ping.remote(), timeout=60)
    return actor
