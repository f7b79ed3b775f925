"""What a fine-tuning run is given: its dataset (``DatasetSpec``) and its parameters
(``FinetuneParams``), and the checks on (anchor, positive) pairs that need no file.

The API validates a ``POST /v1/fine-tuning/task`` body with these, the client builds one
with them, and the trainer (``train_jobs.config``) runs what they describe; reading a
dataset's URI is the trainer's (``train_jobs.data``). Pydantic only: nothing here imports
the server or the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_INLINE_PAIRS = 10_000
MAX_TEXT_CHARS = 20_000
FIELDS = ("anchor", "positive")


class Pair(NamedTuple):
    anchor: str
    positive: str


def check_pair(item: Any, where: str) -> Pair:
    """One validated pair; ``where`` ("line 3", "pairs[2]") starts every error message."""
    if not isinstance(item, Mapping):
        raise ValueError(
            f'{where}: expected an object {{"anchor": "...", "positive": "..."}}, '
            f"got {type(item).__name__}"
        )
    missing = [f for f in FIELDS if f not in item]
    if missing:
        raise ValueError(f"{where}: missing {' and '.join(repr(f) for f in missing)}")
    extra = sorted(set(item) - set(FIELDS))
    if extra:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(map(repr, extra))}; "
            "only 'anchor' and 'positive' are allowed"
        )
    for field in FIELDS:
        value = item[field]
        if not isinstance(value, str):
            raise ValueError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{where}: {field!r} is empty")
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(
                f"{where}: {field!r} has {len(value)} characters; the limit is {MAX_TEXT_CHARS}"
            )
    return Pair(item["anchor"], item["positive"])


def parse_inline(items: Sequence[Any]) -> list[Pair]:
    """Pairs given in the request itself, bounded so a request body stays small."""
    if len(items) > MAX_INLINE_PAIRS:
        raise ValueError(
            f"{len(items)} inline pairs is more than {MAX_INLINE_PAIRS}; "
            'upload them as JSONL and pass {"uri": "<path>"} instead'
        )
    if not items:
        raise ValueError("'pairs' is empty; give at least 2 (anchor, positive) pairs")
    return [check_pair(item, f"pairs[{i}]") for i, item in enumerate(items)]


class TrainingSchema(BaseModel):
    """The trainer's shapes: unknown fields refused, and NaN and infinity are no setting
    (every float field refuses them, naming the field)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetSpec(TrainingSchema):
    """Exactly one of ``uri`` (JSONL of {"anchor", "positive"}) and inline ``pairs``."""

    uri: str | None = Field(default=None, description="JSONL path, file:// or pyarrow URI.")
    pairs: list[dict[str, Any]] | None = Field(
        default=None, description=f"Inline pairs, at most {MAX_INLINE_PAIRS}."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.uri is None) == (self.pairs is None):
            raise ValueError('dataset needs exactly one of {"uri": ...} and {"pairs": [...]}')
        if self.pairs is not None:
            parse_inline(self.pairs)  # bad pairs fail here, at the edge
        return self


class FinetuneParams(TrainingSchema):
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the train split.")
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Train exactly this many optimizer steps (cycling epochs); overrides epochs.",
    )
    batch_size: int = Field(
        default=16, ge=2, le=4096, description="Pairs per step per worker (in-batch negatives)."
    )
    learning_rate: float = Field(default=2e-5, gt=0, le=1)
    similarity_scale: float = Field(
        default=20.0, gt=0, le=1000, description="Cosine similarities are multiplied by this."
    )
    num_workers: int = Field(default=1, ge=1, le=1024, description="Ray Train workers (DDP).")
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = Field(
        default=None, description='Ray resources per worker, e.g. {"CPU": 2, "GPU": 0.5}.'
    )
    eval_fraction: float = Field(
        default=0.1, ge=0, le=0.5, description="Held out for recall@1 / MRR; 0: no evaluation."
    )
    checkpoint_every_steps: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps; default: after each epoch."
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Newest checkpoints kept.")
    max_failures: int = Field(
        default=2, ge=-1, description="Worker failures survived by resuming from a checkpoint."
    )
    seed: int = 0
    resume_from: str | None = Field(
        default=None, description="Checkpoint directory or URI of an earlier run to continue."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneParams:
        gpus = (self.resources_per_worker or {}).get("GPU", 0)
        if gpus and not self.use_gpu:
            raise ValueError(
                f"resources_per_worker asks for GPU={gpus} but use_gpu is false; "
                "set use_gpu: true or drop GPU from resources_per_worker"
            )
        return self
