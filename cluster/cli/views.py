"""Rich renderings of the API's shapes for the client commands (no I/O here)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from cluster.client import Deployment, Model
from cluster.client.progress import training_note
from cluster.schemas import DeploymentEvent, DeploymentPublic, Task

STATUS_STYLE = {
    "ACTIVE": "green", "done": "green", "UPDATING": "yellow", "processing": "yellow",
    "PENDING": "yellow", "DEPLOYING": "yellow", "pending": "yellow", "STOPPED": "dim",
    "FAILED": "red", "failed": "red", "refused": "red", "canceled": "magenta",
}  # fmt: skip
BAR_WIDTH = 30


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def when(at: datetime | None) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def version(v: int | None) -> str:
    return f"v{v}" if v else "-"


def grid(rows: list[tuple[str, str]], title: str | None = None) -> Table:
    """Key/value rows, keys in bold."""
    table = Table.grid(padding=(0, 2))
    if title:
        table.title, table.title_justify = title, "left"
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    return table


def replicas_of(info: DeploymentPublic) -> str:
    alloc = info.allocation
    return f"{alloc.running_replicas}/{alloc.target_replicas}" if alloc else "-"


def traffic_of(info: DeploymentPublic) -> str:
    variants = info.variants()
    if len(variants) == 1:
        return f"100% v{info.model_version}"
    return ", ".join(f"{v['weight']}% v{v['version']}" for v in variants)


def deployments_table(deployments: list[Deployment]) -> Table:
    table = Table("name", "model", "version", "status", "replicas", "traffic", "description")
    for d in deployments:
        i = d.info
        version = f"v{i.model_version}" + (
            f" -> v{i.pending_model_version}" if i.pending_model_version else ""
        )
        table.add_row(
            i.name, i.model_id, version, styled(i.status), replicas_of(i), traffic_of(i),
            escape(i.description),
        )  # fmt: skip
    return table


def describe(info: DeploymentPublic) -> Group:
    """Everything ``GET /v1/deployments/{name}`` says, in four parts."""
    parts: list[Any] = [Panel(_summary(info), title=f"deployment {info.name}", expand=False)]
    parts.append(traffic_table(info))
    if info.rollout is not None:
        parts.append(_rollout_table(info))
    parts.append(_allocation_table(info))
    return Group(*parts)


def _summary(info: DeploymentPublic) -> Table:
    c = info.config
    res = c.resources
    scaling = (
        f"autoscaling {c.autoscaling.min_replicas}..{c.autoscaling.max_replicas}"
        if c.autoscaling
        else f"{c.num_replicas or 1} replica(s)"
    )
    limits = (
        f"max_ongoing {c.max_ongoing_requests}, max_queued {c.max_queued_requests}, "
        f"batch {c.max_batch_size}/{c.batch_wait_timeout_ms:g} ms, "
        f"timeout {c.request_timeout_s:g} s"
    )
    rows = [
        ("model", f"{info.model_id} v{info.model_version}"),
        ("status", styled(info.status)),
        ("pending version", version(info.pending_model_version)),
        ("previous version", version(info.previous_version)),
        ("serve app", info.app_name),
        ("config", f"{scaling}; {res.num_cpus:g} CPU, {res.num_gpus:g} GPU per replica"),
        ("limits", limits),
        ("description", escape(info.description) or "-"),
        ("updated", when(info.updated_at)),
    ]
    if info.error:
        rows.append(("error", f"[red]{escape(info.error)}[/]"))
    return grid(rows)


def traffic_table(info: DeploymentPublic) -> Table:
    table = Table(
        "serve app", "version", "traffic", "", title="traffic split", title_justify="left"
    )
    for v in info.variants():
        filled = round(BAR_WIDTH * v["weight"] / 100)
        bar = "[green]" + "█" * filled + "[/]" + "░" * (BAR_WIDTH - filled)
        table.add_row(v["app"], f"v{v['version']}", f"{v['weight']}%", bar)
    return table


def _rollout_table(info: DeploymentPublic) -> Table:
    r = info.rollout
    assert r is not None
    step = f"{r.step_index + 1}/{len(r.options.steps)}" if r.step_index >= 0 else "-"
    rows = [
        ("task", r.task_id),
        ("swap", f"v{r.from_version} -> v{r.to_version} ({r.options.strategy})"),
        ("phase", r.phase),
        ("step", f"{step} of {r.options.steps}, {r.options.step_interval_s:g} s each"),
    ]
    if r.abort_reason:
        rows.append(("abort", f"[red]{escape(r.abort_reason)}[/]"))
    return grid(rows, title="rollout")


def _allocation_table(info: DeploymentPublic) -> Table:
    alloc = info.allocation
    title = "allocation: " + (
        f"{alloc.allocation_state}, {alloc.running_replicas}/{alloc.target_replicas} replicas, "
        f"since {when(alloc.start_time)}"
        if alloc
        else "none"
    )
    table = Table("replica", "node", "routing state", "reason", title=title, title_justify="left")
    for replica_id, r in (alloc.routing_table if alloc else {}).items():
        node = (r.node_id or "-")[:12]
        table.add_row(replica_id, node, styled(r.routing_state), escape(r.reason or ""))
    if alloc and alloc.reason:
        table.caption = escape(alloc.reason)
    return table


def swap_view(task: Task, info: DeploymentPublic) -> Group:
    """The live view of a swap: its task and phase, the traffic split, the step's window."""
    d = task.detail
    swap = f"v{d.get('from_version', '?')} -> v{d.get('to_version', '?')}"
    rows = [
        ("task", f"{task.id} {styled(task.status)}"),
        ("swap", f"{swap} ({d.get('strategy', 'green')})"),
        ("phase", str(d.get("phase") or (info.rollout.phase if info.rollout else "-"))),
    ]
    if (w := d.get("window")) is not None:
        p99 = f"{w['p99_ms']:g} ms" if w.get("p99_ms") is not None else "-"
        rate = f"{w['errors']} errors ({w['error_rate']:.1%})"
        rows.append(("this step", f"{w['requests']} requests, {rate}, p99 {p99}"))
    if reason := task.error or d.get("reason"):
        rows.append(("reason", f"[red]{escape(str(reason))}[/]"))
    return Group(grid(rows), traffic_table(info))


def events_table(events: list[DeploymentEvent]) -> Table:
    table = Table("at", "type", "message", "data")
    for e in events:
        data = ", ".join(f"{k}={_short(v)}" for k, v in e.data.items())
        table.add_row(when(e.at), e.type, escape(e.message), escape(data))
    return table


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tasks_table(tasks: list[Task], total: int) -> Table:
    table = Table("id", "kind", "status", "deployment", "model", "updated", "note",
                  caption=f"{len(tasks)} of {total}")  # fmt: skip
    for t in tasks:
        note = (
            t.error
            or t.detail.get("phase")
            or t.detail.get("allocation_state")
            or training_note(t)
            or ""
        )
        table.add_row(
            t.id, t.kind, styled(t.status), t.deployment_name or "-", t.model_id or "-",
            when(t.updated_at), escape(str(note)),
        )  # fmt: skip
    return table


def models_table(models: list[Model]) -> Table:
    table = Table("model", "kind", "latest", "versions", "predictor", "created")
    for m in models:
        i = m.info
        versions = ",".join(str(v) for v in i.versions)
        table.add_row(i.model_id, i.kind, f"v{i.latest_version}", versions, i.predictor or "-",
                      when(i.created_at))  # fmt: skip
    return table
