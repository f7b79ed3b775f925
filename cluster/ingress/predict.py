"""The predict service: one prediction from its deployment's name to a replica's answer.

``PredictService.predict`` looks the deployment up in the routing cache
(``cluster.ingress.routing``), picks the version that answers (by traffic weight, or the
one pinned), sends the request (through the app's ingress batcher, or one Serve call per
request for autoscaling deployments), and counts the outcome for ``/metrics`` and for
rollout decisions. Failures of the call become modelyard errors here, with no Ray or Serve
text in the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from cluster import errors
from cluster.errors import replica_lost, unwrap
from cluster.ingress.metrics import Metrics
from cluster.ingress.routing import Route, Router, Variant
from cluster.schemas import EmbedArgs, PredictRequest
from cluster.settings import Settings
from cluster.uris import fetch_predict_args

logger = logging.getLogger("modelyard.predict")


def pick(route: Route, version: int | None = None) -> Variant:
    """The live app that answers: the one serving ``version`` when pinned, else one chosen
    at random by traffic weight."""
    if version is not None:
        for v in route.variants:
            if v.version == version:
                return v
        live = ", ".join(str(v.version) for v in route.variants)
        raise errors.NotFound(
            f"deployment '{route.name}' does not serve version {version} (live: {live})"
        )
    weighted = [v for v in route.variants if v.weight > 0]
    if len(weighted) == 1:
        return weighted[0]
    if not weighted:
        return route.variants[0]
    return random.choices(weighted, weights=[v.weight for v in weighted])[0]


class PredictService:
    """``settings`` are the ingress replica's (None in the async worker, which queues args
    in place of a url, so no local path is read there)."""

    def __init__(self, router: Router, metrics: Metrics, settings: Settings | None = None) -> None:
        self.router = router
        self.metrics = metrics
        self.settings = settings

    async def predict(
        self, name: str, req: PredictRequest, version: int | None = None
    ) -> dict[str, Any]:
        """One prediction; ``version`` (the ``X-Model-Version`` header) pins a live version
        like ``req.version`` does, and wins over it."""
        route = await self.router.route(name)
        args = req.args if req.args is not None else await self._fetch_args(req.url or "")
        if route.kind == "sentence-transformer":
            EmbedArgs.model_validate(args)
        variant = pick(route, version if version is not None else req.version)
        stats = self.metrics.apps[variant.app]
        start, outcome = time.perf_counter(), "error"
        stats.inflight += 1
        try:
            out = await self._call(route, variant.app, args)
            outcome = "success"
        except errors.ModelyardError as exc:
            outcome = exc.error_type
            raise
        finally:
            stats.inflight -= 1
            self.metrics.observe(name, outcome, (time.perf_counter() - start) * 1000, variant.app)
        return {
            "status": "SUCCESS",
            "result": out["result"],
            "model_version": out["model_version"],
            "request_id": req.request_id,
        }

    async def _fetch_args(self, url: str) -> dict[str, Any]:
        """The args at a predict ``url``, through the one path and URI checker."""
        return await fetch_predict_args(url, self.settings)

    async def _call(self, route: Route, app: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if route.limits is not None:
                out = await self.router.batcher(route, app).submit(args, route.request_timeout_s)
            else:
                out = await self._call_one(route, app, args)
        except Exception as exc:
            raise _upstream_error(route.name, exc) from None
        if not out["ok"]:
            if out["error_type"] == "bad_input":
                raise errors.BadRequest(out["error"])
            raise errors.PredictorFailed(out["error"], traceback=out.get("traceback"))
        return out

    async def _call_one(self, route: Route, app: str, args: dict[str, Any]) -> dict[str, Any]:
        """One request, one call: Serve batches it in the replica (autoscaling deployments).
        A replica that dies with the request gets it sent once more, within the same time
        budget; Serve routes the second call to another replica."""
        deadline = time.monotonic() + route.request_timeout_s
        try:
            return await self._send_one(route, app, args, route.request_timeout_s)
        except Exception as exc:
            if not replica_lost(exc):
                raise
        return await self._send_one(route, app, args, max(0.0, deadline - time.monotonic()))

    async def _send_one(
        self, route: Route, app: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        response = self.router.handle(app).remote(args)
        try:
            return await asyncio.wait_for(response, timeout=timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise errors.UpstreamTimeout(
                f"deployment '{route.name}' did not answer within {route.request_timeout_s:g}s "
                "(config.request_timeout_s)"
            ) from None


def _upstream_error(name: str, exc: BaseException) -> errors.ModelyardError:
    """What a failed call to a model app answers. Serve's and Ray's texts can name hosts,
    files and internals: they go to the log, never into the answer."""
    if replica_lost(exc):  # before unwrap: an ActorDiedError carries a `cause` of its own
        return errors.Unavailable(
            f"deployment '{name}' lost the replica serving the request, twice; retry shortly"
        )
    inner = unwrap(exc)
    if isinstance(inner, BackPressureError):
        return errors.Overloaded(
            f"deployment '{name}' is at capacity: {inner}; retry later or raise "
            "config.max_queued_requests / num_replicas",
            retry_after_s=getattr(inner, "_retry_after_s", None) or 1.0,
        )
    if isinstance(inner, errors.ModelyardError):
        return inner
    if isinstance(inner, DeploymentUnavailableError):
        return errors.NotReady(f"deployment '{name}' failed to deploy; see its status")
    logger.error("deployment %r could not serve a request", name, exc_info=exc)
    return errors.NotReady(
        f"deployment '{name}' could not serve the request; the ingress log has the cause"
    )
