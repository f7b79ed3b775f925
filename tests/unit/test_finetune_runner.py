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
