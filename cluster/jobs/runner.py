"""What the operator's Ray Job runners (fine-tuning, batch predictions) share: the Jobs client,
the tick over their tasks, and how to tell a job this cluster never ran from a busy API."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from cluster.schemas import Task

logger = logging.getLogger("modelyard.jobs")


def job_client(dashboard_url: str | None) -> Any:
    """A ``JobSubmissionClient`` for the cluster's dashboard (the local one by default)."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url or "http://127.0.0.1:8265"
    return JobSubmissionClient(url if "://" in url else f"http://{url}")


def is_unknown_job(exc: Exception) -> bool:
    """The Job SDK's answer for an id this cluster has no record of (a whole-cluster restart);
    anything else is the API being busy or still starting."""
    return isinstance(exc, RuntimeError) and "status code 404" in str(exc)


class JobRunner:
    """Drives the tasks of one ``kind`` as Ray Jobs: ``tick`` submits pending ones and polls
    the rest; one task's error fails that task only.

    A running task's job is polled at most every ``poll_every_s`` (0: every tick), so a
    long job does not cost a Jobs API call per tick.
    """

    kind = ""
    poll_every_s = 0.0

    def __init__(
        self,
        registry: Any,
        dashboard_url: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._dashboard_url = dashboard_url
        self._client = None
        self._clock = clock
        self._polled: dict[str, float] = {}  # task id -> when its job was last polled

    def jobs(self) -> Any:
        if self._client is None:
            self._client = job_client(self._dashboard_url)
        return self._client

    def tick(self, tasks: list[Task]) -> None:
        now = self._clock()
        mine = [t for t in tasks if t.kind == self.kind]
        self._polled = {t.id: self._polled[t.id] for t in mine if t.id in self._polled}
        for task in mine:
            try:
                if task.status == "pending":
                    self._submit(task)
                elif now - self._polled.get(task.id, -float("inf")) >= self.poll_every_s:
                    self._polled[task.id] = now
                    self._poll(task)
            except Exception as exc:  # one bad task must not stop the others
                logger.exception("%s task %s", self.kind, task.id)
                self._failed(task, f"{type(exc).__name__}: {exc}")

    def _submit(self, task: Task) -> None:
        raise NotImplementedError

    def _poll(self, task: Task) -> None:
        raise NotImplementedError

    def _failed(self, task: Task, error: str) -> None:
        raise NotImplementedError
