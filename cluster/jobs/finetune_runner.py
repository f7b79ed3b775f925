"""Fine-tuning tasks run as Ray Jobs (``python -m train_jobs.finetune``), driven by the operator.

    pending --submit Ray Job--> processing --job SUCCEEDED--> register version --> done
       |                           |  job FAILED --> failed (with the log's last lines)
       +--needs more GPUs than     |  cancel --> ray job stop --> canceled
          the cluster has: refused +  job unknown (cluster restarted) --> failed, restartable

The job reports progress straight to the registry (``report_progress``), checkpoints too,
once they are stored. Restart submits a new job under the same Ray Train run name and
passes the newest reported checkpoint as ``resume_from`` (a job stopped just after a
checkpoint can leave it out of Ray Train's own snapshot), so the step count carries on;
``from_scratch`` picks a new run name instead.

Cancel and restart run beside the operator's loop, so every update the loop makes names
the run it looked at (``update_task`` with ``Expect(run=...)``): one that lands after a
cancel or a restart changes nothing, and a job submitted for a run that was canceled
meanwhile is stopped.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from cluster.jobs.runner import JobRunner, is_unknown_job
from cluster.registry.finetune import scratch_runs
from cluster.registry.tasks import ANY_STATE, Expect
from cluster.schemas import FineTuneCreate, RolloutOptions, Task, VersionCreate
from cluster.settings import REGISTRY_ACTOR

logger = logging.getLogger("modelyard.finetune")

PRIMARY_METRIC = "recall@1"
SUBMIT_TRIES = 240  # ~2 minutes of operator ticks
JOB_GONE = (
    "the training job is gone (the cluster restarted); restart the task to resume from its "
    "last checkpoint"
)


class FineTuneRunner(JobRunner):
    kind = "fine_tuning"

    def __init__(self, registry: Any, storage_root: str, dashboard_url: str | None) -> None:
        super().__init__(registry, dashboard_url)
        self._root = Path(storage_root)

    def _failed(self, task: Task, error: str) -> None:
        self._update(task, status="failed", error=error)

    def _update(self, task: Task, **fields: Any) -> Task:
        """Update the run of ``task`` this tick looked at; returns the task as it is now."""
        import ray

        expect = Expect(run=task.detail.get("run", 1), kind=self.kind)
        return ray.get(self._registry.update_task.remote(task.id, expect, **fields))

    def _submit(self, task: Task) -> None:
        import ray

        req = FineTuneCreate.model_validate(task.detail["request"])
        refusal = _refusal(req)
        if refusal:
            self._update(task, status="refused", error=refusal)
            return
        version = ray.get(self._registry.get_version.remote(req.embedding_model_id, req.version))
        run = task.detail.get("run", 1)
        config_path = self._write_config(task, req, version.artifact_uri, run)
        job_id = f"{task.id}-run{run}"
        try:
            self.jobs().submit_job(
                entrypoint=f"{sys.executable} -m train_jobs.finetune --config {config_path}",
                submission_id=job_id,
                runtime_env={"env_vars": _job_env()},
            )
        except (ConnectionError, RuntimeError) as exc:
            if "already exists" not in str(exc):
                # The job agent may still be starting ("try again later"): retry next tick,
                # for a bounded number of tries.
                self._count_error(task, "submit", exc)
                return
            # else: submitted on an earlier tick whose update was lost (an operator restart)
        now = self._update(
            task, status="processing", detail={"job_id": job_id, "config": str(config_path)}
        )
        if now.status != "processing" or now.detail.get("job_id") != job_id:
            # Canceled or restarted while this job was being submitted: it must not run unseen.
            logger.info("stopping job %s: task %s moved on to %s", job_id, task.id, now.status)
            self.jobs().stop_job(job_id)

    def _count_error(self, task: Task, what: str, exc: Exception) -> None:
        """A transient Job API error: try again next tick, a bounded number of times."""
        tries = task.detail.get(f"{what}_tries", 0) + 1
        if tries >= SUBMIT_TRIES:
            raise exc
        self._update(task, detail={f"{what}_tries": tries, f"{what}_error": str(exc)})

    def _write_config(self, task: Task, req: FineTuneCreate, artifact: str, run: int) -> Path:
        from serve_apps.artifacts import resolve

        base = self._root / "finetune" / task.id
        # The same name as before: Ray Train resumes from that run's newest checkpoint.
        run_name = f"{task.id}-s{scratch_runs(task.detail)}"
        config = {
            "base_model_path": str(resolve(artifact)),
            "dataset": req.dataset.model_dump(exclude_none=True),
            "output_dir": str(base / f"model-run{run}"),
            "storage_path": str(self._root / "checkpoints"),
            "run_name": run_name,
            "task_id": task.id,
            "progress_actor": REGISTRY_ACTOR,
            "params": req.params.model_dump(exclude_none=True),
        }
        resume = self._last_checkpoint(task, run_name)
        if resume is not None:
            config["params"]["resume_from"] = resume
        base.mkdir(parents=True, exist_ok=True)
        path = base / f"run{run}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _last_checkpoint(self, task: Task, run_name: str) -> str | None:
        """The newest checkpoint the task's runs are known to have written in full (the
        job reports one only once it is stored); None when starting over or if it is gone."""
        from train_jobs.checkpoints import checkpoint_dir_name

        step = task.detail.get("checkpoint_step")
        if not step or task.detail.get("from_scratch"):
            return None
        path = self._root / "checkpoints" / run_name / checkpoint_dir_name(step)
        return str(path) if path.is_dir() else None

    def _poll(self, task: Task) -> None:
        job_id = task.detail.get("job_id")
        if not job_id:
            self._update(task, status="failed", error=JOB_GONE)
            return
        try:
            status = str(self.jobs().get_job_status(job_id)).rsplit(".", 1)[-1]
        except Exception as exc:
            if is_unknown_job(exc):  # this cluster never ran it: a whole-cluster restart
                self._update(task, status="failed", error=JOB_GONE)
            else:  # the dashboard is busy or still starting
                self._count_error(task, "poll", exc)
            return
        if task.detail.get("poll_tries"):
            self._update(task, detail={"poll_tries": 0, "poll_error": None})
        if status == "SUCCEEDED":
            self._finish(task)
        elif status in ("FAILED", "STOPPED"):
            logs = self.jobs().get_job_logs(job_id)[-2000:]
            self._update(task, status="failed", error=f"the training job {status}: {logs}")

    def _finish(self, task: Task) -> None:
        import ray

        req = FineTuneCreate.model_validate(task.detail["request"])
        task = ray.get(self._registry.get_task.remote(task.id))
        after = task.detail.get("metrics_after") or {}
        version = ray.get(
            self._registry.add_version.remote(
                req.embedding_model_id,
                VersionCreate(
                    artifact_uri=str(
                        Path(task.detail["config"]).parent / f"model-run{task.detail.get('run', 1)}"
                    ),
                    metrics=after,
                ),
                task.id,
            )
        )
        promotion = self._promote(task, req, version.version, after)
        self._update(
            task,
            status="done",
            detail={"model_version": version.version, "promotion": promotion},
        )

    def _promote(self, task: Task, req: FineTuneCreate, version: int, after: dict) -> dict | None:
        import ray

        target = req.deploy_to or self._auto_deploy_target(req.embedding_model_id)
        if target is None:
            return None
        record = ray.get(self._registry.get_deployment.remote(target))
        serving = ray.get(self._registry.get_version.remote(record.model_id, record.model_version))
        # Compare on the same held-out pairs where possible: the base model's score from this
        # run when it is the serving version, else the serving version's recorded score.
        if record.model_version == task.detail.get("base_version"):
            baseline = (task.detail.get("metrics_before") or {}).get(PRIMARY_METRIC)
        else:
            baseline = serving.metrics.get(PRIMARY_METRIC)
        new = after.get(PRIMARY_METRIC)
        out = {"deployment": target, "metric": PRIMARY_METRIC, "new": new, "serving": baseline}
        if not record.skip_metrics_check and (
            new is None or (baseline is not None and new < baseline)
        ):
            return {
                **out,
                "promoted": False,
                "reason": f"{PRIMARY_METRIC} {new} < serving {baseline}",
            }
        rollout = ray.get(self._registry.start_rollout.remote(target, version, RolloutOptions()))
        return {**out, "promoted": True, "rollout_task": rollout.id}

    def _auto_deploy_target(self, model_id: str) -> str | None:
        import ray

        for d in ray.get(self._registry.list_deployments.remote()):
            if d.model_id == model_id and d.auto_deploy and d.status == "ACTIVE":
                return d.name
        return None

    def cancel(self, task_id: str) -> Task:
        import ray

        task = ray.get(self._registry.get_task.remote(task_id, "fine_tuning"))
        if task.final:
            return task
        job_id = task.detail.get("job_id")
        if job_id:
            try:
                self.jobs().stop_job(job_id)
                _wait_job_stopped(self.jobs(), job_id, timeout_s=25)
            except RuntimeError as exc:
                if not is_unknown_job(exc):  # unknown: it went with an earlier cluster
                    raise
        # The loop may have seen the stopped job meanwhile and failed the task: the cancel
        # wins over that, so this update does not refuse a finished task.
        return ray.get(
            self._registry.update_task.remote(
                task_id, ANY_STATE, status="canceled", error="canceled by request"
            )
        )


def _refusal(req: FineTuneCreate) -> str | None:
    """A request that can never run: more GPUs than the whole cluster has."""
    import ray

    gpus = req.params.num_workers * (
        (req.params.resources_per_worker or {}).get("GPU", 1.0) if req.params.use_gpu else 0.0
    )
    total = ray.cluster_resources().get("GPU", 0.0)
    if gpus > total:
        return (
            f"needs GPU={gpus:g} ({req.params.num_workers} workers) but the cluster has "
            f"GPU={total:g} in total"
        )
    return None


def _job_env() -> dict[str, str]:
    keep = ("PYTHONPATH", "HF_HUB_OFFLINE", "MODELYARD_STORAGE_ROOT")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _wait_job_stopped(client: Any, job_id: str, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if str(client.get_job_status(job_id)).rsplit(".", 1)[-1] in (
            "STOPPED",
            "FAILED",
            "SUCCEEDED",
        ):
            return
        time.sleep(0.5)
