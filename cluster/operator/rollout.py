"""Rolling green version swaps: the pure state machine the operator runs every tick.

    starting --green healthy--> shifting (steps[0]% .. 100%) --> draining --> done
       |                              |
       | green failed to load, or not | a limit crossed, or a rollback request
       | healthy in start_timeout_s   |
       v                              v
    done (failed)                  aborting --green drained--> done (failed | canceled)

Green (the new version) runs as its own Serve app beside blue (the serving one) and gets
traffic only once Serve reports every replica healthy (the replica constructor warms the
model up before that). At each step the ingress's own measurements of green, read as a
window since the step began, are compared with the limits. An app is deleted only after
every live ingress routes with the new weights and has no request left in flight on it, so
no request is dropped. ``in_place`` updates blue's own app instead, a few replicas at a
time, for clusters with no room for a second copy; past ``start_timeout_s`` it puts blue's
version back the same way. Every phase has a bound, so no swap waits forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cluster.operator.serve_state import AppState
from cluster.registry.rollouts import rollback
from cluster.schemas import Allocation, DeploymentRecord, RolloutState
from cluster.traffic_stats import window

DRAIN_GRACE_S = 1.0  # at least two ingress refreshes after the last traffic change


@dataclass
class Step:
    """What one tick decided for one rollout."""

    record: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] | None = None
    deploy: str | None = None  # "green" | "green_in_place" | "blue_in_place"
    delete: list[str] = field(default_factory=list)
    events: list[tuple[str, str, dict]] = field(default_factory=list)


def _stats(view: dict, app: str) -> dict:
    return view.get("apps", {}).get(app) or {}


def _set(r: RolloutState, **changes: Any) -> dict[str, Any]:
    return {"rollout": r.model_copy(update=changes)}


def step(
    record: DeploymentRecord,
    green: AppState | None,
    green_alloc: Allocation,
    view: dict,
    now: datetime,
    green_owned: bool = True,
) -> Step:
    """One tick of one rollout. ``green_owned`` is False when an app of green's name exists
    that modelyard did not create: the swap fails rather than route to it or replace it."""
    r = record.rollout
    assert r is not None
    if green is None and r.phase in ("shifting", "draining"):
        # The new version's app is gone (a whole-cluster restart): all traffic back on the
        # serving version, and the swap starts over from a fresh copy.
        return Step(
            record={**_set(r, phase="starting", step_index=-1, step_started_at=now), "traffic": {}},
            task={"status": "processing", "detail": {"phase": "starting"}},
            events=[("rollout_restarted", f"v{r.to_version}'s app vanished; starting over", {})],
        )
    if r.options.strategy == "in_place":
        return _in_place(record, r, green, green_alloc, now)
    if r.phase == "starting":
        if green is not None and not green_owned:
            return _failed(
                r,
                f"a Serve app named '{r.green_app}' that modelyard did not create runs on this "
                "cluster; delete it, then swap again",
                delete=False,
            )
        return _starting(r, green, green_alloc, view, now)
    if r.phase == "shifting":
        return _shifting(r, view, now)
    if r.phase == "draining":
        return _finish_when_drained(record, r, r.blue_app, view, now, success=True)
    return _finish_when_drained(record, r, r.green_app, view, now, success=False)


def _starting(
    r: RolloutState, green: AppState | None, alloc: Allocation, view: dict, now: datetime
) -> Step:
    if alloc.allocation_state == "failed":
        return _failed(r, f"version {r.to_version} failed to start: {alloc.reason}")
    ready = green is not None and alloc.allocation_state == "fully_allocated"
    if ready and green.status == "RUNNING":
        return _enter_step(r, 0, view, now)
    if _waited(r, now) >= r.options.start_timeout_s:
        return _failed(r, not_started_reason(r, alloc), delete=green is not None)
    if green is None:
        return Step(deploy="green", task={"status": "processing", "detail": {"phase": "starting"}})
    detail = {"phase": "starting", "green_allocation": alloc.allocation_state}
    return Step(task={"status": "processing", "detail": {**detail, "reason": alloc.reason}})


def _waited(r: RolloutState, now: datetime) -> float:
    """Seconds since the new version was (last) asked for."""
    return (now - (r.step_started_at or r.started_at)).total_seconds()


def not_started_reason(r: RolloutState, alloc: Allocation) -> str:
    """What kept the new version from starting in time, in words a user can act on."""
    why = alloc.reason or "its replicas were placed but did not become healthy"
    return (
        f"version {r.to_version} did not start within {r.options.start_timeout_s:g}s "
        f"(rollout.start_timeout_s): {alloc.running_replicas} of {alloc.target_replicas} "
        f"replicas running; {why}"
    )


def _failed(r: RolloutState, reason: str, delete: bool = True) -> Step:
    """The swap ends failed before green got any traffic: blue keeps all of it."""
    return Step(
        record={"rollout": None, "pending_model_version": None, "traffic": {}},
        delete=[r.green_app] if delete else [],
        task={"status": "failed", "error": reason, "detail": {"phase": "starting"}},
        events=[("rollout_failed", reason, {"to_version": r.to_version})],
    )


def _enter_step(r: RolloutState, index: int, view: dict, now: datetime) -> Step:
    percent = r.options.steps[index]
    traffic = {r.blue_app: 100 - percent, r.green_app: percent}
    changes = {
        "phase": "shifting",
        "step_index": index,
        "step_started_at": now,
        "baseline": _stats(view, r.green_app),
    }
    return Step(
        record={**_set(r, **changes), "traffic": traffic},
        task={
            "status": "processing",
            "detail": {"phase": "shifting", "step": index, "traffic_percent": percent},
        },
        events=[
            (
                "rollout_step",
                f"{percent}% of traffic on v{r.to_version}",
                {"step": index, "percent": percent},
            )
        ],
    )


def _limit_crossed(r: RolloutState, w: dict, step_over: bool) -> str | None:
    opts = r.options
    # The error budget of a step is max_error_rate of its minimum request count, so a
    # version that fails every request is stopped after a few of them, not after the step.
    budget = opts.max_error_rate * max(w["requests"], opts.min_requests_per_step)
    if w["errors"] > budget:
        return (
            f"error rate {w['error_rate']:.1%} ({w['errors']}/{w['requests']} requests) "
            f"exceeds max_error_rate {opts.max_error_rate:.1%}"
        )
    enough = step_over or w["requests"] >= max(opts.min_requests_per_step, 1)
    p99 = w["p99_ms"]
    if opts.max_p99_latency_ms and enough and p99 is not None and p99 > opts.max_p99_latency_ms:
        return f"p99 latency {p99:g} ms exceeds max_p99_latency_ms {opts.max_p99_latency_ms:g}"
    return None


def _shifting(r: RolloutState, view: dict, now: datetime) -> Step:
    w = (
        window(r.baseline, _stats(view, r.green_app))
        if _stats(view, r.green_app)
        else {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_ms": None}
    )
    elapsed = (now - r.step_started_at).total_seconds() if r.step_started_at else 0.0
    interval = r.options.step_interval_s
    step_over = elapsed >= interval and w["requests"] >= r.options.min_requests_per_step
    starved = elapsed >= 3 * interval + 10  # too little traffic to judge: do not hang
    reason = _limit_crossed(r, w, step_over or starved)
    measured = {k: w[k] for k in ("requests", "errors", "error_rate", "p99_ms")}
    if reason:
        return abort(
            r, f"rolled back at {r.options.steps[r.step_index]}%: {reason}", "failed", now, measured
        )
    if not (step_over or starved):
        return Step(
            task={
                "status": "processing",
                "detail": {
                    "phase": "shifting",
                    "step": r.step_index,
                    "traffic_percent": r.options.steps[r.step_index],
                    "window": measured,
                },
            }
        )
    if r.step_index + 1 < len(r.options.steps):
        out = _enter_step(r, r.step_index + 1, view, now)
        if starved and not step_over:
            out.events.append(("rollout_note", "advanced with too few requests to judge", measured))
        return out
    return Step(
        record={**_set(r, phase="draining", step_started_at=now), "traffic": {r.green_app: 100}},
        task={"status": "processing", "detail": {"phase": "draining", "window": measured}},
    )


def abort(
    r: RolloutState, reason: str, status: str, now: datetime, measured: dict | None = None
) -> Step:
    """Send all traffic back to blue now; green is deleted once it has drained. The same
    step the registry takes when a user aborts, so the rule lives in one place."""
    record, task, events = rollback(r, reason, status, now, measured)
    return Step(record=record, task=task, events=events)


def _finish_when_drained(
    record: DeploymentRecord,
    r: RolloutState,
    old_app: str,
    view: dict,
    now: datetime,
    success: bool,
) -> Step:
    since = (now - r.step_started_at).total_seconds() if r.step_started_at else 0.0
    inflight = _stats(view, old_app).get("inflight", 0)
    drained = view.get("caught_up", True) and inflight == 0 and since >= DRAIN_GRACE_S
    if not drained and since < record.config.request_timeout_s + 10:
        return Step(
            task={"status": "processing", "detail": {"phase": r.phase, "inflight_on_old": inflight}}
        )
    took = (now - r.started_at).total_seconds()
    if success:
        return Step(
            record={
                "rollout": None,
                "pending_model_version": None,
                "traffic": {},
                "serve_app": r.green_app,
                "model_version": r.to_version,
                "previous_version": r.from_version,
                "config": r.config,
            },
            delete=[old_app],
            task={"status": "done", "detail": {"phase": "done", "duration_s": round(took, 2)}},
            events=[("rollout_done", f"now serving v{r.to_version}", {"duration_s": took})],
        )
    return Step(
        record={"rollout": None, "pending_model_version": None, "traffic": {}},
        delete=[old_app],
        task={
            "status": r.abort_status or "failed",
            "error": r.abort_reason,
            "detail": {"phase": "rolled_back"},
        },
    )


def _in_place(
    record: DeploymentRecord,
    r: RolloutState,
    app: AppState | None,
    alloc: Allocation,
    now: datetime,
) -> Step:
    if r.phase == "starting":
        return Step(
            deploy="green_in_place",
            record=_set(r, phase="shifting", step_started_at=now),
            task={"status": "processing", "detail": {"phase": "replacing"}},
        )
    replaced = _replaced(r, app)
    if r.phase == "shifting":
        reason = _in_place_failure(r, app, alloc, replaced, now)
        if reason:
            return Step(
                deploy="blue_in_place",
                record=_set(
                    r,
                    phase="aborting",
                    abort_reason=reason,
                    abort_status="failed",
                    step_started_at=now,
                ),
                events=[("rollback", reason, {})],
            )
    if not replaced:
        if r.phase == "aborting" and _waited(r, now) >= r.options.start_timeout_s:
            # Serve keeps bringing the old version's replicas back; the task ends anyway.
            error = f"{r.abort_reason}; v{r.from_version} was not fully restored within "
            error += f"{r.options.start_timeout_s:g}s: {alloc.reason or 'replicas starting'}"
            return Step(
                record={"rollout": None, "pending_model_version": None},
                task={"status": "failed", "error": error},
            )
        return Step(task={"status": "processing", "detail": {"phase": "replacing"}})
    if r.phase == "aborting":
        return Step(
            record={"rollout": None, "pending_model_version": None},
            task={"status": "failed", "error": r.abort_reason},
        )
    took = (now - r.started_at).total_seconds()
    return Step(
        record={
            "rollout": None,
            "pending_model_version": None,
            "model_version": r.to_version,
            "previous_version": r.from_version,
            "config": r.config,
        },
        task={"status": "done", "detail": {"phase": "done", "duration_s": round(took, 2)}},
        events=[("rollout_done", f"now serving v{r.to_version} (in place)", {"duration_s": took})],
    )


def _in_place_failure(
    r: RolloutState, app: AppState | None, alloc: Allocation, replaced: bool, now: datetime
) -> str | None:
    """Why the new version's replicas will not take over: they failed to load, or did not
    start within the bound; None while they may still."""
    if app is not None and app.status == "DEPLOY_FAILED":
        return f"version {r.to_version} failed to start: {app.message or app.deployment_message}"
    if not replaced and _waited(r, now) >= r.options.start_timeout_s:
        return not_started_reason(r, alloc)
    return None


def _replaced(r: RolloutState, app: AppState | None) -> bool:
    """Every replica of the app started after this phase began, and is running."""
    if app is None or app.status != "RUNNING":
        return False
    started = r.step_started_at.timestamp() if r.step_started_at else 0.0
    if app.target_replicas == 0:
        # Scaled to zero: nothing to replace once Serve holds the new config.
        return not app.replicas and (app.last_deployed or 0.0) >= started
    return len(app.replicas) == app.target_replicas and all(
        float(rep.get("start_time_s") or 0) >= started
        and str(getattr(rep.get("state"), "value", rep.get("state"))) == "RUNNING"
        for rep in app.replicas
    )
