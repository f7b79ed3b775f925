"""How modelyard reads Serve's and Ray's state: apps, allocation views, cluster resources.

The few reads of Serve's controller and of Ray's resources live here; what they return is
turned into plain data (``AppState``, ``Allocation``, ``ClusterPublic``) so the rest of the
control plane can be tested without Ray. Changing Serve is ``cluster.operator.serve_gateway``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cluster.operator.capacity import pending_reason
from cluster.schemas import Allocation, ClusterPublic, NodePublic, ReplicaView

# The deployment's name inside every model version's app (``serve_apps.model_server``).
SERVER_DEPLOYMENT = "ModelServer"

# Serve's replica states -> the allocation view's routing_state.
_ROUTING_STATE = {
    "STARTING": "starting",
    "UPDATING": "starting",
    "RECOVERING": "starting",
    "PENDING_MIGRATION": "started",
    "RUNNING": "started",
    "STOPPING": "stopping",
    "STOPPED": "stopping",
}


@dataclass
class AppState:
    """One Serve application as modelyard reads it."""

    name: str
    status: str  # NOT_STARTED | DEPLOYING | DEPLOY_FAILED | RUNNING | UNHEALTHY | DELETING
    message: str = ""
    target_replicas: int = 0
    required_resources: dict[str, float] = field(default_factory=dict)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    deployment_message: str = ""
    last_deployed: float | None = None


def _client():
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False)


def _text(value: Any) -> str:
    """Serve's details hold str enums; ``str()`` of those is 'Class.MEMBER' on Python 3.11."""
    return str(getattr(value, "value", value))


def parse_details(details: dict[str, Any]) -> dict[str, AppState]:
    """Serve's instance details -> {app name: AppState}."""
    apps = {}
    for name, app in (details.get("applications") or {}).items():
        state = AppState(
            name=name,
            status=_text(app.get("status")),
            message=app.get("message") or "",
            last_deployed=app.get("last_deployed_time_s"),
        )
        dep = (app.get("deployments") or {}).get(SERVER_DEPLOYMENT)
        if dep is not None:
            state.target_replicas = int(dep.get("target_num_replicas") or 0)
            state.required_resources = dict(dep.get("required_resources") or {})
            state.replicas = list(dep.get("replicas") or [])
            state.deployment_message = dep.get("message") or ""
        apps[name] = state
    return apps


def applications() -> dict[str, AppState]:
    """Every Serve app, read from the controller (blocking; for actors and drivers)."""
    import ray

    client = _client()
    if client is None:
        return {}
    return parse_details(ray.get(client._controller.get_serve_instance_details.remote()))


async def applications_async() -> dict[str, AppState]:
    """Same as ``applications``, for code running on an event loop (the ingress)."""
    client = _client()
    if client is None:
        return {}
    return parse_details(await client._controller.get_serve_instance_details.remote())


def allocation(app: AppState | None, total: dict[str, float], free: dict[str, float]) -> Allocation:
    """The Elasticsearch-style allocation view of one app."""
    if app is None:
        return Allocation(allocation_state="stopped")
    table: dict[str, ReplicaView] = {}
    running = 0
    for replica in app.replicas:
        state = _ROUTING_STATE.get(_text(replica.get("state")), "starting")
        reason = None
        if state == "starting" and not replica.get("node_id"):
            reason = pending_reason(app.required_resources, total, free)
        if state == "started":
            running += 1
        table[replica["replica_id"]] = ReplicaView(
            node_id=replica.get("node_id"), routing_state=state, reason=reason
        )
    alloc_state = _allocation_state(app, running)
    reasons = [r.reason for r in table.values() if r.reason]
    if not reasons and alloc_state in ("starting", "started"):
        # Replicas Serve has not listed yet still need what the cluster may not have at all.
        reasons = [r for r in [pending_reason(app.required_resources, total, total)] if r]
    start = (
        datetime.fromtimestamp(app.last_deployed, tz=timezone.utc) if app.last_deployed else None
    )
    return Allocation(
        allocation_state=alloc_state,
        target_replicas=app.target_replicas,
        running_replicas=running,
        routing_table=table,
        start_time=start,
        reason=failure_reason(app)
        if alloc_state == "failed"
        else (reasons[0] if reasons else None),
    )


def _allocation_state(app: AppState, running: int) -> str:
    if app.status == "DEPLOY_FAILED":
        return "failed"
    if running and running >= app.target_replicas:
        return "fully_allocated"
    if app.target_replicas == 0 and app.status == "RUNNING":
        # Scaled to zero (autoscaling.min_replicas 0): Serve reports the app RUNNING with
        # nothing to place, which is every replica it wants.
        return "fully_allocated"
    return "started" if running else "starting"


def failure_reason(app: AppState) -> str:
    """The error that failed an app, last line first (the exception), then the context.

    Serve's app message only says that a deployment failed; the deployment's message holds
    the replica constructor's traceback, whose last line names the actual error.
    """
    detail = app.deployment_message or app.message or "the Serve app failed to deploy"
    lines = [ln.strip() for ln in detail.strip().splitlines() if ln.strip()]
    if len(lines) > 1:
        return f"{lines[-1]} ({lines[0][:300]})"
    return detail[:1000]


def cluster_view() -> ClusterPublic:
    """Ray's nodes and the cluster's GPUs and CPUs, total and free."""
    import ray

    nodes = []
    for node in ray.nodes():
        nodes.append(
            NodePublic(
                node_id=node["NodeID"],
                alive=bool(node["Alive"]),
                address=node.get("NodeManagerAddress"),
                resources_total={
                    k: v for k, v in node.get("Resources", {}).items() if not k.startswith("node:")
                },
            )
        )
    total, free = ray.cluster_resources(), ray.available_resources()
    return ClusterPublic(
        nodes=nodes,
        gpus_total=total.get("GPU", 0.0),
        gpus_free=free.get("GPU", 0.0),
        cpus_total=total.get("CPU", 0.0),
        cpus_free=free.get("CPU", 0.0),
    )


def resources() -> tuple[dict[str, float], dict[str, float]]:
    """The cluster's total and free resources, in Ray's names (blocking)."""
    import ray

    return ray.cluster_resources(), ray.available_resources()
