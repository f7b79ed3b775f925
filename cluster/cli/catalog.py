"""Model and task commands: models, register, tasks."""

from __future__ import annotations

from typing import Annotated

import typer

from cluster.cli import views
from cluster.cli.common import Key, Url, app, connect, console
from cluster.schemas import ModelKind, TaskKind, TaskStatus


@app.command(rich_help_panel="Models and tasks")
def models(url: Url = None, api_key: Key = None) -> None:
    """List registered models and their versions."""
    with connect(url, api_key) as client:
        console.print(views.models_table(client.list_models()))


@app.command(rich_help_panel="Models and tasks")
def register(
    model_id: Annotated[str, typer.Argument(help="New model id.")],
    kind: Annotated[ModelKind, typer.Option(help="How the model is loaded.")],
    artifact_uri: Annotated[
        str, typer.Option(help="Weights: a path, file://, package:// or a pyarrow URI.")
    ] = "",
    predictor: Annotated[
        str | None, typer.Option(help="'module:Class' to load (torch and custom kinds).")
    ] = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Register a model as version 1."""
    with connect(url, api_key) as client:
        model = client.register_model(
            model_id, kind=kind.value, artifact_uri=artifact_uri, predictor=predictor
        )
        console.print(f"registered {model.model_id} v{model.latest_version} ({model.info.kind})")


@app.command(rich_help_panel="Models and tasks")
def tasks(
    kind: Annotated[TaskKind | None, typer.Option(help="Only tasks of this kind.")] = None,
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (oldest first).")] = 0,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """List tasks (deploy, delete, rollout, fine_tuning), oldest first."""
    with connect(url, api_key) as client:
        page = client.list_tasks(
            kind=kind.value if kind else None,
            status=status.value if status else None,
            offset=offset,
            limit=limit,
        )
        console.print(views.tasks_table(page.items, page.total))
