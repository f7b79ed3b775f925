"""The fine-tuning commands (tune, logs, cancel, restart) against ``httpx.MockTransport``."""

from __future__ import annotations

import json

import httpx

from tests.unit.client_support import PAIRS, PATH, error, ft_task, run, steps


def test_tune_sends_inline_pairs_from_a_local_file_and_the_params_given(serve, tmp_path):  # noqa: F811
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n\n")
    server = serve({("POST", PATH): httpx.Response(202, json=ft_task())})
    result = run(
        "tune", "m", "--pairs-file", str(pairs_file), "--max-steps", "6", "--batch-size", "4",
        "--params", '{"learning_rate": 0.001, "max_steps": 99}', "--deploy-to", "d",
        "--idempotency-key", "k1", "--no-gpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fine_tuning ft-1: pending (step 0/6" in result.stdout
    assert server.bodies("POST") == [
        {
            "embedding_model_id": "m",
            "dataset": {"pairs": PAIRS},
            "params": {"learning_rate": 0.001, "max_steps": 6, "batch_size": 4, "use_gpu": False},
            "idempotency_key": "k1",
            "deploy_to": "d",
        }
    ]


def test_tune_wait_shows_the_bar_and_the_metrics(serve, no_sleep):  # noqa: F811
    done = ft_task("done", 6, model_version=2, metrics_before={"recall@1": 0.5},
                   metrics_after={"recall@1": 0.75})  # fmt: skip
    serve(
        {
            ("POST", PATH): httpx.Response(202, json=ft_task()),
            ("GET", f"{PATH}/ft-1"): steps(ft_task("processing", 3), done),
        }
    )
    result = run("tune", "m", "--dataset", "/data/pairs.jsonl", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "fine_tuning ft-1: done (step 6/6, loss 0.0714, model v2)" in result.stdout
    assert "recall@1: 0.5000 -> 0.7500" in result.stdout
    assert "6/6" in result.stderr and "loss 0.0714" in result.stderr  # the bar, at its end


def test_tune_wait_exits_1_when_the_task_fails(serve, no_sleep):  # noqa: F811
    failed = ft_task("failed", 2) | {"error": "the training job FAILED: out of memory"}
    serve(
        {
            ("POST", PATH): httpx.Response(202, json=ft_task()),
            ("GET", f"{PATH}/ft-1"): steps(ft_task("processing", 1), failed),
        }
    )
    result = run("tune", "m", "--dataset", "/data/pairs.jsonl", "--wait")
    assert result.exit_code == 1
    assert "fine_tuning task ft-1 failed: the training job FAILED: out of memory" in result.stderr


def test_tune_server_errors_exit_1_with_the_message(serve):  # noqa: F811
    serve({("POST", PATH): error(422, "invalid_input", "dataset: pairs[5]: needs 'positive'")})
    result = run("tune", "m", "--dataset", "/data/pairs.jsonl")
    assert result.exit_code == 1
    assert "pairs[5]: needs 'positive'" in result.stderr and "request id: rid-1" in result.stderr


def test_tune_usage_errors_exit_2_and_send_nothing(serve, tmp_path):  # noqa: F811
    server = serve({})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for args in (
        ("tune", "m"),
        ("tune", "m", "--dataset", "x", "--pairs-file", str(bad)),
        ("tune", "m", "--pairs-file", str(bad)),
        ("tune", "m", "--pairs-file", str(empty)),
        ("tune", "m", "--pairs-file", str(tmp_path / "missing.jsonl")),
        ("tune", "m", "--dataset", "x", "--params", "[1]"),
        ("tune", "m", "--dataset", "x", "--params", '{"max_step": 3}'),
        ("tune", "m", "--dataset", "x", "--batch-size", "1"),
        ("logs",),
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
    assert "line 2" in run("tune", "m", "--pairs-file", str(bad)).output
    assert server.seen == []


def test_logs_cancel_restart(serve, no_sleep):  # noqa: F811
    server = serve(
        {
            ("GET", f"{PATH}/ft-1"): ft_task("processing", 2),
            ("GET", f"{PATH}/ft-1/logs"): {"task_id": "ft-1", "logs": "step 2 loss 0.25"},
            ("PUT", f"{PATH}/ft-1/cancel"): ft_task("canceled", 2),
            ("PUT", f"{PATH}/ft-1/restart"): httpx.Response(202, json=ft_task("pending", 2)),
        }
    )
    assert run("logs", "ft-1").stdout == "step 2 loss 0.25\n"
    canceled = run("cancel", "ft-1")
    assert canceled.exit_code == 0 and "fine_tuning ft-1: canceled" in canceled.stdout
    restarted = run("restart", "ft-1", "--from-scratch")
    assert restarted.exit_code == 0 and "fine_tuning ft-1: pending" in restarted.stdout
    assert server.bodies("PUT") == [None, {"from_scratch": True}]
    server.routes[("PUT", f"{PATH}/ft-1/restart")] = error(
        409, "conflict", "task ft-1 is processing; cancel it first"
    )
    refused = run("restart", "ft-1")
    assert refused.exit_code == 1 and "cancel it first" in refused.stderr


def test_unknown_task_exits_1(serve):  # noqa: F811
    serve({("GET", f"{PATH}/nope"): error(404, "not_found", "task 'nope' not found")})
    for command in ("logs", "cancel", "restart"):
        result = run(command, "nope")
        assert result.exit_code == 1 and "404 not_found" in result.stderr, command


def test_tasks_shows_training_progress(serve):  # noqa: F811
    page = {"items": [ft_task("processing", 3)], "total": 1, "offset": 0, "limit": 50}
    server = serve({("GET", "/v1/tasks"): page})
    result = run("tasks", "--kind", "fine_tuning", "--status", "processing")
    assert result.exit_code == 0, result.output
    assert "ft-1" in result.stdout and "step 3/6, loss 0.1250" in result.stdout
    assert server.seen[-1][2]["kind"] == "fine_tuning"
