"""The control plane with fake actors: every registry and operator call is bounded (503 with
Retry-After), and a registry created again under its name is found again, by the control
plane and its router alike."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError

from cluster import errors
from cluster.actor_gateway import ActorGateway
from cluster.api import deploy_tasks as tasks
from cluster.api import deployments
from cluster.api.control import ControlPlane
from cluster.ingress import context
from cluster.ingress.http import install_error_handlers
from cluster.ingress.metrics import Metrics
from cluster.ingress.routing import Router

TIMEOUT_S = 0.3


class Method:
    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args, **kwargs):
        self.actor.calls.append(self.name)
        return Ref(self.actor, self.name)


class Ref:
    """Awaitable like an ObjectRef; one never awaited (fire and forget) costs nothing."""

    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def __await__(self):
        return self.actor.answer(self.name).__await__()


class FakeActor:
    """``mode``: 'ok' answers ``answers[name]``, 'hang' never answers, else an exception
    instance to raise (as awaiting the ObjectRef would)."""

    def __init__(self, mode: object = "ok", **answers: object) -> None:
        self.mode = mode
        self.answers = answers
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return Method(self, name)

    async def answer(self, name: str):
        if self.mode == "hang":
            await asyncio.Event().wait()
        if isinstance(self.mode, BaseException):
            raise self.mode
        return self.answers.get(name)


def gateway(actor: FakeActor, lookup=None) -> ActorGateway:
    def missing():
        raise ValueError("Failed to look up actor 'modelyard-registry'")

    return ActorGateway("modelyard-registry", actor, TIMEOUT_S, lookup=lookup or missing)


def control_plane(registry: FakeActor, operator: FakeActor | None = None, lookup=None):
    reg = gateway(registry, lookup)
    router = Router(reg, refresh_s=60)
    op = ActorGateway("modelyard-operator", operator or FakeActor(), TIMEOUT_S)
    return ControlPlane(reg, op, router, Metrics())


@pytest.fixture
def http():
    app = FastAPI()
    install_error_handlers(app)
    for module in (tasks, deployments):
        app.include_router(module.router, prefix="/v1")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "mode",
    [
        "hang",
        GetTimeoutError("timed out"),
        ActorUnavailableError("unreachable", None),
        ActorDiedError(),
    ],
    ids=["never-answers", "get-timeout", "unavailable", "died"],
)
def test_a_registry_that_cannot_answer_gives_503_with_retry_after(http, mode):
    control = control_plane(FakeActor(mode))
    context.configure(control, "digest")
    start = time.monotonic()
    resp = http.get("/v1/deployments")
    assert time.monotonic() - start < TIMEOUT_S + 2.0
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) >= 1
    err = resp.json()["error"]
    assert err["type"] == "unavailable"
    assert "modelyard-registry" in err["message"]
    assert http.get("/v1/tasks").status_code == 503


def test_the_registry_own_errors_pass_through(http):
    inside = RayTaskError("get_task", "Traceback ...", errors.NotFound("task 'x' does not exist"))
    control = control_plane(FakeActor(inside.as_instanceof_cause()))
    context.configure(control, "digest")
    resp = http.get("/v1/tasks/x")
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "task 'x' does not exist"
    assert "Retry-After" not in resp.headers


def test_an_operator_that_never_answers_gives_503():
    control = control_plane(FakeActor(), FakeActor("hang"))
    with pytest.raises(errors.Unavailable, match="modelyard-operator"):
        asyncio.run(control.operator_call("cancel_batch", "t1"))


def test_fire_and_forget_calls_do_not_wait():
    operator = FakeActor("hang")
    control = control_plane(FakeActor(), operator)
    control.operator.kick.remote()  # returns at once; nothing waits on the hung operator
    assert operator.calls == ["kick"]


def test_a_change_the_registry_accepted_is_not_a_503_when_the_route_refresh_hangs():
    class SlowSnapshots(FakeActor):
        async def answer(self, name: str):
            if name == "routing_snapshot":
                await asyncio.Event().wait()
            return await super().answer(name)

    registry = SlowSnapshots(create_delete_task="task-1")
    control = control_plane(registry)
    start = time.monotonic()
    assert asyncio.run(control.submit("create_delete_task", {}, "none", 0)) == "task-1"
    assert time.monotonic() - start < TIMEOUT_S + 2.0
    assert registry.calls == ["create_delete_task", "routing_snapshot"]


def test_a_registry_created_again_under_its_name_is_found_once():
    dead = FakeActor(ActorDiedError())
    fresh = FakeActor(list_models=["m"])
    lookups = []

    def lookup():
        lookups.append(1)
        return fresh

    control = control_plane(dead, lookup=lookup)
    assert asyncio.run(control.call("list_models")) == ["m"]
    assert asyncio.run(control.call("list_models")) == ["m"]
    assert lookups == [1] and dead.calls == ["list_models"]
    assert control.router.registry.handle is fresh  # the router uses the same one


def test_a_name_that_resolves_to_the_same_dead_actor_is_503():
    dead = FakeActor(ActorDiedError())
    control = control_plane(dead, lookup=lambda: dead)
    with pytest.raises(errors.Unavailable):
        asyncio.run(control.call("list_models"))
    assert dead.calls == ["list_models"]  # no second call to a handle known dead


def test_the_control_plane_predicts_through_the_predict_service():
    control = control_plane(FakeActor())
    assert control.predict == control.predictions.predict
    assert control.predictions.router is control.router
    assert control.predictions.metrics is control.metrics
