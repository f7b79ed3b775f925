"""The registry's deployments and their events: read, change, stop, start, remove.

Every change is validated before it is saved (``changed``), so a bad field changes
nothing; a change and the event that tells of it are written in one transaction.
"""

from __future__ import annotations

from typing import Any

from cluster import errors
from cluster.registry.state import RegistryState
from cluster.schemas import (
    DeploymentEvent,
    DeploymentRecord,
    DeploymentStatus,
    DeploymentUpdate,
    utcnow,
)
from cluster.schemas.base import finite


def event(name: str, type_: str, message: str, data: dict | None = None) -> DeploymentEvent:
    """A new event, not yet saved; measured numbers that are not finite are kept as null."""
    data = finite(data or {})
    return DeploymentEvent(deployment=name, type=type_, message=message, data=data)


class DeploymentStore:
    def __init__(self, state: RegistryState) -> None:
        self._state = state
        # The state's own dicts, read here; only ``RegistryState.save`` changes them.
        self._deployments = state.deployments
        self._events = state.events

    # ------------------------------------------------------------ reads

    def get(self, name: str) -> DeploymentRecord:
        try:
            return self._deployments[name]
        except KeyError:
            raise errors.NotFound(f"deployment '{name}' does not exist") from None

    def find(self, name: str) -> DeploymentRecord | None:
        return self._deployments.get(name)

    def all(self) -> list[DeploymentRecord]:
        return list(self._deployments.values())

    # ------------------------------------------------------------ changes

    def changed(self, name: str, **fields: Any) -> DeploymentRecord:
        """The deployment with ``fields`` set, validated, not yet saved. Numbers the
        operator measured (an unbounded p99 in a rollout baseline) are kept as null."""
        record = self.get(name).model_copy(update=fields)
        changed = DeploymentRecord.model_validate(finite(record.model_dump()))
        changed.updated_at = utcnow()
        return changed

    def update(self, name: str, **fields: Any) -> DeploymentRecord:
        """Set fields the control plane owns (status, error, versions)."""
        record = self.changed(name, **fields)
        self._state.save(record)
        return record

    def observe(self, name: str, seen_status: str, **fields: Any) -> None:
        """The operator's status update, applied only if nobody changed the status since the
        operator read it (a delete or stop that raced the reconcile wins)."""
        record = self._deployments.get(name)
        if record is not None and record.status == seen_status:
            self.update(name, **fields)

    def patch(self, name: str, req: DeploymentUpdate) -> DeploymentRecord:
        """Metadata and in-place config changes; resource changes go through a rollout
        (the control plane decides which)."""
        fields = req.model_dump(exclude_none=True, exclude={"config", "rollout"})
        if req.config is not None:
            record = self.get(name)
            if req.config.resources != record.config.resources:
                raise errors.Conflict("a change of resources needs new replicas: roll it out")
            if record.rollout is not None:
                raise errors.Conflict(f"deployment '{name}' is swapping versions; wait for it")
            fields["config"] = req.config
        record = self.changed(name, **fields)
        changed = sorted(req.model_dump(exclude_none=True))
        self._state.save(record, event(name, "updated", f"changed {changed}"))
        return record

    def stop(self, name: str) -> DeploymentRecord:
        record = self.get(name)
        if record.rollout is not None or record.status in ("DELETING", "STOPPED"):
            raise errors.Conflict(f"deployment '{name}' is {record.status}; it cannot stop now")
        changed = self.changed(name, status=DeploymentStatus.STOPPED, traffic={})
        self._state.save(event(name, "stopped", "every replica released"), changed)
        return changed

    def start(self, name: str) -> DeploymentRecord:
        record = self.get(name)
        if record.status not in ("STOPPED", "FAILED"):
            raise errors.Conflict(f"deployment '{name}' is {record.status}, not STOPPED")
        changed = self.changed(name, status=DeploymentStatus.PENDING, error=None)
        self._state.save(event(name, "started", "replicas requested again"), changed)
        return changed

    def remove(self, name: str) -> None:
        if name in self._deployments:
            self._state.save(removed=[name])

    # ------------------------------------------------------------ events

    def add_event(self, name: str, type_: str, message: str, data: dict | None = None) -> None:
        self._state.save(event(name, type_, message, data))

    def events(self, name: str) -> list[DeploymentEvent]:
        if name not in self._deployments and name not in self._events:
            raise errors.NotFound(f"deployment '{name}' does not exist")
        return list(self._events.get(name, []))
