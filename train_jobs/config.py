"""What a fine-tuning run takes (``FinetuneConfig``) and what it gives back (``FinetuneResult``).

The same shapes serve the CLI (``--config run.yaml``), a Ray Job, and the control plane, which
builds a ``FinetuneConfig`` from a ``POST /v1/fine-tuning/task`` body. Validation messages say
what to change.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from train_jobs import data

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class _Schema(BaseModel):
    # NaN and infinity are no setting: every float field refuses them, naming the field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetSpec(_Schema):
    """Exactly one of ``uri`` (JSONL of {"anchor", "positive"}) and inline ``pairs``."""

    uri: str | None = Field(default=None, description="JSONL path, file:// or pyarrow URI.")
    pairs: list[dict[str, Any]] | None = Field(
        default=None, description=f"Inline pairs, at most {data.MAX_INLINE_PAIRS}."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.uri is None) == (self.pairs is None):
            raise ValueError('dataset needs exactly one of {"uri": ...} and {"pairs": [...]}')
        if self.pairs is not None:
            data.parse_inline(self.pairs)  # bad pairs fail here, at the edge
        return self

    def load(self) -> list[data.Pair]:
        return data.load_pairs(uri=self.uri, pairs=self.pairs)


class FinetuneParams(_Schema):
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


class FinetuneConfig(_Schema):
    """One fine-tuning run. ``storage_path``/``run_name`` is where its checkpoints live:
    starting a run whose directory already holds checkpoints continues from the newest."""

    base_model_path: str = Field(description="A sentence-transformers model directory.")
    dataset: DatasetSpec
    output_dir: str = Field(
        description="Where worker 0 saves the fine-tuned model (a SentenceTransformer "
        "directory); on a multi-node cluster, shared storage or a pyarrow URI."
    )
    storage_path: str = Field(description="Ray Train storage for checkpoints (path or URI).")
    run_name: str | None = Field(
        default=None, pattern=RUN_NAME_PATTERN, description="Default: from task_id or the time."
    )
    task_id: str | None = Field(default=None, max_length=200)
    progress_actor: str | None = Field(
        default=None,
        description="Name of an actor in namespace 'modelyard' with a method "
        "report_progress(task_id, payload); it gets every progress payload.",
    )
    params: FinetuneParams = Field(default_factory=FinetuneParams)

    @model_validator(mode="after")
    def _default_run_name(self) -> FinetuneConfig:
        if self.run_name is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            self.run_name = f"finetune-{self.task_id}" if self.task_id else f"finetune-{stamp}"
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> FinetuneConfig:
        with open(path, encoding="utf-8") as f:
            return cls.model_validate(yaml.safe_load(f) or {})


class FinetuneResult(_Schema):
    # What a run measured, not what it was asked: a diverged run's loss is NaN, and the
    # result must still be reported.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)

    task_id: str | None
    run_name: str
    output_dir: str
    checkpoint_path: str | None = Field(description="The newest checkpoint of the run.")
    start_step: int = Field(description="Step the run started from (0, or a checkpoint's).")
    steps: int = Field(description="Optimizer steps done in total, including resumed ones.")
    total_steps: int
    epochs: float = Field(description="Passes over the train split, in total.")
    loss: float | None = Field(description="Mean loss over the last steps.")
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    train_pairs: int
    eval_pairs: int
    elapsed_s: float
