"""The durable queue behind ``POST /v1/deployments/{name}/async-predict``.

``AsyncQueue`` is part of the registry actor's state: every queued prediction, and every
change of its state (an attempt counted, its back-off, its end), is written to SQLite
before the call returns, so a registry restart loses none. Workers claim tasks under a
lease; a task whose worker died (or whose lease was lost with a registry restart) is
claimed again, so delivery is at least once, and the first completion wins.

Bounded and fair:

- a full queue (``max_pending`` in all, ``max_pending_per_deployment`` each) refuses new
  work with ``Overloaded`` (429 + Retry-After);
- claims go round-robin over deployments, at most ``max_inflight_per_deployment`` leased
  per deployment, so a slow or dead deployment cannot take every worker slot;
- a failed attempt (a timeout, a lost worker) is counted in the task and moves its
  ``not_before`` out (exponential, capped); after ``max_attempts`` the task ends FAILURE;
- a deployment that is not ready or full is paused as a whole (in memory: a restarted
  registry just asks it again) without spending the tasks' attempts; the caller names the
  deployments not to claim from at all (stopped, failed), and those tasks wait;
- PENDING tasks end FAILURE after ``pending_ttl_s``; results are purged after
  ``result_ttl_s``. Both run at most every ``MAINTAIN_EVERY_S``, oldest first, never a
  scan of every task;
- a request with a ``request_id`` is queued once per deployment while its task is kept:
  Ray re-runs an enqueue the registry may have committed before it crashed, and a client
  may retry one whose answer it lost.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from cluster import errors
from cluster.registry.async_limits import (
    DEPLOYMENT_PAUSE_MAX_S,
    QUEUE_FULL_RETRY_AFTER_S,
    AsyncLimits,
    backoff_s,
)
from cluster.registry.store import Store
from cluster.schemas import AsyncTask, PredictRequest

TABLE = "async_tasks"
MAINTAIN_EVERY_S = 5.0
# Expiry and purge work per maintenance pass, so one pass never stalls the registry actor;
# a pass that hits it leaves the next one due at once.
MAINTAIN_BATCH = 2000
# ``not_before`` is stored to the microsecond: a task this close to it counts as due.
DUE_SLACK_S = 1e-3


def _ts(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class AsyncQueue:
    def __init__(
        self,
        store: Store,
        result_ttl_s: float,
        limits: AsyncLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._result_ttl_s = result_ttl_s
        self.limits = limits or AsyncLimits()
        self._clock = clock
        self._tasks: dict[str, AsyncTask] = dict(store.load(TABLE, AsyncTask))
        # Pending ids per deployment (leased ones included): bounds and deletes.
        self._by_dep: dict[str, set[str]] = {}
        # Claimable ids per deployment, oldest first; ids that ended meanwhile are skipped.
        self._ready: dict[str, deque[str]] = {}
        self._rotation: deque[str] = deque()  # deployments with ready ids, round-robin
        self._delayed: list[tuple[float, str]] = []  # (not_before, id) heap
        self._by_age: deque[tuple[float, str]] = deque()  # pending, by creation: TTL
        self._finished: deque[tuple[float, str]] = deque()  # by completion: purge
        self._leases: dict[str, float] = {}  # id -> lease deadline
        self._inflight: Counter[str] = Counter()  # deployment -> leased ids
        self._paused: dict[str, tuple[float, int]] = {}  # deployment -> (until, level)
        self._by_request: dict[tuple[str, str], str] = {}  # (deployment, request_id) -> id
        self._next_maintain = 0.0
        self._load()

    def _load(self) -> None:
        tasks = sorted(self._tasks.values(), key=lambda t: t.created_at)
        for task in tasks:
            self._remember_request(task)
            if task.status == "PENDING":
                self._track(task)
        for task in sorted(
            (t for t in tasks if t.completed_at is not None), key=lambda t: t.completed_at
        ):
            self._finished.append((_ts(task.completed_at), task.task_id))

    def _track(self, task: AsyncTask) -> None:
        self._by_dep.setdefault(task.deployment, set()).add(task.task_id)
        self._by_age.append((_ts(task.created_at), task.task_id))
        self._schedule(task)

    def _schedule(self, task: AsyncTask, front: bool = False) -> None:
        if _ts(task.not_before) > self._clock() + DUE_SLACK_S:
            heapq.heappush(self._delayed, (_ts(task.not_before), task.task_id))
            return
        ready = self._ready.get(task.deployment)
        if ready is None:
            ready = self._ready[task.deployment] = deque()
            self._rotation.append(task.deployment)
        if front:
            ready.appendleft(task.task_id)
        else:
            ready.append(task.task_id)

    # ------------------------------------------------------------ enqueue

    def enqueue(self, deployment: str, req: PredictRequest) -> AsyncTask:
        """Queue a prediction; ``Overloaded`` when the queue (or the deployment's share of
        it) is full."""
        self.maintain()  # expired requests give their places back first
        if req.request_id is not None:
            known = self._by_request.get((deployment, req.request_id))
            if known in self._tasks:  # before the bounds: a repeat takes no new place
                return self._tasks[known]
        waiting = self._by_dep.get(deployment, ())
        if len(waiting) >= self.limits.max_pending_per_deployment:
            raise errors.Overloaded(
                f"deployment '{deployment}' has {len(waiting)} async requests pending, its "
                f"limit (async_max_pending_per_deployment); retry later",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            )
        if self.pending_count() >= self.limits.max_pending:
            raise errors.Overloaded(
                f"the async queue holds {self.pending_count()} pending requests, its limit "
                "(async_max_pending); retry later",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            )
        task = AsyncTask(
            task_id=f"async-{uuid.uuid4().hex}",
            deployment=deployment,
            request=req,
            created_at=_at(self._clock()),
        )
        self._put(task)
        self._track(task)
        self._remember_request(task)
        return task

    def _remember_request(self, task: AsyncTask) -> None:
        if task.request.request_id is not None:
            self._by_request[(task.deployment, task.request.request_id)] = task.task_id

    def pending_count(self) -> int:
        return sum(len(ids) for ids in self._by_dep.values())

    def deployments(self) -> list[str]:
        """Deployments that have pending tasks."""
        return [name for name, ids in self._by_dep.items() if ids]

    # ------------------------------------------------------------ claim

    def claim(
        self,
        limit: int,
        lease_s: float,
        skip: Iterable[str] = (),
        lease_for: Mapping[str, float] | None = None,
    ) -> list[AsyncTask]:
        """Up to ``limit`` claimable tasks, one deployment at a time in turn, leased for
        ``lease_s`` seconds (``lease_for[deployment]`` where given); nothing from the
        deployments in ``skip``."""
        now = self._clock()
        self.maintain(now)
        self._wake_delayed(now)
        skip = set(skip)
        out: list[AsyncTask] = []
        misses = 0
        while len(out) < limit and misses < len(self._rotation):
            name = self._rotation[0]
            self._rotation.rotate(-1)
            task = self._take(name, now, skip)
            if task is not None:
                self._leases[task.task_id] = now + (lease_for or {}).get(name, lease_s)
                self._inflight[name] += 1
                out.append(task)
                misses = 0
            elif not self._ready.get(name):
                self._ready.pop(name, None)
                self._rotation.pop()  # the name just rotated to the end
            else:
                misses += 1
        return out

    def _take(self, name: str, now: float, skip: set[str]) -> AsyncTask | None:
        if name in skip or self._inflight[name] >= self.limits.max_inflight_per_deployment:
            return None
        if self._paused.get(name, (0.0, 0))[0] > now:
            return None
        ready = self._ready[name]
        while ready:
            task = self._tasks.get(ready.popleft())
            if task is not None and task.status == "PENDING" and task.task_id not in self._leases:
                return task
        return None

    def _wake_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now + DUE_SLACK_S:
            _, task_id = heapq.heappop(self._delayed)
            task = self._tasks.get(task_id)
            if task is not None and task.status == "PENDING" and task_id not in self._leases:
                self._schedule(task)

    # ------------------------------------------------------------ outcomes of a claim

    def release(self, task_id: str) -> None:
        """Give a claimed task back untouched; it is claimed again first."""
        task = self._leased(task_id)
        if task is not None:
            self._drop_lease(task_id)
            self._schedule(task, front=True)

    def defer(self, task_id: str) -> None:
        """The task's deployment was not ready or full: give the task back and pause the
        deployment (1, 2, 4 ... s) without counting an attempt of the task."""
        task = self._leased(task_id)
        if task is None:
            return
        now = self._clock()
        until, level = self._paused.get(task.deployment, (0.0, 0))
        if until <= now:  # tasks in flight when it paused all come back: one step each pause
            level += 1
            pause = backoff_s(level, 1.0, DEPLOYMENT_PAUSE_MAX_S)
            self._paused[task.deployment] = (now + pause, level)
        self._drop_lease(task_id)
        self._schedule(task, front=True)

    def retry(self, task_id: str, error: str) -> AsyncTask | None:
        """A failed attempt that may succeed later: count it, and either move the task's
        ``not_before`` out or, after ``max_attempts``, end it FAILURE with ``error``."""
        task = self._leased(task_id)
        if task is None:
            return None
        attempts = task.attempts + 1
        if attempts >= self.limits.max_attempts:
            error = f"gave up after {attempts} attempts (async_max_attempts): {error}"
            return self._end([(task, {"status": "FAILURE", "attempts": attempts, "error": error})])[
                0
            ]
        wait = backoff_s(attempts, self.limits.retry_base_s, self.limits.retry_max_s)
        update = {"attempts": attempts, "error": error, "not_before": _at(self._clock() + wait)}
        task = task.model_copy(update=update)
        self._put(task)
        self._drop_lease(task_id)
        self._schedule(task)
        return task

    def complete(self, task_id: str, **fields: Any) -> None:
        """The final answer of a task; a second one (a duplicate delivery) is ignored."""
        task = self._tasks.get(task_id)
        if task is None or task.status != "PENDING":
            return
        self._end([(task, fields)])
        if fields.get("status") == "SUCCESS":
            self._paused.pop(task.deployment, None)
        self.maintain()

    def fail_deployment(self, name: str, error: str) -> int:
        """End the pending tasks of a deployment FAILURE (it was deleted), at most
        ``MAINTAIN_BATCH`` per call; returns how many ended."""
        ids = list(self._by_dep.get(name, ()))[:MAINTAIN_BATCH]
        self._end([(self._tasks[i], {"status": "FAILURE", "error": error}) for i in ids])
        return len(ids)

    def _leased(self, task_id: str) -> AsyncTask | None:
        """The task if this queue leased it and it is still PENDING; None for a lease lost
        with a restart (the task was queued again when the queue loaded)."""
        task = self._tasks.get(task_id)
        if task_id not in self._leases or task is None or task.status != "PENDING":
            return None
        return task

    def _drop_lease(self, task_id: str) -> None:
        if self._leases.pop(task_id, None) is not None:
            self._inflight[self._tasks[task_id].deployment] -= 1

    def _end(self, items: list[tuple[AsyncTask, dict[str, Any]]]) -> list[AsyncTask]:
        """Finish tasks in one transaction; memory follows only once it is committed."""
        if not items:
            return []
        now = self._clock()
        done = [
            AsyncTask.model_validate(
                {**task.model_dump(), **fields, "not_before": None, "completed_at": _at(now)}
            )
            for task, fields in items
        ]
        with self._store.transaction():
            for task in done:
                self._store.put(TABLE, task.task_id, task)
        for task in done:
            self._drop_lease(task.task_id)
            self._tasks[task.task_id] = task
            ids = self._by_dep.get(task.deployment)
            if ids is not None:
                ids.discard(task.task_id)
                if not ids:
                    del self._by_dep[task.deployment]
            self._finished.append((now, task.task_id))
        return done

    # ------------------------------------------------------------ reads and upkeep

    def get(self, task_id: str) -> AsyncTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise errors.NotFound(f"no async task '{task_id}' (results expire after a while)")
        return task

    def maintain(self, now: float | None = None) -> None:
        """Expire old PENDING tasks, count lost leases, purge old results: at most every
        ``MAINTAIN_EVERY_S``, a bounded amount each time."""
        now = self._clock() if now is None else now
        if now < self._next_maintain:
            return
        busy = self._expire(now) | self._purge(now)
        self._recover_leases(now)
        self._next_maintain = now if busy else now + MAINTAIN_EVERY_S

    def _expire(self, now: float) -> bool:
        """End PENDING tasks older than the TTL, oldest first; True if more may be due."""
        ttl = self.limits.pending_ttl_s
        due = _pop_due(self._by_age, now - ttl)
        error = f"expired: still PENDING after {ttl:g}s (async_pending_ttl_s)"
        items = []
        for _, task_id in due:
            task = self._tasks.get(task_id)
            if task is not None and task.status == "PENDING":
                last = f"; last error: {task.error}" if task.error else ""
                items.append((task, {"status": "FAILURE", "error": error + last}))
        try:
            self._end(items)
        except BaseException:
            self._by_age.extendleft(reversed(due))  # looked at again next time
            raise
        return len(due) == MAINTAIN_BATCH

    def _purge(self, now: float) -> bool:
        """Forget results older than ``result_ttl_s``; True if more may be due."""
        due = _pop_due(self._finished, now - self._result_ttl_s)
        if not due:
            return False
        try:
            with self._store.transaction():
                for _, task_id in due:
                    self._store.delete(TABLE, task_id)
        except BaseException:
            self._finished.extendleft(reversed(due))
            raise
        for _, task_id in due:
            task = self._tasks.pop(task_id, None)
            if task is not None and task.request.request_id is not None:
                key = (task.deployment, task.request.request_id)
                if self._by_request.get(key) == task_id:
                    del self._by_request[key]
        return len(due) == MAINTAIN_BATCH

    def _recover_leases(self, now: float) -> None:
        # Only leased tasks are looked at: at most the workers' concurrency.
        for task_id in [k for k, deadline in self._leases.items() if deadline <= now]:
            self.retry(task_id, "no answer within the worker's lease (the worker may have died)")

    def _put(self, task: AsyncTask) -> None:
        self._store.put(TABLE, task.task_id, task)
        self._tasks[task.task_id] = task


def _pop_due(entries: deque[tuple[float, str]], cutoff: float) -> list[tuple[float, str]]:
    """The entries at or before ``cutoff`` from the front of a time-ordered deque, at most
    ``MAINTAIN_BATCH``."""
    due = []
    while entries and entries[0][0] <= cutoff and len(due) < MAINTAIN_BATCH:
        due.append(entries.popleft())
    return due
