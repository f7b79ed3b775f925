"""Fine-tuning commands: tune (with a live bar of steps and loss), logs, cancel, restart.
``tasks --kind fine_tuning`` lists them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cluster.cli.common import (
    Key,
    Timeout,
    Url,
    Wait,
    app,
    connect,
    console,
    parse_json_object,
    usage,
)
from cluster.client import FineTuningTask, describe_task

TaskId = Annotated[str, typer.Argument(help="Fine-tuning task id.")]
PANEL = "Fine-tuning"


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a local JSONL file, one a line (blank lines skipped); the server
    checks their fields and names the pair at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise usage(f"cannot read {path}: {exc.strerror or exc}", "--pairs-file") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pairs.append(json.loads(line))
        except ValueError as exc:
            raise usage(f"{path} line {number} is not JSON: {exc}", "--pairs-file") from None
    if not pairs:
        raise usage(f"{path} holds no pairs", "--pairs-file")
    return pairs


def _dataset(uri: str | None, pairs_file: Path | None) -> str | list[dict[str, Any]]:
    if (uri is None) == (pairs_file is None):
        raise usage("give exactly one of them", "--dataset / --pairs-file")
    return read_pairs(pairs_file) if pairs_file is not None else str(uri)


def _params(given: dict[str, Any], extra: str | None) -> dict[str, Any]:
    """``--params`` JSON, with the named options laid over it."""
    params = parse_json_object(extra, "--params") if extra is not None else {}
    params.update({k: v for k, v in given.items() if v is not None})
    return params


def _print(task: FineTuningTask) -> None:
    console.print(escape(describe_task(task.info)), soft_wrap=True, highlight=False)
    before, after = task.metrics_before, task.metrics_after
    for name in sorted(set(before) | set(after)):
        change = f"{before.get(name, float('nan')):.4f} -> {after.get(name, float('nan')):.4f}"
        console.print(f"  {name}: {change}", highlight=False)


@app.command(rich_help_panel=PANEL)
def tune(
    model_id: Annotated[str, typer.Argument(help="Sentence-transformer model to fine-tune.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="JSONL path or URI the server reads (a path under its storage root)."),
    ] = None,
    pairs_file: Annotated[
        Path | None,
        typer.Option(help='Local JSONL of {"anchor", "positive"} lines, sent inline.'),
    ] = None,
    version: Annotated[int | None, typer.Option(help="Base version (default: latest).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Exactly this many steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step per worker.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers.")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--no-gpu", help="Train on GPUs.")] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="Held out for metrics.")] = None,
    params: Annotated[str | None, typer.Option(help="More training params, a JSON object.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Same key: same task.")] = None,
    deploy_to: Annotated[
        str | None, typer.Option(help="Deployment to swap the result into if no worse.")
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 3600,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Start a fine-tuning task; --wait shows a live bar of its steps and loss."""
    named = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
             "learning_rate": learning_rate, "num_workers": workers, "use_gpu": gpu,
             "eval_fraction": eval_fraction}  # fmt: skip
    source, training = _dataset(dataset, pairs_file), _params(named, params)
    with connect(url, api_key) as client:
        task = client.create_fine_tuning_task(
            model_id,
            source,
            version=version,
            params=training or None,
            idempotency_key=idempotency_key,
            deploy_to=deploy_to,
        )
        if wait:
            task.wait(timeout=timeout, progress=True)
        _print(task)


@app.command(rich_help_panel=PANEL)
def logs(task_id: TaskId, url: Url = None, api_key: Key = None) -> None:
    """Print a fine-tuning task's training log so far."""
    with connect(url, api_key) as client:
        typer.echo(client.get_fine_tuning_task(task_id).logs())


@app.command(rich_help_panel=PANEL)
def cancel(task_id: TaskId, url: Url = None, api_key: Key = None) -> None:
    """Cancel a fine-tuning task: its training job stops and frees its resources."""
    with connect(url, api_key) as client:
        task = client.get_fine_tuning_task(task_id)
        task.cancel()
        _print(task)


@app.command(rich_help_panel=PANEL)
def restart(
    task_id: TaskId,
    from_scratch: Annotated[
        bool, typer.Option(help="Start over instead of resuming from the newest checkpoint.")
    ] = False,
    wait: Wait = False,
    timeout: Timeout = 3600,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Run an ended fine-tuning task again, from its newest checkpoint by default."""
    with connect(url, api_key) as client:
        task = client.get_fine_tuning_task(task_id)
        task.restart(from_scratch=from_scratch)
        if wait:
            task.wait(timeout=timeout, progress=True)
        _print(task)
