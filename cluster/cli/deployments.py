"""Deployment commands: deploy, delete, list, describe, predict, batch-predict, swap, rollback,
stop, start, events. Each parses its options, makes one or two client calls and prints the
answer."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import typer
from rich.live import Live

from cluster.cli import views
from cluster.cli.common import (
    Key,
    Timeout,
    Url,
    Wait,
    app,
    connect,
    console,
    end_task,
    parse_json_object,
    usage,
)
from cluster.client import Client, Deployment, DeploymentFailedError
from cluster.schemas import RolloutOptions, Task

Name = Annotated[str, typer.Argument(help="Deployment name.")]


def _config(replicas: int | None, gpus: float | None, cpus: float | None) -> dict[str, Any]:
    resources = {k: v for k, v in {"num_gpus": gpus, "num_cpus": cpus}.items() if v is not None}
    config: dict[str, Any] = {"resources": resources} if resources else {}
    if replicas is not None:
        config["num_replicas"] = replicas
    return config


@app.command(rich_help_panel="Deployments")
def deploy(
    model_id: Annotated[str, typer.Argument(help="Registered model id.")],
    name: Annotated[
        str | None, typer.Option(help="Deployment name (default: from model id).")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Model version (default: latest).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Number of replicas.")] = None,
    gpus: Annotated[
        float | None, typer.Option(help="GPUs per replica (fractions allowed).")
    ] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs per replica.")] = None,
    wait: Wait = False,
    timeout: Timeout = 600,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Deploy a model version; prints the deploy task."""
    with connect(url, api_key) as client:
        config = _config(replicas, gpus, cpus)
        task = client.deploy(model_id, version, deployment_name=name, config=config)
        end_task(client, task, wait, timeout)


