"""Progress of a run, from the rank-0 training worker to whoever listens.

Listeners are Ray actors with one method, ``report_progress(task_id, payload)``:

- ``progress_actor`` in the config names one (namespace ``modelyard``), e.g. the registry,
  which then sees every payload as it happens. Calls are fire-and-forget: a slow or
  restarting listener never stalls training.
- ``run(config, on_progress=...)`` starts a ``ProgressBuffer`` actor and a driver thread
  (``ProgressPump``) that hands its payloads to the callback in order.

Payloads are dicts with ``event`` (started, eval_before, step, checkpoint, done), ``task_id``,
``ts`` (UTC epoch seconds on the worker) and, by event: ``step``, ``total_steps``, ``epoch``
(passes over the train split so far), ``loss``, ``metrics_before``, ``metrics_after``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

NAMESPACE = "modelyard"  # cluster.settings.NAMESPACE; train_jobs does not import cluster
ProgressCallback = Callable[[dict[str, Any]], None]

logger = logging.getLogger(__name__)


class ProgressBuffer:
    """Holds payloads until the driver drains them (run as an actor with num_cpus=0)."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []

    def report_progress(self, task_id: str | None, payload: dict[str, Any]) -> None:
        self._items.append(payload)

    def drain(self) -> list[dict[str, Any]]:
        items, self._items = self._items, []
        return items


class ProgressSink:
    """The worker's side: sends each payload to every listener without waiting."""

    def __init__(self, task_id: str | None, listeners: list[Any]) -> None:
        self.task_id = task_id
        self._listeners = listeners
        self._last: list[ray.ObjectRef] = []

    @classmethod
    def connect(cls, task_id: str | None, buffer: Any, actor_name: str | None) -> ProgressSink:
        listeners = [buffer] if buffer is not None else []
        if actor_name:
            try:
                listeners.append(ray.get_actor(actor_name, namespace=NAMESPACE))
            except ValueError:
                logger.warning("progress actor %r not found; not reporting to it", actor_name)
        return cls(task_id, listeners)

    def emit(self, event: str, **fields: Any) -> None:
        payload = {"event": event, "task_id": self.task_id, "ts": time.time(), **fields}
        self._last = [a.report_progress.remote(self.task_id, payload) for a in self._listeners]

    def flush(self, timeout_s: float = 10) -> None:
        """Wait (bounded) until the listeners have the last payload; calls to one actor
        from one caller run in order, so the earlier ones are there too."""
        if self._last:
            ray.wait(self._last, num_returns=len(self._last), timeout=timeout_s)


class ProgressPump:
    """Driver side of ``on_progress``: a buffer actor plus a thread that drains it."""

    def __init__(self, on_progress: ProgressCallback | None, interval_s: float = 0.5) -> None:
        self._on_progress = on_progress
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handle: Any = None

    def __enter__(self) -> ProgressPump:
        if self._on_progress is not None:
            self.handle = ray.remote(num_cpus=0)(ProgressBuffer).remote()
            self._thread = threading.Thread(target=self._loop, name="progress-pump", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._deliver()  # whatever arrived after the thread's last look
        ray.kill(self.handle)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._deliver()

    def _deliver(self) -> None:
        try:
            items = ray.get(self.handle.drain.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            logger.warning("progress buffer did not answer; skipping this round", exc_info=True)
            return
        for item in items:
            try:
                self._on_progress(item)
            except Exception:  # a listener's bug must not end the run
                logger.exception("on_progress raised for %s", item.get("event"))
