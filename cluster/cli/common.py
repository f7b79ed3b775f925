"""What every client command shares: the app, consoles, ``--url``/``--api-key`` and
``connect``, the one place that turns failures into messages and exit codes.

Exit codes: 0 done; 1 the server refused or failed (its message and request id on stderr),
or a task ended failed, canceled or refused; 2 bad arguments (a usage error).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cluster.client import (
    Client,
    DeploymentFailedError,
    ModelyardHTTPError,
    TaskFailedError,
    default_url,
    describe_task,
)
from cluster.schemas import FAILED_TASK_STATES, Task

app = typer.Typer(help="modelyard: model serving and fine-tuning on Ray.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

Url = Annotated[
    str | None,
    typer.Option(
        envvar="MODELYARD_URL",
        show_envvar=False,
        help="API URL (env MODELYARD_URL; default http://MODELYARD_HOST:MODELYARD_PORT).",
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MODELYARD_API_KEY",
        show_envvar=False,
        help="Admin key (env MODELYARD_API_KEY; default: the key file under the storage root).",
    ),
]
Wait = Annotated[bool, typer.Option(help="Wait until the task ends, showing its progress.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait at most with --wait.")]


def make_client(url: str | None, api_key: str | None) -> Client:
    """The commands' client; tests replace this to answer with ``httpx.MockTransport``."""
    return Client(url=url or default_url(), api_key=api_key)


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client for one command. Errors end the command: the server's message and request id
    on stderr and exit 1; arguments the schemas reject are a usage error (exit 2)."""
    try:
        client = make_client(url, api_key)
    except ValueError as exc:  # a MODELYARD_PORT that is no port
        raise usage(str(exc)) from None
    try:
        with client:
            yield client
    except ModelyardHTTPError as exc:
        _print_http_error(exc)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        raise usage(_validation_message(exc)) from None
    except httpx.HTTPError as exc:
        reason = escape(str(exc))
        err.print(
            f"[red]error:[/] cannot reach modelyard at {client.url}: {reason}", soft_wrap=True
        )
        raise typer.Exit(1) from None
    except (TimeoutError, DeploymentFailedError, TaskFailedError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _print_http_error(exc: ModelyardHTTPError) -> None:
    kind = f" {exc.type}" if exc.type else ""
    err.print(f"[red]error {exc.status_code}{kind}:[/] {escape(exc.message)}", soft_wrap=True)
    if exc.request_id:
        err.print(f"request id: {exc.request_id}", highlight=False)
    if exc.traceback:
        err.print(escape(exc.traceback), style="dim", soft_wrap=True)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def usage(message: str, option: str | None = None) -> typer.BadParameter:
    """A usage error (exit 2) to ``raise``, naming the ``option`` at fault."""
    return typer.BadParameter(message, param_hint=option)


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise usage(f"not JSON: {exc}", option) from None
    if not isinstance(value, dict):
        raise usage("must be a JSON object", option)
    return value


def end_task(client: Client, task: Task, wait: bool, timeout: float) -> Task:
    """Print the task (after waiting for it with ``wait``); exit 1 if it failed."""
    if wait and not task.final:
        task = client.wait_for_task(task, timeout=timeout, progress=True)
    ok = task.status not in FAILED_TASK_STATES
    (console if ok else err).print(escape(describe_task(task)), soft_wrap=True, highlight=False)
    if not ok:
        raise typer.Exit(1)
    return task
