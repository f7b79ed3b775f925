"""Prediction requests and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.schemas.base import ModelOutput, Schema, utcnow


class PredictRequest(Schema):
    args: dict[str, Any] | None = None
    version: int | None = Field(
        default=None, ge=1, description="Pin a live version (e.g. a new one before it has traffic)."
    )
    url: str | None = Field(default=None, description="http(s) or file URL of a JSON args object.")
    request_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _args_or_url(self) -> PredictRequest:
        if (self.args is None) == (self.url is None):
            raise ValueError("give exactly one of args and url")
        return self


class PredictResponse(Schema):
    status: Literal["SUCCESS", "FAILURE"] = "SUCCESS"
    result: ModelOutput = None  # a model's answer: NaN is passed on, not refused
    model_version: int | None = None
    request_id: str | None = None


class EmbedArgs(Schema):
    """``args`` of a sentence-transformer prediction."""

    texts: list[str] = Field(min_length=1, max_length=4096)


class AsyncTask(Schema):
    """A queued prediction, kept in the registry (so in SQLite) until its result expires."""

    task_id: str
    deployment: str
    request: PredictRequest
    status: Literal["PENDING", "SUCCESS", "FAILURE"] = "PENDING"
    result: ModelOutput = None  # a model's answer: NaN is passed on, not refused
    model_version: int | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = Field(
        default=0, ge=0, description="Failed tries so far (timeouts, lost workers)."
    )
    not_before: datetime | None = Field(
        default=None, description="Back-off after a failed try: not claimed again before this."
    )
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None


class AsyncTaskPublic(Schema):
    """``GET /v1/async-tasks/{id}``: PENDING, then SUCCESS with ``result`` or FAILURE with
    ``error`` (and the predictor's ``traceback``). While PENDING, ``error`` is the last
    failed try's, if any."""

    task_id: str
    status: Literal["PENDING", "SUCCESS", "FAILURE"]
    result: ModelOutput = None  # a model's answer: NaN is passed on, not refused
    model_version: int | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = Field(
        default=0,
        description=(
            "Tries that failed and may be retried (timeouts, lost workers); a deployment "
            "that is stopped or not ready does not spend them."
        ),
    )
    created_at: datetime
    completed_at: datetime | None = None

    @classmethod
    def of(cls, task: AsyncTask) -> AsyncTaskPublic:
        return cls.model_validate(task.model_dump(include=set(cls.model_fields)))


class AsyncAccepted(Schema):
    task_id: str
