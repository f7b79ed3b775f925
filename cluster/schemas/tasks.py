"""Tasks (deploy, delete, rollout, fine-tuning, batch prediction); requests that create some."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.schemas.base import MODEL_ID_PATTERN, NAME_PATTERN, Schema, utcnow
from cluster.schemas.deployments import DeploymentConfig


class TaskStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUSED = "refused"


# A task in one of these has ended: only a restart (fine-tuning) moves it again. Every check
# of "has it finished" in the project reads these two, so a new state is added once.
FINAL_TASK_STATES = frozenset(
    s.value for s in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.REFUSED)
)
# The ended states that are not a success (a CLI that waits for a task exits non-zero).
FAILED_TASK_STATES = FINAL_TASK_STATES - {TaskStatus.DONE.value}


class TaskKind(str, Enum):
    DEPLOY = "deploy"
    DELETE = "delete"
    ROLLOUT = "rollout"
    FINE_TUNING = "fine_tuning"
    BATCH_PREDICTION = "batch_prediction"


class Task(Schema):
    id: str
    kind: TaskKind
    status: TaskStatus = TaskStatus.PENDING
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    model_id: str | None = None
    deployment_name: str | None = None
    parent_task_id: str | None = None
    idempotency_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def final(self) -> bool:
        return self.status in FINAL_TASK_STATES


WaitFor = Literal["none", "starting", "started", "fully_allocated"]


class DeployRequest(Schema):
    model_id: str = Field(pattern=MODEL_ID_PATTERN)
    version: int | None = Field(default=None, ge=1, description="Default: the latest version.")
    deployment_name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Default: derived from model_id."
    )
    config: DeploymentConfig = Field(default_factory=DeploymentConfig)
    description: str = ""
    wait_for: WaitFor = Field(
        default="none",
        description="Answer once the deployment reaches this state (or timeout_s passes).",
    )
    timeout_s: float = Field(default=30, gt=0, le=600)


class DeleteRequest(Schema):
    model_id: str | None = Field(default=None, pattern=MODEL_ID_PATTERN)
    deployment_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _exactly_one(self) -> DeleteRequest:
        if (self.model_id is None) == (self.deployment_name is None):
            raise ValueError("give exactly one of model_id and deployment_name")
        return self
