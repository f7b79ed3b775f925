"""Deployments: config, records, allocation view, rollouts, events."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.schemas.base import NAME_PATTERN, Schema, utcnow


class Resources(Schema):
    num_gpus: float = Field(default=0, ge=0, description="GPUs per replica; fractions allowed.")
    num_cpus: float = Field(default=1, ge=0, description="CPUs per replica.")
    memory: int | None = Field(default=None, ge=0, description="Bytes of memory per replica.")

    def as_ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


class Autoscaling(Schema):
    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Replicas kept when idle; 0 scales to zero and the first request "
        "starts one (it waits for the model to load, within request_timeout_s).",
    )
    max_replicas: int = Field(default=1, ge=1, le=1024)
    target_ongoing_requests: float = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        return self


class DeploymentConfig(Schema):
    num_replicas: int | None = Field(default=None, ge=1, le=1024)
    autoscaling: Autoscaling | None = None
    resources: Resources = Field(default_factory=Resources)
    max_ongoing_requests: int = Field(
        default=64, ge=1, le=10_000, description="Requests one replica works on at once."
    )
    max_queued_requests: int = Field(
        default=256,
        ge=-1,
        le=1_000_000,
        description="Requests that may wait for a replica; more are answered 429. -1: no limit.",
    )
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    batch_wait_timeout_ms: float = Field(default=5, ge=0, le=60_000)
    request_timeout_s: float = Field(default=60, gt=0, le=3600)
    omp_wait_policy: Literal["passive", "active", "default"] = Field(
        default="passive",
        description=(
            "How a replica's CPU model threads (OpenMP) wait between parallel steps: "
            "passive sleeps, leaving the cores to the HTTP proxy and the ingress on the same "
            "node; active spins (dedicated cores, lowest latency); default is OpenMP's own."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set either num_replicas or autoscaling, not both")
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) must be <= max_ongoing_requests "
                f"({self.max_ongoing_requests}): a replica never holds more requests than that"
            )
        return self

    @property
    def replicas_wanted(self) -> int:
        if self.autoscaling is not None:
            return max(self.autoscaling.min_replicas, 1)
        return self.num_replicas or 1

    def ingress_limits(self) -> dict[str, int] | None:
        """The limits this config puts on the ingress's batches; ``None`` for an autoscaling
        deployment, whose per-request calls are the autoscaler's signal."""
        if self.autoscaling is not None:
            return None
        return {
            "replicas": self.num_replicas or 1,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "max_batch_size": self.max_batch_size,
        }


class DeploymentStatus(str, Enum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    ACTIVE = "ACTIVE"
    UPDATING = "UPDATING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    DELETING = "DELETING"


RUNNING_STATES = {"PENDING", "DEPLOYING", "ACTIVE", "UPDATING"}


class RolloutOptions(Schema):
    """How a version swap moves traffic and when it gives up."""

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        description="Percentages of traffic on the new version, rising, ending at 100.",
    )
    step_interval_s: float = Field(default=10, ge=0, le=3600)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_latency_ms: float | None = Field(default=None, gt=0)
    min_requests_per_step: int = Field(default=20, ge=0)
    strategy: Literal["green", "in_place"] = "green"
    start_timeout_s: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="How long the new version may take to have every replica placed and "
        "healthy; past it the swap fails with the reason and traffic stays on the old one.",
    )

    @model_validator(mode="after")
    def _steps(self) -> RolloutOptions:
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps must be percentages in 1..100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must rise strictly, got {self.steps}")
        if self.steps[-1] != 100:
            raise ValueError(f"steps must end at 100, got {self.steps}")
        return self


class RolloutState(Schema):
    """A swap in progress, persisted so the operator can resume it after any restart."""

    task_id: str
    from_version: int
    to_version: int
    blue_app: str
    green_app: str
    config: DeploymentConfig
    options: RolloutOptions
    phase: Literal["starting", "shifting", "draining", "aborting"] = "starting"
    step_index: int = -1
    step_started_at: datetime | None = None
    started_at: datetime = Field(default_factory=utcnow)
    baseline: dict[str, Any] = Field(default_factory=dict)
    drain_generation: int | None = None
    abort_reason: str | None = None
    abort_status: str | None = None


