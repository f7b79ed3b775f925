"""Fine-tuning tasks as the client hands them out: ``FineTuningTask`` (refresh, wait with a
progress bar, cancel, restart, logs), its ``FineTuneProgress`` and a ``FineTuningPage``.

A task runs as a Ray Job (Ray Train) on the cluster: pending, processing while it trains
(``progress`` moves), then done with the new ``model_version`` registered, or failed,
canceled or refused with the server's reason in ``error``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cluster.client.errors import TaskFailedError
from cluster.client.progress import training_bar
from cluster.client.shapes import parse
from cluster.schemas import FineTuneRestart, Task
from cluster.schemas.training import DatasetSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cluster.client.client import Client

PATH = "/v1/fine-tuning/task"
Dataset = str | Path | list[dict[str, Any]] | dict[str, Any] | DatasetSpec


class FineTuneProgress(BaseModel):
    """Where a run is: ``step`` of ``total_steps`` (0 until the job reports it), ``percent``,
    passes over the data (``epoch``), the last ``loss`` and an estimate of the time left."""

    step: int = 0
    total_steps: int = 0
    percent: float = 0.0
    epoch: float | None = None
    loss: float | None = None
    eta_s: float | None = None


def dataset_spec(dataset: Dataset) -> DatasetSpec:
    """A ``DatasetSpec`` from what a caller has: inline pairs (a list of {"anchor",
    "positive"} dicts), a JSONL path or URI the *server* can read (a relative local path is
    made absolute here), or a spec (dict or ``DatasetSpec``) as it is."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if isinstance(dataset, dict):
        return DatasetSpec.model_validate(dataset)
    if isinstance(dataset, list):
        return DatasetSpec(pairs=dataset)
    uri = str(dataset)
    if "://" not in uri:
        uri = os.path.abspath(os.path.expanduser(uri))
    return DatasetSpec(uri=uri)


class FineTuningTask:
    """A fine-tuning task; ``info`` is the last ``Task`` read from the server."""

    def __init__(self, client: Client, info: Task) -> None:
        self._client = client
        self.info = info

    def __repr__(self) -> str:
        p = self.progress
        return f"FineTuningTask({self.id!r}, {self.status}, step {p.step}/{p.total_steps})"

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        """pending, processing, done, failed, canceled or refused."""
        return self.info.status

    @property
    def error(self) -> str | None:
        return self.info.error

    @property
    def progress(self) -> FineTuneProgress:
        return parse(FineTuneProgress, self.info.detail.get("progress") or {})

    @property
    def model_version(self) -> int | None:
        """The model version the run registered, once done."""
        return self.info.detail.get("model_version")

    @property
    def metrics_before(self) -> dict[str, float]:
        """recall@1 and MRR of the base model on the held-out pairs."""
        return self.info.detail.get("metrics_before") or {}

    @property
    def metrics_after(self) -> dict[str, float]:
        """The same metrics for the fine-tuned model, once done."""
        return self.info.detail.get("metrics_after") or {}

    @property
    def _path(self) -> str:
        return f"{PATH}/{self.id}"

    def refresh(self) -> Task:
        """Read the task again (status, progress, metrics, model version)."""
        self.info = self._client.call("GET", self._path, Task)
        return self.info

    def wait(self, timeout: float = 3600.0, progress: bool = False, poll_s: float = 1.0) -> Task:
        """Poll until the task ends and return it when done. ``TaskFailedError`` (with the
        server's reason) when it ends failed, canceled or refused; the builtin
        ``TimeoutError`` after ``timeout`` seconds. ``progress`` draws a bar of the steps,
        with the last loss, on stderr."""
        deadline = time.monotonic() + timeout
        with training_bar(progress, self.id) as show:
            while not self.refresh().final:
                show(self.info)
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"fine-tuning task {self.id} still {self.status} after {timeout:g}s"
                    )
                time.sleep(poll_s)
            show(self.info)
        if self.status != "done":
            raise TaskFailedError(self.info)
        return self.info

    def cancel(self) -> Task:
        """Stop the training job (its workers and their resources go with it); the task ends
        canceled. A task that has already ended is returned as it is."""
        self.info = self._client.call("PUT", f"{self._path}/cancel", Task)
        return self.info

    def restart(self, from_scratch: bool = False) -> Task:
        """Run an ended (failed, canceled or done) task again: it resumes from its newest
        checkpoint, or starts over with ``from_scratch``. ``ConflictError`` while it runs."""
        req = FineTuneRestart(from_scratch=from_scratch)
        self.info = self._client.call("PUT", f"{self._path}/restart", Task, req)
        return self.info

    def logs(self) -> str:
        """The training job's output so far (driver and workers)."""
        return str(self._client.request("GET", f"{self._path}/logs").json().get("logs", ""))


@dataclass(frozen=True)
class FineTuningPage:
    """One page of fine-tuning tasks, oldest first; ``total`` counts every match."""

    items: list[FineTuningTask] = field(default_factory=list)
    total: int = 0
    offset: int = 0
    limit: int = 50

    def __iter__(self) -> Iterator[FineTuningTask]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
