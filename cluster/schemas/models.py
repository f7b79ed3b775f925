"""Models and their versions."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import Field, model_validator

from cluster.schemas.base import IMPORT_PATH_PATTERN, MODEL_ID_PATTERN, Schema, utcnow


class ModelKind(str, Enum):
    SENTENCE_TRANSFORMER = "sentence-transformer"
    TORCH = "torch"
    CUSTOM = "custom"


class VersionCreate(Schema):
    artifact_uri: str = Field(
        default="",
        description="Directory or file holding the weights ('' for none: custom): "
        "package://<package>, a path inside the storage root (not under its outputs/), or "
        "s3://, gs://, ... (pyarrow.fs).",
    )
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelCreate(VersionCreate):
    model_id: str = Field(pattern=MODEL_ID_PATTERN)
    kind: ModelKind
    predictor: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="'package.module:Name': the nn.Module class (torch) or predictor class "
        "(custom).",
    )
    predictor_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the predictor's constructor."
    )

    @model_validator(mode="after")
    def _predictor_for_kind(self) -> ModelCreate:
        if self.kind != ModelKind.SENTENCE_TRANSFORMER.value and not self.predictor:
            raise ValueError(
                f"kind '{self.kind}' needs 'predictor': the import path 'module:Class' "
                "of the class to load"
            )
        if self.kind != ModelKind.CUSTOM.value and not self.artifact_uri:
            raise ValueError(f"kind '{self.kind}' needs 'artifact_uri': where its weights are")
        return self


class ModelVersion(Schema):
    model_id: str
    version: int
    kind: ModelKind
    artifact_uri: str
    predictor: str | None = None
    predictor_kwargs: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str = "registered"
    created_at: datetime = Field(default_factory=utcnow)


class ModelPublic(Schema):
    model_id: str
    kind: ModelKind
    predictor: str | None = None
    latest_version: int
    versions: list[int]
    created_at: datetime
