"""Hand-built rollout inputs shared by the rollout unit tests: records in each phase, the
metric snapshots and views the state machine judges, and the Serve app states it reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cluster.operator.serve_state import AppState
from cluster.schemas import (
    Allocation,
    DeploymentConfig,
    DeploymentRecord,
    RolloutOptions,
    RolloutState,
)
from cluster.traffic_stats import AppStats

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
BLUE, GREEN = "d--v1", "d--v2"
INTERVAL = 10.0
MIN_REQUESTS = 20


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def record(phase: str = "starting", strategy: str = "green", **state) -> DeploymentRecord:
    """Deployment 'd' swapping v1 -> v2 (steps 10/50/100 %, 10 s each, 20 requests)."""
    options = RolloutOptions(
        steps=[10, 50, 100],
        step_interval_s=INTERVAL,
        min_requests_per_step=MIN_REQUESTS,
        max_error_rate=0.05,
        strategy=strategy,
        **state.pop("options", {}),
    )
    rollout = RolloutState(
        task_id="rollout-1",
        from_version=1,
        to_version=2,
        blue_app=BLUE,
        green_app=BLUE if strategy == "in_place" else GREEN,
        config=DeploymentConfig(num_replicas=2),
        options=options,
        phase=phase,
        started_at=T0,
        **state,
    )
    return DeploymentRecord(
        name="d",
        model_id="m",
        model_version=1,
        pending_model_version=2,
        status="UPDATING",
        serve_app=BLUE,
        rollout=rollout,
        config=DeploymentConfig(request_timeout_s=5),
    )


def shifting(step_index: int = 0, started: float = 0.0, baseline: dict | None = None, **kw):
    return record(
        "shifting",
        step_index=step_index,
        step_started_at=at(started),
        baseline=baseline or {},
        **kw,
    )


def snapshot(ok: int = 0, errors: int = 0, latency_ms: float = 5.0, inflight: int = 0) -> dict:
    """Cumulative counters of one app as an ingress reports them."""
    stats = AppStats()
    for _ in range(ok):
        stats.observe("success", latency_ms)
    for _ in range(errors):
        stats.observe("predictor_error", latency_ms)
    stats.inflight = inflight
    return stats.snapshot()


def view(caught_up: bool = True, **apps: dict) -> dict:
    names = {"blue": BLUE, "green": GREEN}
    return {"caught_up": caught_up, "apps": {names[k]: v for k, v in apps.items()}}


def green_app(status: str = "RUNNING", **fields) -> AppState:
    return AppState(name=GREEN, status=status, target_replicas=2, **fields)


FULL = Allocation(allocation_state="fully_allocated", target_replicas=2, running_replicas=2)
LIVE = green_app()  # green, once its app is up


def replicas(*start_times: float, state: str = "RUNNING") -> list[dict]:
    return [
        {"replica_id": f"r{i}", "start_time_s": t, "state": state}
        for i, t in enumerate(start_times)
    ]


def in_place(phase: str = "shifting", started: float = 100, **kw) -> DeploymentRecord:
    return record(phase, strategy="in_place", step_started_at=at(started), **kw)


def blue_app(status: str = "RUNNING", reps: list | None = None, **fields) -> AppState:
    return AppState(name=BLUE, status=status, target_replicas=2, replicas=reps or [], **fields)
