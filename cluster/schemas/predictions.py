"""Prediction requests and answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.schemas.base import Schema


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
    result: Any = None
    model_version: int | None = None
    request_id: str | None = None


class EmbedArgs(Schema):
    """``args`` of a sentence-transformer prediction."""

    texts: list[str] = Field(min_length=1, max_length=4096)
