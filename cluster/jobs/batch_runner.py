"""Batch-prediction tasks run as Ray Jobs (``python -m cluster.jobs.batch_job``), driven by
the operator.

    pending --submit Ray Job--> processing (the job reports rows done / total)
       |                           |  the job moved its output into place --> done
       +--the actors need more     |  the job failed --> failed (its error, else its log's end)
          than the whole cluster   |  cancel --> canceled; the job sees it and stops
          has: refused             +  job unknown (the cluster restarted) --> failed

The job reports its own progress and end to the registry; the operator starts it and notices
when it dies without saying so.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from cluster.jobs.runner import JobRunner, is_unknown_job
from cluster.schemas import Resources, Task

KIND = "batch_prediction"
UNREACHABLE = "UNREACHABLE"
SUBMIT_TRIES = 240  # ~2 minutes of operator ticks while the job agent starts


def refusal(resources: dict[str, Any], concurrency: int, total: dict[str, float]) -> str | None:
    """Why a job can never run: its actors need more than the whole cluster has."""
    res = Resources.model_validate(resources)
    need = {"GPU": res.num_gpus * concurrency, "CPU": res.num_cpus * concurrency}
    short = [r for r, n in need.items() if n > 0 and n > total.get(r, 0.0) + 1e-9]
    if not short:
        return None
    return (
        f"{concurrency} model copies with these resources need "
        + ", ".join(f"{r}={need[r]:g}" for r in short)
        + " but the cluster has "
        + ", ".join(f"{r}={total.get(r, 0.0):g}" for r in short)
        + " in total; lower concurrency (or num_cpus_per_copy)"
    )


def job_env() -> dict[str, str]:
    keep = ("PYTHONPATH", "HF_HUB_OFFLINE", "MODELYARD_STORAGE_ROOT", "RAY_worker_niceness")
    return {k: os.environ[k] for k in keep if k in os.environ}


class BatchRunner(JobRunner):
    kind = KIND
    # The job itself reports progress and marks the task done; the poll only catches a job
    # that died without saying so, which can wait a few seconds.
    poll_every_s = 5.0

    def _failed(self, task: Task, error: str) -> None:
        self._update(task.id, status="failed", error=error)

    def _update(self, task_id: str, **fields: Any) -> None:
        import ray

        ray.get(self._registry.update_task.remote(task_id, **fields))

    def _job_status(self, job_id: str) -> str | None:
        """SUCCEEDED, FAILED, ... or None when the cluster does not know the job;
        ``UNREACHABLE`` when the Jobs API did not answer (try again next tick)."""
        try:
            return str(self.jobs().get_job_status(job_id)).rsplit(".", 1)[-1]
        except Exception as exc:
            return None if is_unknown_job(exc) else UNREACHABLE

    def _submit(self, task: Task) -> None:
        import ray

        why = refusal(
            task.detail["resources"],
            task.detail["request"]["concurrency"],
            ray.cluster_resources(),
        )
        if why:
            self._update(task.id, status="refused", error=why)
            return
        job_id = task.id
        # Submitted before a restart of the operator that lost the "processing" update.
        known = self._job_status(job_id)
        if known == UNREACHABLE:
            return
        if known is None:
            try:
                self.jobs().submit_job(
                    entrypoint=f"{sys.executable} -m cluster.jobs.batch_job --task-id {task.id}",
                    submission_id=job_id,
                    runtime_env={"env_vars": job_env()},
                )
            except (ConnectionError, RuntimeError) as exc:
                tries = task.detail.get("submit_tries", 0) + 1
                if tries >= SUBMIT_TRIES:
                    raise
                self._update(task.id, detail={"submit_tries": tries, "submit_error": str(exc)})
                return
        self._update(task.id, status="processing", detail={"job_id": job_id})

    def _poll(self, task: Task) -> None:
        # The job id is the task id: known even if the job reported "processing" before the
        # operator could record it.
        job_id = task.detail.get("job_id") or task.id
        status = self._job_status(job_id)
        if status == UNREACHABLE:
            return
        if status is None:
            self._update(
                task.id,
                status="failed",
                error="the batch job is gone (the cluster restarted); submit it again",
            )
        elif status == "SUCCEEDED":
            self._update(task.id, status="done")
        elif status in ("FAILED", "STOPPED"):
            logs = self.jobs().get_job_logs(job_id)[-2000:]
            self._update(task.id, status="failed", error=f"the batch job {status}: {logs}")

    def cancel(self, task_id: str) -> Task:
        """Mark the task canceled first (the job checks at every report and stops; a pending
        task is never submitted), then stop the job if there is one."""
        import ray

        task = ray.get(self._registry.get_task.remote(task_id, KIND))
        if task.final:
            return task
        task = ray.get(
            self._registry.update_task.remote(
                task_id, status="canceled", error="canceled by request"
            )
        )
        if job_id := task.detail.get("job_id"):
            with contextlib.suppress(Exception):
                self.jobs().stop_job(job_id)
        return task
