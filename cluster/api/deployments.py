"""Resource-style deployment API: list, describe, patch, swap, stop/start, predict."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from cluster.api.deps import ControlDep, get_settings
from cluster.ingress import predict_route
from cluster.ingress.http import FastJSONResponse
from cluster.schemas import (
    AsyncAccepted,
    DeploymentEvent,
    DeploymentPublic,
    DeploymentUpdate,
    PredictRequest,
    RolloutOptions,
    SetVersionRequest,
    Task,
)
from cluster.uris import with_url_args

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.get("")
async def list_deployments(control: ControlDep) -> list[DeploymentPublic]:
    return await control.describe_many(await control.call("list_deployments"))


@router.get("/{name}")
async def describe(
    name: str,
    control: ControlDep,
    wait: Annotated[bool, Query(description="Answer once no change is pending.")] = False,
    timeout_s: Annotated[float, Query(gt=0, le=600)] = 30,
) -> DeploymentPublic:
    if wait:
        return await control.describe(await control.wait_settled(name, timeout_s))
    return await control.describe(await control.call("get_deployment", name))


@router.patch("/{name}")
async def patch(name: str, req: DeploymentUpdate, control: ControlDep) -> DeploymentPublic:
    record, _ = await control.patch(name, req)
    return await control.describe(record)


@router.put("/{name}/model-version", status_code=202)
async def set_model_version(name: str, req: SetVersionRequest, control: ControlDep) -> Task:
    return await control.set_version(name, req)


@router.post("/{name}/rollback", status_code=202)
async def rollback(name: str, control: ControlDep, options: RolloutOptions | None = None) -> Task:
    """The body, optional, is the rollout options of a swap back to the previous version."""
    return await control.rollback(name, options)


@router.post("/{name}/stop")
async def stop(name: str, control: ControlDep) -> DeploymentPublic:
    return await control.change("stop_deployment", name)


@router.post("/{name}/start")
async def start(name: str, control: ControlDep) -> DeploymentPublic:
    return await control.change("start_deployment", name)


@router.get("/{name}/events")
async def events(name: str, control: ControlDep) -> list[DeploymentEvent]:
    return await control.call("list_events", name)


# What /openapi.json says of the predict route (schemathesis fuzzes from it): the handler
# below takes the raw request, so FastAPI parses nothing and this is declared by hand.
PREDICT_OPENAPI = {
    "parameters": [
        {
            "name": "x-model-version",
            "in": "header",
            "required": False,
            "description": "Pin a live version; wins over the body's version.",
            "schema": {"type": "integer", "minimum": 1},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    },
}


@router.post("/{name}/predict", response_model=None, openapi_extra=PREDICT_OPENAPI)
async def predict(name: str, request: Request) -> FastJSONResponse:
    """One prediction: ``{status, result, model_version, request_id}``."""
    # The door (cluster.ingress.door) answers every real POST .../predict itself, through
    # cluster.ingress.predict_route, before FastAPI sees it. This declaration exists for
    # /openapi.json, and where it runs (an app built without the door) it calls that same
    # code: one validation, one predict service, one error format.
    status, payload, headers = await predict_route.answer(
        name, await request.body(), dict(request.scope["headers"])
    )
    return FastJSONResponse(payload, status_code=status, headers=headers)


@router.post("/{name}/async-predict", status_code=202)
async def async_predict(name: str, req: PredictRequest, control: ControlDep) -> AsyncAccepted:
    """Queue a prediction; poll ``GET /v1/async-tasks/{task_id}`` for its result. A full
    queue answers 429 with Retry-After.

    Pass a ``request_id`` to make retries safe: while its task is kept (until its result
    expires), the same ``request_id`` for the same deployment answers that task's id
    instead of queueing the prediction again."""
    req = await with_url_args(req, get_settings())
    task = await control.call("enqueue_async", name, req)
    control.nudge_async_worker()
    return AsyncAccepted(task_id=task.task_id)
