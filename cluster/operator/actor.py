"""The operator: a detached actor that makes Serve match what the registry says should run.

Deploy and delete requests only write the desired state (a deployment record and a task);
the operator compares it with Serve's actual applications on every tick (the pure
``cluster.operator.reconcile.plan``) and acts on the difference, then steps rollouts
(``cluster.operator.rollout``) and the fine-tuning and batch jobs (``cluster.jobs``).
Because it reads both sides fresh each time, a restarted registry, operator, ingress or
whole cluster converges back without any replay log.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cluster.actor_gateway import registry_gateway
from cluster.operator.reconcile import Plan, plan, settled
from cluster.operator.serve_gateway import RayServeGateway, ServeGateway
from cluster.operator.serve_state import allocation
from cluster.schemas import utcnow

logger = logging.getLogger("modelyard.operator")

# Bound on each registry call of the reconcile loop; one past it fails that tick, and the
# next tick reads everything again.
REGISTRY_TIMEOUT_S = 30.0
# An operator with nothing in flight ticks this often instead (every change kicks it anyway):
# an idle cluster's control plane stays quiet, which matters on small nodes.
SETTLED_TICK_S = 2.0


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
