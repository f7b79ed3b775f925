"""The control app: FastAPI under ``@serve.ingress``, one HTTP port for control and predictions."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from ray import serve

from cluster.api import (
    async_tasks,
    batch,
    deployments,
    embeddings,
    finetune,
    models,
    system,
    tasks,
)
from cluster.api.deps import configure
from cluster.fastpath import PredictFastPath
from cluster.guard import DEFAULT_MAX_BODY_BYTES, Guard
from cluster.http import install_error_handlers, require_key

app = FastAPI(title="modelyard", version="1")
install_error_handlers(app)
app.include_router(system.public)
_v1 = [Depends(require_key)]
for module in (tasks, deployments, models, system, embeddings, async_tasks, finetune, batch):
    app.include_router(module.router, prefix="/v1", dependencies=_v1)
app.add_middleware(PredictFastPath)  # answers well-formed predictions before FastAPI's stack
app.add_middleware(Guard)  # added last, so it runs first: the key and the body size


# The ingress only awaits (routing, batching, registry calls), so its user code and its
# handles' router can share the replica's event loop: that saves two cross-thread hops per
# request, which on a small machine is a large share of the ingress's CPU.
INGRESS_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}


@serve.deployment(
    name="Ingress",
    max_ongoing_requests=2048,
    ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": INGRESS_ENV}},
)
@serve.ingress(app)
class Ingress:
    def __init__(
        self, key_digest: str, storage_root: str = "", max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        import ray

        from cluster import guard
        from cluster.control import ControlPlane
        from cluster.metrics import Metrics
        from cluster.registry import registry_handle
        from cluster.routing import Router
        from cluster.settings import NAMESPACE, OPERATOR_ACTOR

        registry = registry_handle()
        metrics = Metrics()
        router = Router(registry, metrics)
        operator = ray.get_actor(OPERATOR_ACTOR, namespace=NAMESPACE)
        configure(ControlPlane(registry, operator, router, metrics), key_digest, storage_root)
        guard.configure(max_body_bytes)


def build(key_digest: str, storage_root: str = "", max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    return Ingress.bind(key_digest, storage_root, max_body_bytes)
