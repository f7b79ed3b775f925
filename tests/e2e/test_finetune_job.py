"""Fine-tuning on the session's real local Ray: a real TorchTrainer trains a tiny
sentence-transformers model (BERT, hidden size 32, the bundled MiniLM's vocabulary), exports
it, resumes from a checkpoint on two DDP workers and survives a worker that dies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.support import PAIRS
from train_jobs import FinetuneConfig, FinetuneResult, run
from train_jobs.finetune import build_trainer, prepare, train_loop_config
from train_jobs.progress import ProgressPump

pytestmark = pytest.mark.e2e
T = TypeVar("T")

RUN_TIMEOUT_S = 240
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


@pytest.fixture(scope="module", autouse=True)
def quick_train_controller() -> Iterator[None]:
    """Ray Train knobs for a one-node test (the controller reads them when a run starts):
    poll workers every 0.5 s instead of 2 s, so a run ends and a dead worker is noticed
    sooner, and no preemption watcher actor, as nothing here is ever preempted."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TRAIN_ENV.items():
            mp.setenv(name, value)
        yield


def make_config(model: str, root: Path, name: str, **params: Any) -> FinetuneConfig:
    return FinetuneConfig(
        base_model_path=model,
        dataset={"pairs": PAIRS},
        output_dir=str(root / name / "model"),
        storage_path=str(root / "checkpoints"),
        run_name=name,
        task_id=f"task-{name}",
        params={"batch_size": 8, "learning_rate": 1e-3, "eval_fraction": 0.25, **params},
    )


def bounded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread, failing the test after ``RUN_TIMEOUT_S``; a run left
    behind ends with the session's Ray."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args).result(timeout=RUN_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_bounded(config: FinetuneConfig) -> tuple[FinetuneResult, list[dict]]:
    """``run`` with a deadline; returns the result and every progress payload, in order."""
    events: list[dict] = []
    return bounded(run, config, events.append), events


@pytest.fixture(scope="module")
def first_run(local_cluster, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    config = make_config(tiny_model, root, "first", max_steps=6, checkpoint_every_steps=3)
    result, events = run_bounded(config)
    return root, result, events


def steps_of(events: list[dict], event: str = "step") -> list[int]:
    return [e["step"] for e in events if e["event"] == event]


def test_finetune_exports_a_loadable_model_and_metrics(first_run):
    from sentence_transformers import SentenceTransformer

    _, result, events = first_run
    assert (result.start_step, result.steps, result.total_steps) == (0, 6, 6)
    assert (result.train_pairs, result.eval_pairs) == (48, 16)
    for metrics in (result.metrics_before, result.metrics_after):
        assert set(metrics) == {"recall@1", "mrr"}
        assert all(0 <= v <= 1 for v in metrics.values())
    embeddings = SentenceTransformer(result.output_dir, device="cpu").encode(["a", "b"])
    assert embeddings.shape == (2, 32)
    assert Path(result.checkpoint_path).name == "checkpoint_0000006"

    assert steps_of(events) == [1, 2, 3, 4, 5, 6]
    assert steps_of(events, "checkpoint") == [3, 6]
    assert [e["event"] for e in events][:2] == ["started", "eval_before"]
    done = events[-1]
    assert done["event"] == "done" and done["task_id"] == "task-first"
    assert done["metrics_after"] == result.metrics_after


def test_resume_continues_the_step_count_on_two_workers(first_run, tiny_model):
    """The one-worker run's last checkpoint, continued under DDP on two workers."""
    root, first, _ = first_run
    config = make_config(
        tiny_model,
        root,
        "resumed",
        max_steps=9,
        num_workers=2,
        resume_from=first.checkpoint_path,
    )
    result, events = run_bounded(config)
    assert (result.start_step, result.steps) == (6, 9)
    assert steps_of(events) == [7, 8, 9]
    started = [e for e in events if e["event"] == "started"]
    assert [(e["step"], e["world_size"]) for e in started] == [(6, 2)]
    assert result.metrics_before == first.metrics_before  # carried in the checkpoint
    assert set(result.metrics_after) == {"recall@1", "mrr"}


def crash_once(config: dict[str, Any]) -> dict[str, Any] | None:
    """The real worker loop, except the first attempt's process dies after some steps."""
    import ray.train

    from train_jobs import worker

    marker = Path(config["crash_marker"])
    if ray.train.get_checkpoint() is None and not marker.exists():
        real_step, calls = worker.train_step, []

        def dying_step(*args, **kwargs):
            calls.append(1)
            if len(calls) > config["crash_after_steps"]:
                marker.touch()
                os._exit(1)
            return real_step(*args, **kwargs)

        worker.train_step = dying_step
    return worker.train_loop_per_worker(config)


def test_dead_worker_resumes_from_the_last_checkpoint(local_cluster, tiny_model, tmp_path):
    config = make_config(
        tiny_model, tmp_path, "crashy", max_steps=8, checkpoint_every_steps=2, max_failures=1
    )
    config, train, held_out = prepare(config)
    events: list[dict] = []
    with ProgressPump(events.append) as pump:
        loop_config = train_loop_config(config, train, held_out, pump.handle)
        loop_config |= {"crash_marker": str(tmp_path / "crashed"), "crash_after_steps": 5}
        result = bounded(build_trainer(config, loop_config, train_fn=crash_once).fit)
    assert (tmp_path / "crashed").exists()
    # Restarted from the newest checkpoint Ray had taken in when the worker died: step 4,
    # or step 2 if the controller had not yet collected step 4's report.
    restored = result.return_value["start_step"]
    assert restored in (2, 4)
    assert result.return_value["steps"] == 8
    assert steps_of(events, "started") == [0, restored]
    assert steps_of(events)[-(8 - restored) :] == list(range(restored + 1, 9))
