"""The control app: FastAPI under ``@serve.ingress``, one HTTP port for control and predictions."""

from __future__ import annotations

import ray
from fastapi import Depends, FastAPI
from ray import serve

from cluster.actor_gateway import operator_gateway, registry_gateway
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
from cluster.api.control import ControlPlane
from cluster.ingress import context, door
from cluster.ingress.auth import require_key
from cluster.ingress.door import Door
from cluster.ingress.http import install_error_handlers
from cluster.ingress.metrics import Metrics
from cluster.ingress.routing import Router
from cluster.registry.actor import registry_handle
from cluster.settings import NAMESPACE, OPERATOR_ACTOR, Settings

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
# Added last, so it runs first: the key, the body's size, and predictions answered there.
app.add_middleware(Door)


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
        own = Settings.from_replica(settings)
        registry = registry_gateway(registry_handle(), own.registry_timeout_s)
        metrics = Metrics()
        router = Router(registry, metrics)
        operator = operator_gateway(
            ray.get_actor(OPERATOR_ACTOR, namespace=NAMESPACE), own.operator_timeout_s
        )
        control = ControlPlane(registry, operator, router, metrics, own)
        context.configure(control, key_digest, own)
        door.configure(own.max_body_bytes)


def build(key_digest: str, settings: Settings):
    """The control app for ``settings``; the replica gets them all but the admin key, whose
    digest it checks requests against."""
    return Ingress.bind(key_digest, settings.for_replica())
