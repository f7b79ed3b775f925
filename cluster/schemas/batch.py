"""Batch predictions: a JSONL file in, a JSONL file out, over a deployment's model version."""

from __future__ import annotations

from pydantic import Field, model_validator

from cluster.schemas.base import Schema

URI_HELP = (
    "Or a URI of s3://, gs://, gcs://, hdfs://, viewfs://, abfs:// or abfss://. Local paths are "
    "percent-decoded once; '~', '..' and NUL are refused; the registry database and the key "
    "file are never read or written."
)
INPUT_HELP = "A path relative to the storage root, an absolute path or file:// URI inside it. "
OUTPUT_HELP = (
    "A path relative to <storage root>/outputs (where it is written), an absolute path or "
    "file:// URI under that folder. "
)


class BatchPredictCreate(Schema):
    """``POST /v1/deployments/{name}/batch-predictions``.

    Input lines are ``{"id": ..., "args": {...}}`` (a predictor's keyword arguments, as in
    ``/predict``) or, for sentence-transformer models, ``{"id": ..., "text": "..."}``. Output
    lines keep the input's order and ids: ``{"id": ..., "result": ...}``,
    ``{"id": ..., "embedding": [...]}`` or ``{"id": ..., "error": "..."}`` for a bad row.
    """

    input_uri: str = Field(
        min_length=1, max_length=4096, description="JSONL input. " + INPUT_HELP + URI_HELP
    )
    output_uri: str = Field(
        min_length=1,
        max_length=4096,
        description="JSONL output, written whole when the job ends. " + OUTPUT_HELP + URI_HELP,
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Rows per model call.")
    concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Model copies (Ray Data actors), each with the deployment's resources.",
    )
    num_cpus_per_copy: float | None = Field(
        default=None,
        gt=0,
        le=1024,
        description=(
            "CPUs of each model copy instead of the deployment's num_cpus (its GPUs stay as "
            "they are); Ray sets the copy's torch threads from it. On CPU, several "
            "single-CPU copies can beat one copy with all the CPUs: one copy's threads wait "
            "for each other at every step."
        ),
    )
    overwrite: bool = Field(
        default=False,
        description="Replace output_uri when it exists (never a file modelyard owns).",
    )

    @model_validator(mode="after")
    def _distinct(self) -> BatchPredictCreate:
        if self.input_uri == self.output_uri:
            raise ValueError("output_uri must differ from input_uri")
        return self


class BatchProgress(Schema):
    """``detail.progress`` of a batch-prediction task, as the job reports it."""

    rows_done: int = 0
    rows_total: int | None = None
    percent: float = 0.0
    errors: int = Field(default=0, description="Rows answered with an error.")
    elapsed_s: float = Field(default=0.0, description="Since the job started.")
    first_output_s: float | None = Field(
        default=None, description="Start-up: from the job's start to its first output rows."
    )
    rows_per_s: float | None = Field(
        default=None,
        description=(
            "Steady rate: rows/s fitted to the output from 10% to 90% of the rows (start-up "
            "left out); while the job runs, to the output so far."
        ),
    )
