"""The registry's side of version swaps, stop and start, and what the ingress routes with.

Mixed into ``RegistryCore``: a swap is recorded as a ``RolloutState`` on the deployment and
a rollout task, stepped by the operator (``apply_rollout``); ``routing_snapshot`` is the
ingress's routing table, and ``ingress_view`` what the ingresses report back (their
routing generation and per-app counters, the rollout's health signal).
"""

from __future__ import annotations

import time
from typing import Any

from cluster import errors
from cluster.schemas import (
    DeploymentConfig,
    DeploymentEvent,
    DeploymentRecord,
    DeploymentStatus,
    RolloutOptions,
    RolloutState,
    Task,
    TaskKind,
    TaskStatus,
    app_name,
    utcnow,
)
from cluster.schemas.base import finite
from cluster.traffic_stats import merge


class RolloutTasks:
    _deployments: dict[str, DeploymentRecord]
    _events: dict[str, list[DeploymentEvent]]
    _ingress: dict[str, tuple[float, str | None, dict]]
    _generation: int

    @staticmethod
    def _event(name: str, type_: str, message: str, data: dict | None = None) -> DeploymentEvent:
        """A new event, not yet saved; measured numbers that are not finite are kept as null."""
        data = finite(data or {})
        return DeploymentEvent(deployment=name, type=type_, message=message, data=data)

    def add_event(self, name: str, type_: str, message: str, data: dict | None = None) -> None:
        self._state.save(self._event(name, type_, message, data))

    def list_events(self, name: str) -> list[DeploymentEvent]:
        if name not in self._deployments and name not in self._events:
            raise errors.NotFound(f"deployment '{name}' does not exist")
        return list(self._events.get(name, []))

    def start_rollout(
        self,
        name: str,
        version: int,
        options: RolloutOptions,
        config: DeploymentConfig | None = None,
        refusal: str | None = None,
    ) -> Task:
        """Begin a swap to ``version`` (and/or ``config``); ``refusal`` records a refused one."""
        record = self.get_deployment(name)
        target = self.get_version(record.model_id, version)
        if record.status != "ACTIVE" or record.rollout is not None:
            raise errors.Conflict(
                f"deployment '{name}' is {record.status}"
                + (" and already swapping versions" if record.rollout else "")
                + "; only an ACTIVE deployment without a swap in progress can swap"
            )
        config = config or record.config
        if version == record.model_version and config == record.config:
            raise errors.Conflict(f"deployment '{name}' already serves v{version}")
        links = {"model_id": record.model_id, "deployment_name": name}
        detail = {
            "from_version": record.model_version,
            "to_version": version,
            "strategy": options.strategy,
        }
        if refusal:
            task = self._task(
                TaskKind.ROLLOUT, **links, detail=detail, status=TaskStatus.REFUSED, error=refusal
            )
            event = self._event(name, "rollout_refused", refusal, {"to_version": version})
            self._state.save(task, event)
            return task
        task = self._task(TaskKind.ROLLOUT, **links, detail=detail)
        green = (
            record.serve_app if options.strategy == "in_place" else self._green_app(record, version)
        )
        rollout = RolloutState(
            task_id=task.id,
            from_version=record.model_version,
            to_version=target.version,
            blue_app=record.serve_app,
            green_app=green,
            config=config,
            options=options,
        )
        changed = self._changed(
            name, rollout=rollout, pending_model_version=version, status=DeploymentStatus.UPDATING
        )
        message = f"v{record.model_version} -> v{version} ({options.strategy})"
        self._state.save(task, changed, self._event(name, "rollout_started", message, detail))
        return task

    def _green_app(self, record: DeploymentRecord, version: int) -> str:
        seq = 0
        while app_name(record.name, version, seq) == record.serve_app:
            seq += 1
        return app_name(record.name, version, seq)

    def apply_rollout(
        self, name: str, task_id: str, fields: dict, task: dict | None, events: list
    ) -> None:
        """The operator's step of one rollout, applied only if it is still that rollout."""
        record = self._deployments.get(name)
        if record is None or record.rollout is None or record.rollout.task_id != task_id:
            return
        if "rollout" in fields and fields["rollout"] is None and record.status == "UPDATING":
            fields = {**fields, "status": DeploymentStatus.ACTIVE}
        docs: list = [self._changed(name, **fields)]
        updated = self._task_update(task_id, **task) if task else None
        if updated is not None:
            docs.append(updated)
        docs += [self._event(name, type_, message, data) for type_, message, data in events]
        self._state.save(*docs)

    def abort_rollout(self, name: str) -> Task:
        """Mid-swap rollback: all traffic back to blue at once; green drains, then goes."""
        record = self.get_deployment(name)
        r = record.rollout
        if r is None:
            raise errors.Conflict(f"deployment '{name}' has no swap in progress")
        if r.phase not in ("starting", "shifting") or r.options.strategy == "in_place":
            raise errors.Conflict(
                f"the swap of '{name}' is {r.phase}; roll back once it has finished"
            )
        from cluster.operator.rollout import abort

        out = abort(r, "rolled back by request", "canceled", utcnow())
        self.apply_rollout(name, r.task_id, out.record, out.task, out.events)
        return self.get_task(r.task_id)

    def stop_deployment(self, name: str) -> DeploymentRecord:
        record = self.get_deployment(name)
        if record.rollout is not None or record.status in ("DELETING", "STOPPED"):
            raise errors.Conflict(f"deployment '{name}' is {record.status}; it cannot stop now")
        changed = self._changed(name, status=DeploymentStatus.STOPPED, traffic={})
        self._state.save(self._event(name, "stopped", "every replica released"), changed)
        return changed

    def start_deployment(self, name: str) -> DeploymentRecord:
        record = self.get_deployment(name)
        if record.status not in ("STOPPED", "FAILED"):
            raise errors.Conflict(f"deployment '{name}' is {record.status}, not STOPPED")
        changed = self._changed(name, status=DeploymentStatus.PENDING, error=None)
        self._state.save(self._event(name, "started", "replicas requested again"), changed)
        return changed

    def remove_deployment(self, name: str) -> None:
        if name in self._deployments:
            self._state.save(removed=[name])

    def routing_snapshot(self, known: str | None = None) -> tuple[str, dict[str, dict] | None]:
        """What the ingress needs to route predictions; ``None`` when ``known`` is current."""
        generation = f"{self._boot}:{self._generation}"
        if generation == known:
            return generation, None
        table = {}
        for d in self._deployments.values():
            kind = self._models[d.model_id].kind if d.model_id in self._models else None
            table[d.name] = {
                "status": d.status,
                "kind": kind,
                "model_version": d.model_version,
                "request_timeout_s": d.config.request_timeout_s,
                "limits": d.config.ingress_limits(),
                "variants": d.variants(),
            }
        return generation, table

    @property
    def generation(self) -> int:
        return self._generation

    def report_ingress(self, ingress_id: str, generation: str | None, apps: dict) -> None:
        """An ingress replica's routing generation and cumulative per-app counters."""
        self._ingress[ingress_id] = (time.monotonic(), generation, apps)

    def ingress_view(self, max_age_s: float = 5.0) -> dict[str, Any]:
        """Live ingress reports merged: per-app counters, and whether every live ingress
        routes with the current generation (so a traffic change has taken effect)."""
        now = time.monotonic()
        live = [r for r in self._ingress.values() if now - r[0] <= max_age_s]
        current = f"{self._boot}:{self._generation}"
        per_app: dict[str, list[dict]] = {}
        for _, _, apps in live:
            for app, snap in apps.items():
                per_app.setdefault(app, []).append(snap)
        return {
            "generation": self._generation,
            "caught_up": all(r[1] == current for r in live),
            "apps": {app: merge(snaps) for app, snaps in per_app.items()},
        }
