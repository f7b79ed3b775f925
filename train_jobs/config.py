"""What a fine-tuning run takes (``FinetuneConfig``) and what it gives back (``FinetuneResult``).

The same shapes serve the CLI (``--config run.yaml``), a Ray Job, and the control plane, which
builds a ``FinetuneConfig`` from a ``POST /v1/fine-tuning/task`` body. The dataset and the
parameters are the API's own shapes (``cluster.schemas.training``); the dataset gains
``load`` here. Validation messages say what to change.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from cluster.schemas import training
from cluster.schemas.training import FinetuneParams, TrainingSchema
from train_jobs import data

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class DatasetSpec(training.DatasetSpec):
    """The API's dataset shape, plus reading it, which needs the trainer's readers (a URI
    may be any pyarrow filesystem)."""

    def load(self) -> list[data.Pair]:
        return data.load_pairs(uri=self.uri, pairs=self.pairs)


class FinetuneConfig(TrainingSchema):
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

    @field_validator("dataset", mode="before")
    @classmethod
    def _from_request(cls, value: Any) -> Any:
        # A request's dataset (``cluster.schemas``) becomes the trainer's, which can load it.
        if isinstance(value, training.DatasetSpec) and not isinstance(value, DatasetSpec):
            return value.model_dump(exclude_none=True)
        return value

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


class FinetuneResult(TrainingSchema):
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
