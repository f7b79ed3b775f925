"""``FineTuningTask`` and the client's fine-tuning calls against ``httpx.MockTransport``."""

from __future__ import annotations

import httpx
import pytest

from cluster.client import (
    BadRequestError,
    ConflictError,
    FineTuneProgress,
    FineTuningPage,
    FineTuningTask,
    TaskFailedError,
    describe_task,
)
from cluster.schemas import Task
from tests.unit.client_support import NOW, PAIRS, PATH, Server, error, ft_task, make_client, steps


def test_create_sends_the_request_built_from_what_the_caller_has(tmp_path, monkeypatch):
    server = Server({("POST", PATH): httpx.Response(202, json=ft_task())})
    monkeypatch.chdir(tmp_path)
    with make_client(server) as client:
        task = client.create_fine_tuning_task(
            "m", PAIRS, version=2, params={"max_steps": 6}, idempotency_key="k1", deploy_to="d"
        )
        client.create_fine_tuning_task("m", "data/pairs.jsonl")
        client.create_fine_tuning_task("m", "s3://bucket/pairs.jsonl")
    assert isinstance(task, FineTuningTask) and task.id == "ft-1" and task.status == "pending"
    inline, local, remote = server.bodies("POST")
    assert inline == {
        "embedding_model_id": "m",
        "dataset": {"pairs": PAIRS},
        "version": 2,
        "params": {"max_steps": 6},
        "idempotency_key": "k1",
        "deploy_to": "d",
    }
    assert local == {
        "embedding_model_id": "m",
        "dataset": {"uri": str(tmp_path / "data" / "pairs.jsonl")},
    }
    assert remote["dataset"] == {"uri": "s3://bucket/pairs.jsonl"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": [{"anchor": "only"}]}, "positive"),
        ({"dataset": PAIRS, "params": {"max_step": 3}}, "max_step"),
        ({"dataset": PAIRS, "params": {"batch_size": 1}}, "batch_size"),
        ({"dataset": {"uri": "x", "pairs": PAIRS}}, "exactly one"),
    ],
)
def test_bad_requests_fail_before_sending(kwargs, match):
    server = Server({})
    with make_client(server) as client, pytest.raises(ValueError, match=match):
        client.create_fine_tuning_task("m", **kwargs)
    assert server.seen == []


def test_server_refusals_are_typed_errors_with_message_and_request_id():
    server = Server({("POST", PATH): error(422, "invalid_input", "dataset: line 2: not JSON")})
    with make_client(server) as client, pytest.raises(BadRequestError) as info:
        client.create_fine_tuning_task("m", "/root/pairs.jsonl")
    assert info.value.message == "dataset: line 2: not JSON" and info.value.request_id == "rid-1"
    server.routes[("POST", PATH)] = error(409, "conflict", "idempotency_key 'k' was used")
    with make_client(server) as client, pytest.raises(ConflictError, match="was used"):
        client.create_fine_tuning_task("m", PAIRS, idempotency_key="k")


def test_list_and_get():
    page = {"items": [ft_task("done", 6), ft_task("failed", 2)], "total": 9, "offset": 2,
            "limit": 2}  # fmt: skip
    server = Server({("GET", PATH): page, ("GET", f"{PATH}/ft-1"): ft_task("processing", 3)})
    with make_client(server) as client:
        out = client.list_fine_tuning_tasks(offset=2, limit=2, status="done")
        client.list_fine_tuning_tasks()
        got = client.get_fine_tuning_task("ft-1")
    assert isinstance(out, FineTuningPage) and (out.total, out.offset, out.limit) == (9, 2, 2)
    assert [t.status for t in out] == ["done", "failed"] and len(out) == 2
    assert all(isinstance(t, FineTuningTask) for t in out.items)
    assert [params for _, _, params, _ in server.seen[:2]] == [
        {"offset": "2", "limit": "2", "status": "done"},
        {"offset": "0", "limit": "50"},
    ]
    assert got.progress == FineTuneProgress(
        step=3, total_steps=6, percent=50.0, epoch=0.5, loss=0.125, eta_s=1.0
    )
    assert repr(got) == "FineTuningTask('ft-1', processing, step 3/6)"


