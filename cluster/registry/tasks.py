"""The registry's task table and the one guarded update every task change goes through.

Tasks are changed from several places at once: the operator's loop, the Ray Jobs that
report progress, and requests (cancel, restart) that run beside both. ``TaskStore.update``
is a compare-and-set on the task as it is now: a caller says what it read (``Expect``), and
a task that has moved on since is left as it is, so an update made from a stale read never
overwrites a newer state. By default a finished task is never changed.
"""

from __future__ import annotations

import uuid
from collections.abc import ValuesView
from dataclasses import dataclass
from typing import Any

from cluster import errors
from cluster.registry.state import RegistryState
from cluster.schemas import Page, Task, TaskKind, utcnow
from cluster.schemas.base import finite


@dataclass(frozen=True)
class Expect:
    """What a task must be for a guarded update to change it.

    ``open_only``: refuse a task that has finished (the default). Only a cancel that wins
    over a late finish and a restart of a fine-tuning task change a finished one.
    ``run``: the fine-tuning run the caller looked at; a restart since then makes its
    update void. ``status``: the status the caller read. ``kind``: a task of another kind
    is NotFound, as ``TaskStore.get`` says.
    """

    open_only: bool = True
    run: int | None = None
    status: str | None = None
    kind: str | None = None

    def refuses(self, task: Task) -> bool:
        return (
            (self.open_only and task.final)
            or (self.run is not None and task.detail.get("run", 1) != self.run)
            or (self.status is not None and task.status != self.status)
        )


OPEN = Expect()
ANY_STATE = Expect(open_only=False)


class TaskStore:
    """Deploy, delete, rollout, fine-tuning and batch tasks, oldest first."""

    def __init__(self, state: RegistryState) -> None:
        self._state = state
        # The state's own dict, read here; only ``RegistryState.save`` changes it.
        self._tasks = state.tasks

    # ------------------------------------------------------------ new tasks

    @staticmethod
    def new(kind: TaskKind, **fields: Any) -> Task:
        """A new task, not yet saved (to be saved with the documents it goes with)."""
        return Task(id=f"{kind.value}-{uuid.uuid4().hex[:16]}", kind=kind, **fields)

    def create(self, kind: TaskKind, **fields: Any) -> Task:
        task = self.new(kind, **fields)
        task.updated_at = utcnow()
        self._state.save(task)
        return task

    # ------------------------------------------------------------ the guarded update

    def changed(self, task_id: str, expect: Expect = OPEN, **fields: Any) -> Task | None:
        """The task with ``fields`` set (``detail`` merged), validated, not yet saved; None
        when ``expect`` refuses it as it is now. Numbers from a job (a diverged loss) are
        kept as null."""
        task = self.get(task_id, expect.kind)
        if expect.refuses(task):
            return None
        detail = {**task.detail, **fields.pop("detail", {})}
        # The request was validated when the task was made and never changes; it may hold
        # 10,000 inline pairs, and progress reports come every few steps: not walked again.
        request = detail.pop("request", None)
        updated = Task.model_validate(finite({**dict(task), **fields, "detail": detail}))
        if request is not None:
            updated.detail["request"] = request
        updated.updated_at = utcnow()
        return updated

    def update(self, task_id: str, expect: Expect = OPEN, **fields: Any) -> Task:
        """Set ``fields`` if ``expect`` holds for the task now; returns the task as it is
        after (unchanged when refused)."""
        updated = self.changed(task_id, expect, **fields)
        if updated is None:
            return self.get(task_id)
        self._state.save(updated)
        return updated

    # ------------------------------------------------------------ reads

    def find(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def get(self, task_id: str, kind: str | None = None) -> Task:
        task = self._tasks.get(task_id)
        if task is None or (kind is not None and task.kind != kind):
            raise errors.NotFound(f"no {kind or ''} task with id '{task_id}'".replace("  ", " "))
        return task

    def all(self) -> ValuesView[Task]:
        """Every task, oldest first (a live view: do not save while walking it)."""
        return self._tasks.values()

    def latest(self, kind: str, model_id: str) -> Task:
        for task in reversed(list(self._tasks.values())):
            if task.kind == kind and task.model_id == model_id:
                return task
        raise errors.NotFound(f"model '{model_id}' has no {kind} task")

    def page(
        self,
        kind: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
        deployment: str | None = None,
    ) -> Page:
        """Tasks oldest first: a stable order, so paging never skips or repeats one."""
        matching = [
            t
            for t in self._tasks.values()
            if (kind is None or t.kind == kind)
            and (status is None or t.status == status)
            and (deployment is None or t.deployment_name == deployment)
        ]
        return Page(
            items=matching[offset : offset + limit], total=len(matching), offset=offset, limit=limit
        )

    def unfinished(self) -> list[Task]:
        return [t for t in self._tasks.values() if not t.final]
