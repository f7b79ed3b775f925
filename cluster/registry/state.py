"""The registry's documents in memory and on disk, changed together.

``RegistryState`` holds what the registry serves (models, versions, deployments, tasks,
events) and the ``Store`` it is written through to. ``save`` writes a change of any number
of documents in one SQLite transaction and applies it to memory only after the commit, so a
write that fails leaves both as they were. Finished tasks and events are purged by
``Retention`` at start and every ``purge_every_s`` on a write. A fine-tuning task's inline
dataset (``detail.request.dataset.pairs``) is stored once, in ``datasets``, and the task's
row refers to it, so progress reports do not rewrite it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from cluster.registry.store import Store
from cluster.schemas import (
    DeploymentEvent,
    DeploymentRecord,
    ModelCreate,
    ModelVersion,
    Task,
    utcnow,
)

DATASETS = "datasets"
PAIRS_REF = "pairs_ref"  # in a stored task: the id of its row in DATASETS


@dataclass(frozen=True)
class Retention:
    """How long finished tasks and deployment events are kept (time and count)."""

    task_days: float = 30.0
    max_finished_tasks: int = 10_000
    event_days: float = 30.0
    events_per_deployment: int = 1_000
    purge_every_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(
            task_days=settings.task_retention_days,
            max_finished_tasks=settings.max_finished_tasks,
            event_days=settings.event_retention_days,
            events_per_deployment=settings.events_per_deployment,
        )


class RegistryState:
    def __init__(self, store: Store, retention: Retention | None = None) -> None:
        self.store = store
        self.retention = retention or Retention()
        self.models: dict[str, ModelCreate] = {}
        self.versions: dict[str, list[ModelVersion]] = {}
        self.deployments: dict[str, DeploymentRecord] = {}
        self.tasks: dict[str, Task] = {}
        self.events: dict[str, list[DeploymentEvent]] = {}
        self._event_keys: dict[str, list[str]] = {}
        # Per model, the highest version number set aside: numbers are never given twice.
        self.versions_set_aside: dict[str, int] = {}
        # Changes whenever routing-relevant state changes (see RoutingTable.snapshot).
        self.generation = 0
        self._load()
        self.purge()

    # ------------------------------------------------------------ writes

    def save(self, *docs: BaseModel, removed: Iterable[str] = ()) -> None:
        """Write ``docs`` (and delete the deployments ``removed``) in one transaction, then
        apply them to memory."""
        removed = list(removed)
        rows = [_row(doc) for doc in docs]
        with self.store.transaction():
            for table, key, doc in rows:
                self._write(table, key, doc)
            for name in removed:
                self.store.delete("deployments", name)
        for table, key, doc in rows:
            self._remember(table, key, doc)
        for name in removed:
            if self.deployments.pop(name, None) is not None:
                self.generation += 1
        if time.monotonic() - self._purged_at >= self.retention.purge_every_s:
            self.purge()

    def _write(self, table: str, key: str, doc: BaseModel) -> None:
        if isinstance(doc, Task):
            pairs = _inline_pairs(doc)
            if pairs is not None:
                if key not in self._datasets:
                    self.store.put(DATASETS, key, _json(pairs))
                doc = _without_pairs(doc, key)
        self.store.put(table, key, doc)

    def _remember(self, table: str, key: str, doc: Any) -> None:
        if table == "models":
            self.models[key] = doc
        elif table == "versions":
            self.versions.setdefault(doc.model_id, []).append(doc)
        elif table == "deployments":
            self.deployments[key] = doc
            self.generation += 1
        elif table == "tasks":
            self.tasks[key] = doc
            if _inline_pairs(doc) is not None:
                self._datasets.add(key)
        else:
            self.events.setdefault(doc.deployment, []).append(doc)
            self._event_keys.setdefault(doc.deployment, []).append(key)

    # ------------------------------------------------------------ retention

    def purge(self, now: datetime | None = None) -> int:
        """Drop finished tasks and events past their retention; returns how many went."""
        self._purged_at = time.monotonic()
        now = now or utcnow()
        tasks = self._expired_tasks(now)
        events = self._expired_events(now)
        if not tasks and not events:
            return 0
        with self.store.transaction():
            for task_id in tasks:
                self.store.delete("tasks", task_id)
                self.store.delete(DATASETS, task_id)
            for name, count in events.items():
                for key in self._event_keys[name][:count]:
                    self.store.delete("events", key)
        for task_id in tasks:
            del self.tasks[task_id]
            self._datasets.discard(task_id)
        for name, count in events.items():
            del self.events[name][:count]
            del self._event_keys[name][:count]
        return len(tasks) + sum(events.values())

    def _expired_tasks(self, now: datetime) -> list[str]:
        """Finished tasks older than the retention, or beyond the count (oldest first). The
        newest task of each kind per model and per deployment that still exist stays: the
        ``*-status`` routes and a repeated deploy answer with it."""
        finished = [t for t in self.tasks.values() if t.final]
        latest: dict[tuple, str] = {}
        for task in self.tasks.values():  # oldest first: the newest of each key stays
            if task.model_id in self.models:
                latest[(task.kind, "model", task.model_id)] = task.id
            if task.deployment_name in self.deployments:
                latest[(task.kind, "deployment", task.deployment_name)] = task.id
        keep = set(latest.values())
        cutoff = now - timedelta(days=self.retention.task_days)
        candidates = [t for t in finished if t.id not in keep]
        excess = len(finished) - self.retention.max_finished_tasks
        expired = {t.id for t in candidates[: max(excess, 0)]}
        expired.update(t.id for t in candidates if t.updated_at < cutoff)
        return [t.id for t in finished if t.id in expired]

    def _expired_events(self, now: datetime) -> dict[str, int]:
        """Per deployment, how many of its oldest events go."""
        cutoff = now - timedelta(days=self.retention.event_days)
        out = {}
        for name, events in self.events.items():
            count = max(len(events) - self.retention.events_per_deployment, 0)
            while count < len(events) and events[count].at < cutoff:
                count += 1
            if count:
                out[name] = count
        return out

    # ------------------------------------------------------------ start

    def _load(self) -> None:
        store = self.store
        self.models = dict(store.load("models", ModelCreate))
        for _, version in store.load("versions", ModelVersion):
            self.versions.setdefault(version.model_id, []).append(version)
        for row in store.quarantined("versions"):
            model_id, _, number = row["id"].rpartition("@")
            if number.isdigit():
                seen = self.versions_set_aside.get(model_id, 0)
                self.versions_set_aside[model_id] = max(seen, int(number))
        for model_id in [m for m in self.models if not self.versions.get(m)]:
            # A model whose versions were all set aside cannot be shown or served.
            store.set_aside("models", model_id, "none of its versions could be read")
            del self.models[model_id]
        self.deployments = dict(store.load("deployments", DeploymentRecord))
        datasets = dict(store.load_json(DATASETS))
        self._datasets = set(datasets)
        for key, task in store.load("tasks", Task):
            self.tasks[key] = _with_pairs(task, datasets)
        for key, event in store.load("events", DeploymentEvent):
            self.events.setdefault(event.deployment, []).append(event)
            self._event_keys.setdefault(event.deployment, []).append(key)


def _row(doc: BaseModel) -> tuple[str, str, BaseModel]:
    """The table and key of a document, from its type."""
    if isinstance(doc, Task):
        return "tasks", doc.id, doc
    if isinstance(doc, DeploymentRecord):
        return "deployments", doc.name, doc
    if isinstance(doc, ModelVersion):
        return "versions", f"{doc.model_id}@{doc.version}", doc
    if isinstance(doc, ModelCreate):
        return "models", doc.model_id, doc
    if isinstance(doc, DeploymentEvent):
        return "events", uuid.uuid4().hex, doc
    raise TypeError(f"the registry does not store {type(doc).__name__}")


def _dataset(task: Task) -> dict[str, Any] | None:
    if task.kind != "fine_tuning":
        return None
    dataset = task.detail.get("request", {}).get("dataset")
    return dataset if isinstance(dataset, dict) else None


def _inline_pairs(task: Task) -> list | None:
    dataset = _dataset(task)
    pairs = dataset.get("pairs") if dataset else None
    return pairs if isinstance(pairs, list) else None


def _without_pairs(task: Task, key: str) -> Task:
    """The task as stored: its inline pairs replaced by a reference (a shallow copy, no
    validation: only the row's JSON is made from it)."""
    request = task.detail["request"]
    dataset = {**request["dataset"], "pairs": None, PAIRS_REF: key}
    detail = {**task.detail, "request": {**request, "dataset": dataset}}
    return task.model_copy(update={"detail": detail})


def _with_pairs(task: Task, datasets: dict[str, Any]) -> Task:
    dataset = _dataset(task)
    if not dataset or PAIRS_REF not in dataset:
        return task
    pairs = datasets.get(dataset[PAIRS_REF])
    request = {k: v for k, v in dataset.items() if k != PAIRS_REF}
    full = {**task.detail["request"], "dataset": {**request, "pairs": pairs}}
    return task.model_copy(update={"detail": {**task.detail, "request": full}})


def _json(value: Any) -> str:
    import json

    return json.dumps(value, allow_nan=False, separators=(",", ":"))
