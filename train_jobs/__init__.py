"""Ray Train fine-tuning entrypoints: what runs in training workers.

- ``config``: ``FinetuneConfig`` / ``FinetuneParams`` / ``FinetuneResult``
- ``data``: load, validate and split (anchor, positive) pairs
- ``finetune``: ``run(config, on_progress)`` and the CLI (``python -m train_jobs.finetune``)
- ``worker``: the per-worker loop; ``steps``, ``state``, ``metrics``: its parts
- ``checkpoints``: checkpoint names and which checkpoint a run starts from
- ``progress``: progress payloads from the rank-0 worker to listeners
"""

from typing import Any

from train_jobs.config import DatasetSpec, FinetuneConfig, FinetuneParams, FinetuneResult

__all__ = ["DatasetSpec", "FinetuneConfig", "FinetuneParams", "FinetuneResult", "run"]


def __getattr__(name: str) -> Any:
    # ``run`` (and Ray with it) loads on first use, so reading the schemas stays light and
    # ``python -m train_jobs.finetune`` does not import its own module twice.
    if name == "run":
        from train_jobs.finetune import run

        return run
    raise AttributeError(f"module 'train_jobs' has no attribute {name!r}")
