"""Reconcile planning: compare what the registry wants with what Serve runs, and decide.

``plan`` is pure (plain records in, a ``Plan`` out), so every decision the operator makes
is unit-tested without Ray; ``cluster.operator.actor`` applies the plan on each tick.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cluster.operator.serve_state import AppState
from cluster.schemas import RUNNING_STATES, Allocation, DeploymentConfig, DeploymentRecord, Task

# modelyard's app names (``cluster.schemas.deployments.app_name``): "<deployment>--v<version>",
# "-<seq>" after it when the same version runs in a second app.
APP_NAME_RE = re.compile(r"^(?P<deployment>[a-z0-9-]+)--v(?P<version>\d+)(-\d+)?$")
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
