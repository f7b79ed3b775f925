"""The synchronous side of the actor gateway (the operator's reconcile thread): bounded,
the actor's own errors passed through, a registry created again under its name found once;
and the operator and its job runners following a re-created registry."""

from __future__ import annotations

import time

import pytest
from ray.exceptions import ActorDiedError, GetTimeoutError, RayTaskError

from cluster import errors
from cluster.actor_gateway import ActorGateway
from cluster.jobs.batch_runner import BatchRunner
from cluster.operator.actor import Operator

TIMEOUT_S = 0.2


class Handle:
    """An actor handle whose ``method.remote()`` gives a thunk that ``get`` runs: it
    answers ``answers[method]``, or raises ``mode`` when that is an exception; 'hang'
    never answers."""

    def __init__(self, mode: object = "ok", **answers: object) -> None:
        self.mode, self.answers, self.calls = mode, answers, []

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        handle = self

        class Method:
            def remote(self, *args, **kwargs):
                handle.calls.append(name)
                if handle.mode == "hang":
                    return Hang()
                return lambda: handle.answer(name, args, kwargs)

        return Method()

    def answer(self, name, args, kwargs):
        if isinstance(self.mode, BaseException):
            raise self.mode
        answer = self.answers.get(name)
        return answer(*args, **kwargs) if callable(answer) else answer


class Hang:
    """The ref of a call that never answers."""


def run_thunk(ref, timeout_s: float):
    """``ray.get`` for a Handle's refs, with its timeout."""
    if isinstance(ref, Hang):
        time.sleep(timeout_s)
        raise GetTimeoutError("timed out")
    return ref()


def sync_gateway(handle, lookup=None) -> ActorGateway:
    def missing():
        raise ValueError("Failed to look up actor 'modelyard-registry'")

    return ActorGateway(
        "modelyard-registry", handle, TIMEOUT_S, lookup=lookup or missing, get=run_thunk
    )


def test_a_sync_call_answers_and_passes_arguments():
    gw = sync_gateway(Handle(get_task=lambda task_id, kind=None: (task_id, kind)))
    assert gw.call_sync("get_task", "t1", kind="fine_tuning") == ("t1", "fine_tuning")


def test_a_sync_call_that_does_not_answer_in_time_is_unavailable():
    start = time.monotonic()
    with pytest.raises(errors.Unavailable, match="did not answer within 0.2s"):
        sync_gateway(Handle("hang")).call_sync("reconcile_view")
    assert time.monotonic() - start < 2


def test_the_actors_own_errors_pass_through_a_sync_call():
    inside = RayTaskError("get_task", "Traceback ...", errors.NotFound("no task 'x'"))
    with pytest.raises(errors.NotFound):
        sync_gateway(Handle(inside.as_instanceof_cause())).call_sync("get_task", "x")


def test_a_sync_call_finds_a_registry_created_again_under_its_name():
    dead = Handle(ActorDiedError())
    fresh = Handle(owned_serve_apps=["a--v1"])
    lookups = []

    def lookup():
        lookups.append(1)
        return fresh

    gw = sync_gateway(dead, lookup)
    assert gw.call_sync("owned_serve_apps") == ["a--v1"]
    assert gw.call_sync("owned_serve_apps") == ["a--v1"]
    assert (gw.handle, len(lookups), dead.calls) == (fresh, 1, ["owned_serve_apps"])


def test_a_dead_actor_not_created_again_is_unavailable_at_once():
    start = time.monotonic()
    with pytest.raises(errors.Unavailable, match="is not running"):
        sync_gateway(Handle(ActorDiedError())).call_sync("owned_serve_apps")
    same = Handle(ActorDiedError())
    with pytest.raises(errors.Unavailable, match="is not running"):
        sync_gateway(same, lambda: same).call_sync("owned_serve_apps")
    assert time.monotonic() - start < 2


class NoServe:
    def applications(self):
        return {}

    def resources(self):
        return {}, {}


def test_the_operator_and_its_runners_follow_a_registry_created_again():
    dead = Handle(ActorDiedError())
    fresh = Handle(reconcile_view=([], []), owned_serve_apps=[])
    batch = BatchRunner(dead, None)
    op = Operator(sync_gateway(dead, lambda: fresh), NoServe(), tick_s=60, batch=batch)
    try:
        op.reconcile_once()  # the loop's first tick may have got there first: same outcome
        assert op._registry.handle is fresh and "reconcile_view" in fresh.calls
        assert dead.calls == ["reconcile_view"]  # looked up once, then only the new one
        assert batch._registry.handle is fresh  # the runner shares the operator's gateway
    finally:
        op._stop = True
        op.kick()
