"""``ModelServer``: the one Serve deployment class every model version runs in.

A replica loads its version by kind (see ``serve_apps.kinds``), on the GPU when Ray gave
it one and CUDA is there, else on the CPU (``serve_apps.runtime``); warms up before it
reports healthy; and batches requests two ways: ``predict_many`` takes a batch the ingress
already gathered (see ``cluster.ingress.batcher``), and ``__call__`` batches single
requests with ``@serve.batch``, whose size and wait come from ``user_config`` and change
through ``reconfigure`` without a restart.

Each call answers a plain dict, never raises for a request's own failure:
``{"ok": True, "result": ..., "model_version": N}`` or
``{"ok": False, "error_type": "bad_input" | "predictor_error", "error": ..., "traceback": ...}``.
"""

from __future__ import annotations

import traceback
from typing import Any

from ray import serve

from serve_apps import kinds
from serve_apps.runtime import pick_device, use_ray_cpu_share


def _failure(kind: str, exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "error_type": kind,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


@serve.deployment(name="ModelServer")
class ModelServer:
    def __init__(self, spec: dict[str, Any]) -> None:
        use_ray_cpu_share()
        self.version = int(spec["version"])
        self.device = pick_device()
        self.predictor = kinds.load(spec, self.device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        max_batch_size = int(user_config.get("max_batch_size", 32))
        # The model's own bound too: the ingress gathers up to max_batch_size requests into
        # one predict_many call, each of which may hold many texts.
        self.predictor.max_batch_size = max_batch_size
        self._predict_batch.set_max_batch_size(max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(
            float(user_config.get("batch_wait_timeout_s", 0.005))
        )

    def check_health(self) -> None:
        if self.predictor is None:
            raise RuntimeError("model not loaded")

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "model_version": self.version,
            "device": self.device,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    async def __call__(self, args: dict[str, Any]) -> Any:
        from starlette.requests import Request

        if isinstance(args, Request):
            # With Serve's direct ingress a replica also listens for HTTP on a port of its
            # own; predictions come through the modelyard ingress (auth, routing, limits).
            from starlette.responses import JSONResponse

            message = "model replicas take no HTTP requests; use the modelyard URL"
            return JSONResponse({"error": {"type": "not_found", "message": message}}, 404)
        try:
            item = self.predictor.decode(args)
        except (ValueError, TypeError, KeyError) as exc:
            return _failure("bad_input", exc)
        try:
            result = await self._predict_batch(item)
        except Exception as exc:
            return _failure("predictor_error", exc)
        return {"ok": True, "result": result, "model_version": self.version}

    async def predict_many(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Requests the ingress already gathered into one call: one model call, one answer
        each, in order. A request whose args do not decode fails alone; when the model call
        fails for a batch of several, each request is retried alone so that one bad request
        does not fail its neighbours."""
        answers: list[dict[str, Any] | None] = [None] * len(batch)
        slots, items = [], []
        for i, args in enumerate(batch):
            try:
                items.append(self.predictor.decode(args))
                slots.append(i)
            except (ValueError, TypeError, KeyError) as exc:
                answers[i] = _failure("bad_input", exc)
        for i, answer in zip(slots, self._predict_isolated(items), strict=True):
            answers[i] = answer
        return answers  # type: ignore[return-value]

    def _predict_isolated(self, items: list[Any]) -> list[dict[str, Any]]:
        if not items:
            return []
        try:
            results = self.predictor.predict_batch(items)
        except Exception as exc:
            if len(items) == 1:
                return [_failure("predictor_error", exc)]
            return [self._predict_isolated([item])[0] for item in items]
        return [{"ok": True, "result": r, "model_version": self.version} for r in results]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, items: list[Any]) -> list[Any]:
        # Run the model on this (user-code) event loop, not in a worker thread: while it
        # computes, new requests queue up in Serve's own loop, and the next batch takes all
        # of them. Off-loading to a thread lets @serve.batch close the next batch after its
        # short wait, so under load batches stay near size 1 (measured: mean 1.1 vs 20.6).
        return self.predictor.predict_batch(items)
