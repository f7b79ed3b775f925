"""Batch-prediction tasks without Ray: the registry's records and the operator's runner
that submits and follows their Ray Jobs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster import errors
from cluster.jobs.batch_job import actor_options
from cluster.registry.actor import RegistryCore
from cluster.schemas import BatchPredictCreate, DeploymentConfig, DeployRequest, ModelCreate


def req(**fields) -> BatchPredictCreate:
    return BatchPredictCreate.model_validate(
        {"input_uri": "in.jsonl", "output_uri": "out.jsonl"} | fields
    )


# ------------------------------------------------------------------ registry


@pytest.fixture
def reg(tmp_path) -> RegistryCore:
    reg = RegistryCore(tmp_path / "r.db")
    reg.register_model(ModelCreate(model_id="emb", kind="sentence-transformer", artifact_uri="/m"))
    config = DeploymentConfig(resources={"num_cpus": 2})
    reg.create_deploy_task(DeployRequest(model_id="emb", deployment_name="emb", config=config))
    return reg


def test_create_pins_version_and_resources(reg, tmp_path):
    task = reg.create_batch_task("emb", req())
    assert task.kind == "batch_prediction" and task.status == "pending"
    assert task.deployment_name == "emb" and task.model_id == "emb"
    assert task.detail["model_version"] == 1
    assert task.detail["spec"]["artifact_uri"] == "/m"
    assert task.detail["resources"]["num_cpus"] == 2
    assert task.detail["progress"]["rows_done"] == 0
    with pytest.raises(errors.NotFound):
        reg.create_batch_task("nope", req())
    with pytest.raises(errors.Conflict, match="is writing to out.jsonl"):
        reg.create_batch_task("emb", req(input_uri="other.jsonl"))
    assert reg.list_batch_tasks("emb").total == 1
    # Nothing lost across a restart.
    assert RegistryCore(tmp_path / "r.db").get_task(task.id).detail == task.detail


def test_num_cpus_per_copy_replaces_only_the_cpus(reg):
    task = reg.create_batch_task("emb", req(concurrency=2, num_cpus_per_copy=1))
    assert task.detail["resources"] == {"num_gpus": 0, "num_cpus": 1, "memory": None}
    assert actor_options(task.detail["resources"]) == {"num_gpus": 0, "num_cpus": 1}
    # The deployment itself keeps its resources.
    assert reg.get_deployment("emb").config.resources.num_cpus == 2
    with pytest.raises(ValidationError):
        req(num_cpus_per_copy=0)


def test_progress_finish_and_cancel(reg):
    task = reg.create_batch_task("emb", req())
    assert reg.report_batch_progress(task.id, {"rows_done": 5, "percent": 50.0})
    current = reg.get_task(task.id)
    assert current.status == "processing" and current.detail["progress"]["rows_done"] == 5
    assert reg.finish_batch(task.id, {"rows_done": 10, "percent": 100.0}).status == "done"
    assert not reg.report_batch_progress(task.id, {"rows_done": 10})  # ended: the job stops
    other = reg.create_batch_task("emb", req())
    reg.update_task(other.id, status="canceled", error="canceled by request")
    assert not reg.report_batch_progress(other.id, {"rows_done": 1})
    assert reg.get_task(other.id).detail["progress"]["rows_done"] == 0


# ------------------------------------------------------------------ the operator's runner


class Remote:
    """A registry handle whose ``.remote`` calls run at once (with ``ray.get`` the identity)."""

    def __init__(self, core: RegistryCore) -> None:
        self._core = core

    def __getattr__(self, name: str):
        return type("Method", (), {"remote": staticmethod(getattr(self._core, name))})


class FakeJobs:
    def __init__(self, status: str | None = None, submit_error: Exception | None = None):
        self.status, self.submit_error = status, submit_error
        self.submitted: list[dict] = []
        self.stopped: list[str] = []

    def get_job_status(self, job_id: str) -> str:
        if self.status is None:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return f"JobStatus.{self.status}"

    def submit_job(self, **kwargs) -> str:
        if self.submit_error:
            raise self.submit_error
        self.submitted.append(kwargs)
        self.status = "PENDING"
        return kwargs["submission_id"]

    def get_job_logs(self, job_id: str) -> str:
        return "Traceback ... ValueError: boom"

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


@pytest.fixture
def runner(reg, monkeypatch):
    import ray

    from cluster.jobs.batch_runner import BatchRunner

    monkeypatch.setattr(ray, "get", lambda x: x)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": 0.0})

    def make(jobs: FakeJobs) -> BatchRunner:
        runner = BatchRunner(Remote(reg), None)
        runner._client = jobs
        return runner

    return make


def test_runner_submits_once_then_follows_the_job(reg, runner):
    jobs = FakeJobs()
    task = reg.create_batch_task("emb", req())
    runner(jobs).tick([reg.get_task(task.id)])
    assert [j["submission_id"] for j in jobs.submitted] == [task.id]
    assert "-m cluster.jobs.batch_job --task-id " + task.id in jobs.submitted[0]["entrypoint"]
    current = reg.get_task(task.id)
    assert current.status == "processing" and current.detail["job_id"] == task.id
    runner(jobs).tick([current])
    assert reg.get_task(task.id).status == "processing"
    jobs.status = "SUCCEEDED"
    runner(jobs).tick([current])
    assert reg.get_task(task.id).status == "done"


def test_runner_polls_a_running_job_every_few_seconds_not_every_tick(reg, runner):
    jobs = FakeJobs(status="RUNNING")
    polls = []
    jobs.get_job_status = lambda job_id: polls.append(job_id) or "RUNNING"
    now = [100.0]
    one = runner(jobs)
    one._clock = lambda: now[0]
    task = reg.create_batch_task("emb", req())
    reg.report_batch_progress(task.id, {"rows_done": 3})
    for step in (0.0, 0.5, 4.0, 0.6, 0.5):  # at 100, 100.5, 104.5, 105.1, 105.6
        now[0] += step
        one.tick([reg.get_task(task.id)])
    assert len(polls) == 2  # at 100 and at 105.1
    assert one.poll_every_s == 5.0


def test_runner_does_not_submit_twice_after_an_operator_restart(reg, runner):
    task = reg.create_batch_task("emb", req())
    jobs = FakeJobs(status="RUNNING")  # submitted before the operator lost its update
    runner(jobs).tick([task])
    assert jobs.submitted == [] and reg.get_task(task.id).status == "processing"


class BusyJobs(FakeJobs):
    """A Jobs API that answers 503 (busy, or still starting) for every status."""

    def get_job_status(self, job_id: str) -> str:
        raise RuntimeError("Request failed with status code 503: busy.")


def test_a_busy_jobs_api_neither_fails_nor_submits(reg, runner):
    task = reg.create_batch_task("emb", req())
    busy = BusyJobs()
    runner(busy).tick([task])
    assert busy.submitted == [] and reg.get_task(task.id).status == "pending"
    reg.report_batch_progress(task.id, {"rows_done": 3})
    runner(busy).tick([reg.get_task(task.id)])
    assert reg.get_task(task.id).status == "processing"


def test_runner_fails_a_task_whose_job_is_gone_or_failed(reg, runner):
    gone = reg.create_batch_task("emb", req())
    reg.report_batch_progress(gone.id, {"rows_done": 3})  # processing, then the cluster restarted
    runner(FakeJobs(status=None)).tick([reg.get_task(gone.id)])
    task = reg.get_task(gone.id)
    assert task.status == "failed" and "cluster restarted" in task.error
    failed = reg.create_batch_task("emb", req(output_uri="o2.jsonl"))
    reg.report_batch_progress(failed.id, {"rows_done": 3})
    runner(FakeJobs(status="FAILED")).tick([reg.get_task(failed.id)])
    assert "ValueError: boom" in reg.get_task(failed.id).error


def test_runner_refuses_what_the_cluster_cannot_hold_and_retries_submits(reg, runner):
    big = reg.create_batch_task("emb", req(concurrency=3))  # 3 x 2 CPUs > 4
    runner(FakeJobs()).tick([big])
    assert reg.get_task(big.id).status == "refused"
    task = reg.create_batch_task("emb", req(output_uri="o2.jsonl"))
    runner(FakeJobs(submit_error=RuntimeError("try again later"))).tick([task])
    current = reg.get_task(task.id)
    assert current.status == "pending" and current.detail["submit_tries"] == 1


def test_cancel_marks_the_task_then_stops_its_job(reg, runner):
    jobs = FakeJobs()
    pending = reg.create_batch_task("emb", req())
    assert runner(jobs).cancel(pending.id).status == "canceled"
    assert jobs.stopped == [] and jobs.submitted == []
    running = reg.create_batch_task("emb", req())
    runner(jobs).tick([running])
    assert runner(jobs).cancel(running.id).status == "canceled"
    assert jobs.stopped == [running.id]
    assert runner(jobs).cancel(running.id).error == "canceled by request"  # idempotent
