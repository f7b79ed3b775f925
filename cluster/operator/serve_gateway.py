"""The calls that change Serve: build, deploy and delete a model version's app.

``ServeGateway`` is what the operator needs from Serve; ``RayServeGateway`` is the real one,
and unit tests pass a fake. Reading Serve's state is ``cluster.operator.serve_state``.
"""

from __future__ import annotations

from typing import Any, Protocol

from cluster.operator.capacity import surge_percent
from cluster.operator.serve_state import SERVER_DEPLOYMENT, AppState, applications, resources
from cluster.schemas import DeploymentConfig, ModelVersion

# No per-request access log lines on the hot path; /metrics counts requests instead.
QUIET = {"enable_access_log": False}


class ServeGateway(Protocol):
    def applications(self) -> dict[str, AppState]: ...
    def resources(self) -> tuple[dict[str, float], dict[str, float]]: ...
    def deploy(
        self, app_name: str, version: ModelVersion, config: DeploymentConfig, rolling: bool = False
    ) -> None: ...
    def delete(self, app_name: str) -> None: ...


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
        _, free = resources()
        options["max_surge_percent"] = surge_percent(config, free)
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
    proxy and the ingress: spinning torch threads burn the CPU those need. On a 2-core node
    it is worth about 10% more requests/s (``bench/serve_bench.py --omp-wait-policy``).
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


def delete_app(app_name: str) -> None:
    """Ask Serve to delete an app without waiting for its replicas to stop."""
    from ray import serve

    serve.delete(app_name, _blocking=False)


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
