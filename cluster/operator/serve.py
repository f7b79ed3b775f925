"""The few calls modelyard makes into Ray Serve and Ray core, and how it reads their state.

Everything that touches Serve's controller lives here, so the rest of the control plane
works on plain data (``AppState``) and can be tested without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cluster.schemas import (
    Allocation,
    ClusterPublic,
    DeploymentConfig,
    ModelVersion,
    NodePublic,
    ReplicaView,
)

SERVER_DEPLOYMENT = "ModelServer"
# No per-request access log lines on the hot path; /metrics counts requests instead.
QUIET = {"enable_access_log": False}

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


def build_app(version: ModelVersion, config: DeploymentConfig, rolling: bool = False):
    """The Serve application for one model version under one deployment config."""
    from serve_apps.model_server import ModelServer

    options: dict[str, Any] = {
        "name": SERVER_DEPLOYMENT,
        "ray_actor_options": replica_actor_options(config),
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "user_config": server_user_config(config),
        "health_check_period_s": 5,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": max(5.0, config.request_timeout_s),
        # A model that cannot load fails its deploy after a few tries, not twenty.
        "max_constructor_retry_count": 3,
    }
    if rolling:
        # In-place swaps: Serve replaces 20% of replicas at a time (at least one); with room
        # for one more replica it starts the new one before stopping an old one.
        options["max_surge_percent"] = surge_percent(config)
    if config.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": config.autoscaling.min_replicas,
            "max_replicas": config.autoscaling.max_replicas,
            "target_ongoing_requests": config.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = config.num_replicas or 1
    return ModelServer.options(**options).bind(version.model_dump(mode="json"))


def replica_actor_options(config: DeploymentConfig) -> dict[str, Any]:
    """The replica's resources, and its OpenMP wait policy as an environment variable.

    ``passive`` is the default because a replica shares its node's cores with the Serve
    proxy and the ingress: spinning torch threads burn the CPU those need. On the 2-core
    serve bench it is worth about 10% more requests/s (README, Benchmarks).
    """
    options = config.resources.as_ray_options()
    if config.omp_wait_policy != "default":
        env = {"OMP_WAIT_POLICY": config.omp_wait_policy.upper()}
        options["runtime_env"] = {"env_vars": env}
    return options


def server_user_config(config: DeploymentConfig) -> dict[str, Any]:
    """What a replica can change without a restart (``ModelServer.reconfigure``)."""
    return {
        "max_batch_size": config.max_batch_size,
        "batch_wait_timeout_s": config.batch_wait_timeout_ms / 1000.0,
    }


def deploy_app(
    app_name: str, version: ModelVersion, config: DeploymentConfig, rolling: bool = False
) -> None:
    """Submit (or update) a Serve app without waiting for its replicas."""
    from ray import serve

    app = build_app(version, config, rolling=rolling)
    serve._run(app, name=app_name, route_prefix=None, logging_config=QUIET, _blocking=False)


def shortage(need: dict[str, float], free: dict[str, float]) -> dict[str, float]:
    """Resources (Ray names) of which less is free than ``need``."""
    return {r: n for r, n in need.items() if n > 0 and free.get(r, 0.0) + 1e-9 < n}


def replica_demand(config: DeploymentConfig, replicas: int = 1) -> dict[str, float]:
    res = config.resources
    need = {"CPU": res.num_cpus * replicas, "GPU": res.num_gpus * replicas}
    if res.memory:
        need["memory"] = float(res.memory * replicas)
    return need


def surge_percent(config: DeploymentConfig) -> int:
    """Room for one extra replica now: surge by one replica; none: replace in place."""
    _, free = resources()
    if shortage(replica_demand(config), free):
        return 0
    return min(100, -(-100 // config.replicas_wanted))


def delete_app(app_name: str) -> None:
    from ray import serve

    serve.delete(app_name, _blocking=False)


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


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()) if v) or "nothing"


_CONFIG_FIELD = {"GPU": "num_gpus", "CPU": "num_cpus", "memory": "memory"}


def pending_reason(required: dict[str, float], total: dict[str, float], free: dict[str, float]):
    """Why a replica that needs ``required`` is not placed, in words a user can act on."""
    for res, need in sorted(required.items()):
        if need <= 0:
            continue
        have = total.get(res, 0.0)
        if have < need:
            return (
                f"insufficient {res}: each replica needs {res}={need:g} but the cluster has "
                f"{res}={have:g} in total; add nodes with {res} or lower "
                f"resources.{_CONFIG_FIELD.get(res, res)}"
            )
    short = {r: n for r, n in required.items() if n > 0 and free.get(r, 0.0) < n}
    if short:
        return (
            f"waiting for resources: each replica needs {_fmt(required)}, free now: "
            + ", ".join(f"{r}={free.get(r, 0.0):g}" for r in sorted(short))
        )
    return None


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
    if app.status == "DEPLOY_FAILED":
        alloc_state = "failed"
    elif running and running >= app.target_replicas:
        alloc_state = "fully_allocated"
    elif app.target_replicas == 0 and app.status == "RUNNING":
        # Scaled to zero (autoscaling.min_replicas 0): Serve reports the app RUNNING with
        # nothing to place, which is every replica it wants.
        alloc_state = "fully_allocated"
    elif running:
        alloc_state = "started"
    else:
        alloc_state = "starting"
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
    import ray

    return ray.cluster_resources(), ray.available_resources()


class RayServeGateway:
    """The operator's ``ServeGateway`` backed by the real Serve controller."""

    def applications(self) -> dict[str, AppState]:
        return applications()

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        return resources()

    def deploy(
        self, app_name: str, version: ModelVersion, config: DeploymentConfig, rolling: bool = False
    ) -> None:
        deploy_app(app_name, version, config, rolling=rolling)

    def delete(self, app_name: str) -> None:
        delete_app(app_name)
