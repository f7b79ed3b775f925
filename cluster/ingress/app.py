"""The control app: FastAPI under ``@serve.ingress``, one HTTP port for control and predictions."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from ray import serve

from cluster.api import (
    async_predictions,
    batch,
    deploy_tasks,
    deployments,
    embeddings,
    finetune,
    models,
    system,
)
from cluster.api.deps import configure
from cluster.ingress.door import Guard
from cluster.ingress.http import install_error_handlers, require_key
from cluster.ingress.predict_route import PredictFastPath
from cluster.settings import Settings

app = FastAPI(title="modelyard", version="1")
install_error_handlers(app)
app.include_router(system.public)
_v1 = [Depends(require_key)]
for module in (
    deploy_tasks,
    deployments,
    models,
    system,
    embeddings,
    async_predictions,
    finetune,
    batch,
):
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
    def __init__(self, key_digest: str, settings: dict) -> None:
        import ray

        from cluster.api.control import ControlPlane, operator_gateway
        from cluster.ingress import door as guard
        from cluster.ingress.metrics import Metrics
        from cluster.ingress.routing import Router, registry_gateway
        from cluster.registry.actor import registry_handle
        from cluster.settings import NAMESPACE, OPERATOR_ACTOR

        own = Settings.from_replica(settings)
        registry = registry_gateway(registry_handle(), own.registry_timeout_s)
        metrics = Metrics()
        router = Router(registry, metrics)
        operator = operator_gateway(
            ray.get_actor(OPERATOR_ACTOR, namespace=NAMESPACE), own.operator_timeout_s
        )
        configure(ControlPlane(registry, operator, router, metrics), key_digest, own)
        guard.configure(own.max_body_bytes)


def build(key_digest: str, settings: Settings):
    """The control app for ``settings``; the replica gets them all but the admin key, whose
    digest it checks requests against."""
    return Ingress.bind(key_digest, settings.for_replica())