class DeploymentRecord(Schema):
    """A deployment as the registry keeps it."""

    name: str = Field(pattern=NAME_PATTERN)
    model_id: str
    model_version: int
    pending_model_version: int | None = None
    previous_version: int | None = None
    config: DeploymentConfig = Field(default_factory=DeploymentConfig)
    status: DeploymentStatus = DeploymentStatus.PENDING
    error: str | None = None
    auto_deploy: bool = False
    skip_metrics_check: bool = False
    description: str = ""
    serve_app: str = ""
    traffic: dict[str, int] = Field(
        default_factory=dict, description="Serve app -> percent of traffic; empty: all on one."
    )
    rollout: RolloutState | None = None
    applied_config: DeploymentConfig | None = Field(
        default=None,
        description="The config Serve last got; differs from config while a "
        "change is being applied.",
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _default_app(self) -> DeploymentRecord:
        if not self.serve_app:
            self.serve_app = app_name(self.name, self.model_version)
        return self

    @property
    def live_apps(self) -> list[str]:
        """Serve apps this deployment needs: the serving one and, mid-swap, the new one."""
        apps = [self.serve_app]
        if self.rollout is not None and self.rollout.green_app not in apps:
            apps.append(self.rollout.green_app)
        return apps

    def variants(self) -> list[dict[str, Any]]:
        """(app, version, weight) of every app the ingress may route to."""
        out = [
            {
                "app": self.serve_app,
                "version": self.model_version,
                "weight": self.traffic.get(self.serve_app, 100 if not self.traffic else 0),
            }
        ]
        if self.rollout is not None and self.rollout.green_app != self.serve_app:
            out.append(
                {
                    "app": self.rollout.green_app,
                    "version": self.rollout.to_version,
                    "weight": self.traffic.get(self.rollout.green_app, 0),
                }
            )
        return out


def app_name(deployment: str, version: int, seq: int = 0) -> str:
    """Each served version is its own Serve app, so two versions can run side by side."""
    return f"{deployment}--v{version}" + (f"-{seq}" if seq else "")


class ServeApp(Schema):
    """A Serve app modelyard created, recorded before it is submitted: the operator and
    ``modelyard down`` delete only these, never a Serve app someone else runs on a shared
    cluster, whatever its name."""

    name: str
    deployment: str
    created_at: datetime = Field(default_factory=utcnow)


class ReplicaView(Schema):
    node_id: str | None = None
    routing_state: Literal["starting", "started", "stopping", "failed"]
    reason: str | None = None


class Allocation(Schema):
    allocation_state: Literal["starting", "started", "fully_allocated", "failed", "stopped"]
    target_replicas: int = 0
    running_replicas: int = 0
    routing_table: dict[str, ReplicaView] = Field(default_factory=dict)
    start_time: datetime | None = None
    reason: str | None = None


class DeploymentPublic(DeploymentRecord):
    app_name: str
    allocation: Allocation | None = None
    green_allocation: Allocation | None = Field(
        default=None, description="Mid-swap: the allocation of the new version's app."
    )


class DeploymentUpdate(Schema):
    description: str | None = None
    auto_deploy: bool | None = None
    skip_metrics_check: bool | None = None
    config: DeploymentConfig | None = Field(
        default=None,
        description="Replica counts, limits and batch settings apply in place; a change of "
        "resources needs new replicas and goes through a green rollout.",
    )
    rollout: RolloutOptions | None = Field(
        default=None, description="How to roll out a config change that needs new replicas."
    )


class SetVersionRequest(Schema):
    version: int = Field(ge=1)
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)


class DeploymentEvent(Schema):
    deployment: str
    type: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)
