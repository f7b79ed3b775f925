"""Fine-tuning requests; the dataset and the training parameters are ``training``'s."""

from __future__ import annotations

import hashlib

from pydantic import Field

from cluster.schemas.base import MODEL_ID_PATTERN, NAME_PATTERN, Schema
from cluster.schemas.training import DatasetSpec, FinetuneParams


class FineTuneCreate(Schema):
    embedding_model_id: str = Field(pattern=MODEL_ID_PATTERN)
    version: int | None = Field(default=None, ge=1, description="Default: the latest version.")
    dataset: DatasetSpec
    params: FinetuneParams = Field(default_factory=FinetuneParams)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    deploy_to: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Deployment to promote the result to."
    )

    def fingerprint(self) -> str:
        """What makes two creates with one idempotency key the same request."""
        body = self.model_dump_json(exclude={"idempotency_key"})
        return hashlib.sha256(body.encode()).hexdigest()


class FineTuneRestart(Schema):
    from_scratch: bool = Field(
        default=False, description="Start over instead of resuming from the latest checkpoint."
    )
