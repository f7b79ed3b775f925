"""How the client shows a task while it waits: one-line descriptions, a spinner for deploy,
delete and rollout tasks, a bar of steps and loss for fine-tuning. Rich, on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cluster.schemas import Task

Show = Callable[[Task], None]


def describe_task(task: Task) -> str:
    """One line: kind, id, status and, as the task has them, its phase, traffic share,
    allocation state, training step and loss, and reason."""
    text = f"{task.kind} {task.id}: {task.status}"
    detail = task.detail
    notes = [
        detail.get("phase"),
        detail.get("allocation_state"),
        training_note(task),
        batch_note(task),
    ]
    if (percent := detail.get("traffic_percent")) is not None and detail.get("phase") == "shifting":
        notes.append(f"{percent}% on v{detail.get('to_version', '?')}")
    if notes := [str(n) for n in notes if n]:
        text += f" ({', '.join(notes)})"
    if reason := task.error or detail.get("reason"):
        text += f" - {reason}"
    return text


def training_note(task: Task) -> str | None:
    """``step 4/6, loss 0.1234`` (and the new version once done) for a fine-tuning task."""
    if task.kind != "fine_tuning":
        return None
    progress: dict[str, Any] = task.detail.get("progress") or {}
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    parts = [f"step {step}/{total or '?'}"]
    if (loss := progress.get("loss")) is not None:
        parts.append(f"loss {loss:.4f}")
    if (version := task.detail.get("model_version")) is not None:
        parts.append(f"model v{version}")
    return ", ".join(parts)


def batch_note(task: Task) -> str | None:
    """``rows 5000/10000 (50.0%), 2 errors`` for a batch-prediction task."""
    if task.kind != "batch_prediction":
        return None
    progress: dict[str, Any] = task.detail.get("progress") or {}
    done, total = progress.get("rows_done") or 0, progress.get("rows_total")
    text = f"rows {done}/{total if total is not None else '?'} ({progress.get('percent', 0.0)}%)"
    return text + (f", {errors} errors" if (errors := progress.get("errors")) else "")


@contextmanager
def spinner(enabled: bool, task_id: str) -> Iterator[Show]:
    """A rich spinner on stderr showing the task's status; a no-op when not ``enabled``."""
    if not enabled:
        yield lambda task: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(task_id, total=None)
        yield lambda task: progress.update(bar, description=describe_task(task))


@contextmanager
def training_bar(enabled: bool, task_id: str) -> Iterator[Show]:
    """A rich bar on stderr of a fine-tuning task's steps, with its status and last loss;
    a no-op when not ``enabled``. The bar pulses until the job reports its step count."""
    if not enabled:
        yield lambda task: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps, loss {task.fields[loss]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(task_id, total=None, loss="-")

        def show(task: Task) -> None:
            step = task.detail.get("progress") or {}
            loss = step.get("loss")
            progress.update(
                bar,
                description=f"fine-tuning {task.id}: {task.status}",
                total=step.get("total_steps") or None,
                completed=step.get("step") or 0,
                loss=f"{loss:.4f}" if loss is not None else "-",
            )

        yield show
