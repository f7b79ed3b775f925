"""The fine-tuning runner's reading of Job API errors and where a restarted run resumes."""

from __future__ import annotations

import requests

from cluster.jobs.finetune_runner import FineTuneRunner
from cluster.jobs.runner import is_unknown_job
from cluster.schemas import Task


def test_only_a_404_means_the_job_is_gone():
    gone = RuntimeError("Request failed with status code 404: Job x-run1 does not exist.")
    assert is_unknown_job(gone)
    busy = RuntimeError("Request failed with status code 500: try again later.")
    assert not is_unknown_job(busy)
    assert not is_unknown_job(requests.exceptions.ConnectionError("refused"))


def test_a_restart_resumes_from_the_last_checkpoint_the_job_reported(tmp_path):
    runner = FineTuneRunner(registry=None, storage_root=str(tmp_path), dashboard_url=None)
    run_dir = tmp_path / "checkpoints" / "t-s0"
    (run_dir / "checkpoint_0000020").mkdir(parents=True)

    def task(**detail) -> Task:
        return Task(id="t", kind="fine_tuning", detail=detail)

    assert runner._last_checkpoint(task(checkpoint_step=20), "t-s0") == str(
        run_dir / "checkpoint_0000020"
    )
    assert runner._last_checkpoint(task(), "t-s0") is None
    assert runner._last_checkpoint(task(checkpoint_step=30), "t-s0") is None  # not on disk
    assert runner._last_checkpoint(task(checkpoint_step=20, from_scratch=True), "t-s0") is None


class Remote:
    """``registry.method.remote(...)`` on a plain ``RegistryCore`` (with ``ray.get`` as is)."""

    def __init__(self, core) -> None:
        self._core = core

    def __getattr__(self, name: str):
        return type("Method", (), {"remote": staticmethod(getattr(self._core, name))})


def test_the_runners_updates_name_the_run_it_looked_at(tmp_path, monkeypatch):
    import ray

    from cluster.registry.actor import RegistryCore
    from cluster.schemas import FineTuneCreate, ModelCreate

    monkeypatch.setattr(ray, "get", lambda x: x)
    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id="emb", kind="sentence-transformer", artifact_uri="/m"))
    pairs = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(8)]
    req = FineTuneCreate.model_validate({"embedding_model_id": "emb", "dataset": {"pairs": pairs}})
    runner = FineTuneRunner(Remote(reg), str(tmp_path), None)
    seen = runner._update(reg.create_finetune_task(req), status="processing")
    # Canceled and restarted after this tick read the task: its late failure is void.
    reg.update_task(seen.id, status="canceled")
    reg.restart_finetune(seen.id, from_scratch=False)
    assert runner._update(seen, status="failed", error="STOPPED").status == "pending"
    assert runner.cancel(seen.id).status == "canceled"