@app.command(rich_help_panel="Deployments")
def delete(
    model: Annotated[
        str | None, typer.Option(help="Delete every deployment of this model.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Delete this deployment.")] = None,
    reason: Annotated[str | None, typer.Option(help="Recorded on the delete task.")] = None,
    wait: Wait = False,
    timeout: Timeout = 300,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Delete one deployment (--name) or every deployment of a model (--model)."""
    if (model is None) == (name is None):
        raise usage("give exactly one of them", "--model / --name")
    with connect(url, api_key) as client:
        task = client.delete(model_id=model, deployment_name=name, reason=reason)
        end_task(client, task, wait, timeout)


@app.command("deployments", rich_help_panel="Deployments")
def list_deployments(url: Url = None, api_key: Key = None) -> None:
    """List deployments: version, status, replicas and traffic split."""
    with connect(url, api_key) as client:
        console.print(views.deployments_table(client.list_deployments()))


@app.command(rich_help_panel="Deployments")
def describe(name: Name, url: Url = None, api_key: Key = None) -> None:
    """Show a deployment: config, traffic split, rollout phase and allocation (replicas)."""
    with connect(url, api_key) as client:
        console.print(views.describe(client.get_deployment(name).info))


@app.command(rich_help_panel="Deployments")
def predict(
    name: Name,
    texts: Annotated[
        list[str] | None, typer.Option("--texts", help="A text to embed; repeat for more.")
    ] = None,
    args: Annotated[
        str | None, typer.Option(help="The predictor's arguments, a JSON object.")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Pin a live model version.")] = None,
    request_id: Annotated[str | None, typer.Option(help="Echoed back in the answer.")] = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Run one prediction and print the answer as JSON."""
    if (texts is None) == (args is None):
        raise usage("give either --texts (one or more) or --args JSON", "--texts / --args")
    arguments = {"texts": texts} if texts is not None else parse_json_object(args or "", "--args")
    with connect(url, api_key) as client:
        out = client.predict(name, arguments, request_id=request_id, version=version)
        typer.echo(json.dumps(out.model_dump(mode="json")))


@app.command("batch-predict", rich_help_panel="Deployments")
def batch_predict(
    name: Name,
    input_uri: Annotated[str, typer.Argument(help="JSONL input: a path under the storage root.")],
    output_uri: Annotated[
        str, typer.Argument(help="JSONL output: a path relative to <storage root>/outputs.")
    ],
    batch_size: Annotated[int | None, typer.Option(help="Rows per model call.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Model copies (Ray actors).")] = None,
    num_cpus_per_copy: Annotated[
        float | None, typer.Option(help="CPUs of each copy (default: the deployment's).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the output if it exists.")] = False,
    wait: Wait = False,
    timeout: Timeout = 3600,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Run a JSONL file through the deployment's model version as a Ray Data job; output
    rows keep the input's order and ids. Prints the batch-prediction task."""
    with connect(url, api_key) as client:
        task = client.get_deployment(name).batch_predict(
            input_uri,
            output_uri,
            batch_size=batch_size,
            concurrency=concurrency,
            overwrite=overwrite,
            num_cpus_per_copy=num_cpus_per_copy,
        )
        end_task(client, task, wait, timeout)


def _steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise usage(f"percentages separated by commas, got '{text}'", "--steps") from None


@app.command(rich_help_panel="Deployments")
def swap(
    name: Name,
    version: Annotated[int, typer.Argument(help="Model version to serve.")],
    steps: Annotated[str | None, typer.Option(help="Traffic steps in %, e.g. 10,50,100.")] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds per step.")] = None,
    strategy: Annotated[
        Literal["green", "in_place"] | None,
        typer.Option(help="green: a second copy beside the old; in_place: replace replicas."),
    ] = None,
    max_error_rate: Annotated[float | None, typer.Option(help="Roll back above this.")] = None,
    max_p99_ms: Annotated[float | None, typer.Option(help="Roll back above this p99.")] = None,
    min_requests: Annotated[int | None, typer.Option(help="Requests to judge a step.")] = None,
    watch: Annotated[bool, typer.Option(help="Show the swap live until it ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to watch at most.")] = 1800,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Swap a deployment to another model version, moving traffic step by step."""
    rollout = {
        "steps": _steps(steps),
        "step_interval_s": interval,
        "strategy": strategy,
        "max_error_rate": max_error_rate,
        "max_p99_latency_ms": max_p99_ms,
        "min_requests_per_step": min_requests,
    }
    options = {k: v for k, v in rollout.items() if v is not None}
    with connect(url, api_key) as client:
        RolloutOptions.model_validate(options)  # a usage error before anything is sent
        deployment = client.get_deployment(name)
        task = deployment.set_model_version(version, rollout=options or None)
        if watch and not task.final:
            task = _watch(client, deployment, task, timeout)
        end_task(client, task, wait=False, timeout=timeout)


def _watch(client: Client, deployment: Deployment, task: Task, timeout: float) -> Task:
    """Redraw the swap (task, phase, traffic split) until its task ends."""
    deadline = time.monotonic() + timeout
    with Live(views.swap_view(task, deployment.info), console=console, auto_refresh=False) as live:
        while not task.final:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task.id} still {task.status} after {timeout:g}s")
            time.sleep(0.5)
            task = client.get_task(task.id)
            live.update(views.swap_view(task, deployment.refresh()), refresh=True)
    return task


@app.command(rich_help_panel="Deployments")
def rollback(
    name: Name, wait: Wait = False, timeout: Timeout = 600, url: Url = None, api_key: Key = None
) -> None:
    """Mid-swap: all traffic back to the serving version. After one: swap back."""
    with connect(url, api_key) as client:
        end_task(client, client.get_deployment(name).rollback(), wait, timeout)


@app.command(rich_help_panel="Deployments")
def stop(name: Name, url: Url = None, api_key: Key = None) -> None:
    """Release a deployment's replicas (and GPUs); it keeps its config for start."""
    with connect(url, api_key) as client:
        info = client.get_deployment(name).stop()
        console.print(f"{info.name}: {views.styled(info.status)}")


@app.command(rich_help_panel="Deployments")
def start(
    name: Name, wait: Wait = False, timeout: Timeout = 600, url: Url = None, api_key: Key = None
) -> None:
    """Start a stopped deployment's replicas again."""
    with connect(url, api_key) as client:
        deployment = client.get_deployment(name)
        info = deployment.start()
        if wait:
            info = deployment.wait_for_pending_deployment_update(timeout)
            if info.status == "FAILED":
                raise DeploymentFailedError(info)
        console.print(f"{info.name}: {views.styled(info.status)}")


@app.command(rich_help_panel="Deployments")
def events(name: Name, url: Url = None, api_key: Key = None) -> None:
    """What happened to a deployment: swaps, steps, rollbacks, stops, starts."""
    with connect(url, api_key) as client:
        console.print(views.events_table(client.get_deployment(name).events()))
