"""Fine-tuning tasks run as Ray Jobs (``python -m train_jobs.finetune``), driven by the operator.

    pending --submit Ray Job--> processing --job SUCCEEDED--> register version --> done
       |                           |  job FAILED --> failed (with the log's last lines)
       +--needs more GPUs than     |  cancel --> ray job stop --> canceled
          the cluster has: refused +  job unknown (cluster restarted) --> failed, restartable

The job reports progress straight to the registry (``report_progress``). Restart submits a
new job under the same run name, which resumes from the run's newest checkpoint, unless
``from_scratch`` picks a new run name.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from cluster.schemas import FineTuneCreate, RolloutOptions, Task, VersionCreate
from cluster.settings import REGISTRY_ACTOR

logger = logging.getLogger("modelyard.finetune")

PRIMARY_METRIC = "recall@1"
SUBMIT_TRIES = 240  # ~2 minutes of operator ticks


class FineTuneRunner:
    def __init__(self, registry: Any, storage_root: str, dashboard_url: str | None) -> None:
        self._registry = registry
        self._root = Path(storage_root)
        self._dashboard_url = dashboard_url
        self._client = None

    def jobs(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            url = self._dashboard_url or "http://127.0.0.1:8265"
            self._client = JobSubmissionClient(url if "://" in url else f"http://{url}")
        return self._client

    def tick(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.kind != "fine_tuning":
                continue
            try:
                if task.status == "pending":
                    self._submit(task)
                else:
                    self._poll(task)
            except Exception as exc:  # one bad task must not stop the others
                logger.exception("fine-tuning task %s", task.id)
                self._update(task.id, status="failed", error=f"{type(exc).__name__}: {exc}")

    def _update(self, task_id: str, **fields: Any) -> None:
        import ray

        ray.get(self._registry.update_task.remote(task_id, **fields))

    def _submit(self, task: Task) -> None:
        import ray

        req = FineTuneCreate.model_validate(task.detail["request"])
        refusal = _refusal(req)
        if refusal:
            self._update(task.id, status="refused", error=refusal)
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
            # The job agent may still be starting ("try again later"): retry next tick,
            # for a bounded number of tries.
            tries = task.detail.get("submit_tries", 0) + 1
            if tries >= SUBMIT_TRIES:
                raise
            self._update(task.id, detail={"submit_tries": tries, "submit_error": str(exc)})
            return
        self._update(
            task.id, status="processing", detail={"job_id": job_id, "config": str(config_path)}
        )

    def _write_config(self, task: Task, req: FineTuneCreate, artifact: str, run: int) -> Path:
        from serve_apps.artifacts import resolve

        base = self._root / "finetune" / task.id
        scratch_runs = task.detail.get("scratch_runs", 0) + int(task.detail.get("from_scratch"))
        run_name = f"{task.id}-s{scratch_runs}"  # same name: resume from its checkpoints
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
        base.mkdir(parents=True, exist_ok=True)
        path = base / f"run{run}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _poll(self, task: Task) -> None:
        job_id = task.detail.get("job_id")
        try:
            status = str(self.jobs().get_job_status(job_id))
        except Exception:  # RuntimeError for an unknown job: the cluster was restarted
            self._update(
                task.id,
                status="failed",
                error=(
                    "the training job is gone (the cluster restarted); restart the task to resume "
                    "from its last checkpoint"
                ),
            )
            return
        status = status.rsplit(".", 1)[-1]
        if status == "SUCCEEDED":
            self._finish(task)
        elif status in ("FAILED", "STOPPED"):
            logs = self.jobs().get_job_logs(job_id)[-2000:]
            self._update(task.id, status="failed", error=f"the training job {status}: {logs}")

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
            task.id,
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
        if task.status in ("done", "failed", "canceled", "refused"):
            return task
        job_id = task.detail.get("job_id")
        if job_id:
            self.jobs().stop_job(job_id)
            _wait_job_stopped(self.jobs(), job_id, timeout_s=25)
        return ray.get(
            self._registry.force_task.remote(
                task_id, status="canceled", error="canceled by request"
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
