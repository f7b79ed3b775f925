"""Prediction requests and answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cluster.schemas.base import ModelOutput, Schema, utcnow


class PredictRequest(Schema):
    args: dict[str, Any] | None = None
    version: int | None = Field(
        default=None, ge=1, description="Pin a live version (e.g. a new one before it has traffic)."
    )
    url: str | None = Field(
        default=None,
        description="file:// URI under the storage root of a JSON args object (at most "
        "MODELYARD_PREDICT_URL_MAX_BYTES); http(s) only where MODELYARD_PREDICT_URL_HTTP is on.",
    )
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


MAX_TEXTS = 4096
# Far past MiniLM's 256-token window (which truncates), so long documents still embed; the
# bound is on what one text can make the tokenizer and the request's JSON hold.
MAX_TEXT_CHARS = 20_000


def too_many_texts(count: int) -> str | None:
    if count > MAX_TEXTS:
        return f"at most {MAX_TEXTS} texts per request (got {count})"
    return None


def too_long_text(text: str) -> str | None:
    if len(text) > MAX_TEXT_CHARS:
        return f"at most {MAX_TEXT_CHARS} characters per text (got {len(text)})"
    return None


def texts_problem(texts: Sequence[str]) -> tuple[str, str] | None:
    """Where (``""`` or ``".<index>"``) and why ``texts`` is over the per-request limits.

    The one rule for the API's schemas and the replicas' ``decode`` (batch jobs, handles).
    """
    problem = too_many_texts(len(texts))
    if problem is not None:
        return "", problem
    if texts and max(map(len, texts)) > MAX_TEXT_CHARS:  # the common case stays in C
        i = next(i for i, text in enumerate(texts) if len(text) > MAX_TEXT_CHARS)
        return f".{i}", too_long_text(texts[i]) or ""
    return None


def _bounded_text(text: str) -> str:
    problem = too_long_text(text)
    if problem is not None:
        raise PydanticCustomError("text_too_long", problem)
    return text


class EmbedArgs(Schema):
    """``args`` of a sentence-transformer prediction."""

    texts: list[Annotated[str, AfterValidator(_bounded_text)]] = Field(
        min_length=1,
        description=f"At most {MAX_TEXTS} texts of at most {MAX_TEXT_CHARS} characters each.",
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any) -> Any:
        # Before the items, so 100,000 strings are refused without validating each one.
        problem = too_many_texts(len(value)) if isinstance(value, list) else None
        if problem is not None:
            raise PydanticCustomError("too_many_texts", problem)
        return value


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
