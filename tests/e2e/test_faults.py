"""Fault injection under steady load: kill one part of the system at a time and count.

Several client threads send predictions at a fixed total rate to one deployment with two
replicas, over the real Serve HTTP proxy, while one of these is killed: the registry actor,
the operator actor, the control app's ingress replica, one of the two model replicas, the
Serve proxy. Each case records every answer (status, or the transport error a client saw),
the longest gap between two successes, the time until the system is back at full capacity
(a replacement of the killed actor alive, both replicas RUNNING, control and predict routes
answering) and whether the registry still lists every deployment, version and task.

What holds today is asserted (no request hangs past its timeout, nothing in the registry is
lost, capacity comes back within a bound); the non-2xx counts are recorded, not asserted,
where they are not zero yet. Set MODELYARD_FAULT_FIGURES to a file to append the table there.
The load, the probes and the figures are in tests/faults_support.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
import pytest
import ray
from ray.util.state import list_actors

from cluster.settings import CONTROL_APP, NAMESPACE, OPERATOR_ACTOR, REGISTRY_ACTOR
from tests.e2e.support import deploy, register_echo, wait_for
from tests.faults_support import (
    APP,
    MODEL,
    RECOVERY_BOUND_S,
    Load,
    Window,
    assert_held,
    full_capacity,
    lost_rows,
    publish,
    registry_snapshot,
    summarize,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SERVE_NAMESPACE = "serve"


@dataclass
class Target:
    """How to find one live actor of a kind, and whether Ray should restart it in place."""

    name: str
    find: Callable[[], dict]
    restarts_in_place: bool


def _alive(**filters: str) -> list[dict]:
    preds = [(k, "=", v) for k, v in filters.items()] + [("state", "=", "ALIVE")]
    return [asdict(a) for a in list_actors(filters=preds, detail=True)]


def _one(what: str, **filters: str) -> Callable[[], dict]:
    def find() -> dict:
        found = sorted(_alive(**filters), key=lambda a: a["actor_id"])
        assert found, f"no live {what} ({filters})"
        return found[0]

    return find


TARGETS = [
    Target("registry", _one("registry", name=REGISTRY_ACTOR), True),
    Target("operator", _one("operator", name=OPERATOR_ACTOR), True),
    Target("ingress", _one("ingress", class_name=f"ServeReplica:{CONTROL_APP}:Ingress"), False),
    Target("model replica", _one("replica", class_name=f"ServeReplica:{APP}:ModelServer"), False),
    Target("proxy", _one("proxy", class_name="ProxyActor"), False),
]


def _kill(actor: dict, restart: bool) -> None:
    namespace = NAMESPACE if actor["name"] in (REGISTRY_ACTOR, OPERATOR_ACTOR) else SERVE_NAMESPACE
    ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=not restart)


def _replaced(target: Target, killed: dict, alive_before: set[str]) -> bool:
    """A restartable actor is back under its own id with one more restart; anything else has
    a new actor of its class (Serve's controller starts a fresh replica or proxy)."""
    if target.restarts_in_place:
        now = _alive(actor_id=killed["actor_id"])
        return bool(now) and now[0]["num_restarts"] > killed["num_restarts"]
    return bool(_ids(killed["class_name"]) - alive_before)


def _ids(class_name: str) -> set[str]:
    return {a["actor_id"] for a in _alive(class_name=class_name)}


def _run_case(api: httpx.Client, url: str, target: Target) -> dict:
    before = registry_snapshot(api)
    victim = target.find()
    alive_before = _ids(victim["class_name"])
    load = Load(url).start()
    start = time.monotonic()
    load.collect()
    killed_at = time.monotonic()
    _kill(victim, target.restarts_in_place)
    wait_for(
        lambda: _replaced(target, victim, alive_before), RECOVERY_BOUND_S, f"a new {target.name}"
    )
    wait_for(lambda: full_capacity(api), RECOVERY_BOUND_S, "full capacity", interval_s=0.5)
    recovered_at = time.monotonic()
    load.collect()
    answers = load.stop()
    window = Window(start, killed_at, recovered_at, time.monotonic())
    return summarize(target.name, answers, window, lost_rows(before, registry_snapshot(api)))


@pytest.fixture(scope="module")
def two_replicas(api):
    register_echo(api, MODEL, delay_s=0.005)
    task = deploy(api, model_id=MODEL, config={"num_replicas": 2})
    assert task["status"] == "done", task
    wait_for(lambda: full_capacity(api), 60, "both replicas RUNNING")
    return MODEL


@pytest.mark.timeout(900)
def test_kill_each_part_under_load(api, local_cluster, two_replicas, clean_serve, tmp_path):
    rows = []
    for target in TARGETS:
        rows.append(_run_case(api, local_cluster.url, target))
        print(f"\nFAULT CASE {json.dumps(rows[-1])}", flush=True)
    publish(rows)
    (tmp_path / "fault-figures.json").write_text(json.dumps(rows, indent=2))
    for r in rows:
        assert_held(r)