def test_wait_shows_steps_and_returns_the_final_task(no_sleep):  # noqa: F811
    done = ft_task("done", 6, model_version=2, metrics_before={"mrr": 0.5},
                   metrics_after={"mrr": 0.75})  # fmt: skip
    answers = steps(ft_task("processing", 2), ft_task("processing", 4), done)
    server = Server({("GET", f"{PATH}/ft-1"): answers})
    with make_client(server) as client:
        task = FineTuningTask(client, Task.model_validate(ft_task()))
        final = task.wait(timeout=60, progress=True)
    assert final.status == "done" and task.model_version == 2
    assert (task.metrics_before, task.metrics_after) == ({"mrr": 0.5}, {"mrr": 0.75})
    assert len(no_sleep) == 2
    assert describe_task(final) == "fine_tuning ft-1: done (step 6/6, loss 0.0714, model v2)"


@pytest.mark.parametrize("status", ["failed", "canceled", "refused"])
def test_wait_raises_when_the_task_does_not_end_done(status, no_sleep):  # noqa: F811
    ended = ft_task(status, 2) | {"error": "the training job FAILED: out of memory"}
    server = Server({("GET", f"{PATH}/ft-1"): steps(ft_task("processing", 1), ended)})
    with make_client(server) as client:
        task = client.get_fine_tuning_task("ft-1")
        with pytest.raises(TaskFailedError, match="out of memory") as info:
            task.wait(timeout=60)
    assert info.value.task.status == status and task.status == status


def test_wait_times_out():
    server = Server({("GET", f"{PATH}/ft-1"): ft_task("processing", 1)})
    with make_client(server) as client:
        task = client.get_fine_tuning_task("ft-1")
        with pytest.raises(TimeoutError, match="ft-1 still processing"):
            task.wait(timeout=0.05, poll_s=0.01)


def test_cancel_restart_logs():
    server = Server(
        {
            ("GET", f"{PATH}/ft-1"): ft_task("processing", 1),
            ("PUT", f"{PATH}/ft-1/cancel"): ft_task("canceled", 1),
            ("PUT", f"{PATH}/ft-1/restart"): httpx.Response(202, json=ft_task("pending", 1)),
            ("GET", f"{PATH}/ft-1/logs"): {"task_id": "ft-1", "logs": "step 1 loss 0.5\n"},
        }
    )
    with make_client(server) as client:
        task = client.get_fine_tuning_task("ft-1")
        assert task.cancel().status == "canceled" and task.status == "canceled"
        assert task.restart().status == "pending" and task.status == "pending"
        task.restart(from_scratch=True)
        assert task.logs() == "step 1 loss 0.5\n"
    assert server.bodies("PUT") == [None, {"from_scratch": False}, {"from_scratch": True}]


def test_restart_of_a_running_task_is_a_conflict():
    server = Server(
        {
            ("GET", f"{PATH}/ft-1"): ft_task("processing", 1),
            ("PUT", f"{PATH}/ft-1/restart"): error(409, "conflict", "task ft-1 is processing"),
        }
    )
    with make_client(server) as client, pytest.raises(ConflictError, match="cancel it first|ft-1"):
        client.get_fine_tuning_task("ft-1").restart()


def test_model_fine_tune_is_create_for_that_model():
    model = {"model_id": "m", "kind": "sentence-transformer", "latest_version": 1,
             "versions": [1], "created_at": NOW}  # fmt: skip
    server = Server({("GET", "/v1/models/m"): model, ("POST", PATH): ft_task()})
    with make_client(server) as client:
        task = client.get_model("m").fine_tune(PAIRS, params={"max_steps": 2})
    assert task.id == "ft-1"
    assert server.bodies("POST") == [
        {"embedding_model_id": "m", "dataset": {"pairs": PAIRS}, "params": {"max_steps": 2}}
    ]
