"""The predict service with fake replicas: the traffic split (weights, and a version pinned by
header or body) picks the app that answers, outcomes are counted per app, and a prediction
whose replica dies is sent once more, never twice, and never after the model itself failed."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from cluster import errors
from cluster.actor_gateway import ActorGateway
from cluster.ingress.batcher import Limits
from cluster.ingress.metrics import Metrics
from cluster.ingress.predict import PredictService, pick
from cluster.ingress.routing import Route, Router, Variant
from cluster.schemas import PredictRequest


def route_of(*variants: Variant, batched: bool = False, kind: str = "custom") -> Route:
    return Route(
        name="d",
        status="ACTIVE",
        kind=kind,
        model_version=1,
        request_timeout_s=5.0,
        variants=variants,
        limits=Limits() if batched else None,
    )


class Response:
    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    def __await__(self):
        async def settle():
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

        return settle().__await__()

    def cancel(self) -> None:
        return None


class FakeHandle:
    """Each call takes the next outcome: an answer dict or an exception to raise."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def options(self, **_: object) -> FakeHandle:
        return self

    def remote(self, payload):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, dict) and isinstance(payload, list):  # predict_many
            return Response([outcome] * len(payload))
        return Response(outcome)


def answer(version: int) -> dict:
    return {"ok": True, "result": {"from": version}, "model_version": version}


class AnswersForever:
    """A replica of ``version`` that answers every call."""

    def __init__(self, version: int) -> None:
        self.version, self.calls = version, 0

    def remote(self, payload):
        self.calls += 1
        return Response(answer(self.version))


class FakeRouter:
    """The routing cache for one deployment, with a replica per app."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self.handles = {v.app: AnswersForever(v.version) for v in route.variants}

    async def route(self, name: str) -> Route:
        assert name == self._route.name
        return self._route

    def handle(self, app: str) -> AnswersForever:
        return self.handles[app]


V1, V2 = Variant("d--v1", 1, 90), Variant("d--v2", 2, 10)


def served_by(route: Route, n: int, version=None, body_version=None) -> Counter:
    service = PredictService(FakeRouter(route), Metrics())  # type: ignore[arg-type]
    req = PredictRequest(args={"x": 1}, version=body_version)

    async def run() -> Counter:
        outs = [await service.predict("d", req, version) for _ in range(n)]
        return Counter(out["model_version"] for out in outs)

    return asyncio.run(run())


def test_traffic_splits_by_weight():
    random.seed(7)
    counts = served_by(route_of(V1, V2), 2000)
    assert set(counts) == {1, 2}
    assert 0.85 < counts[1] / 2000 < 0.95


def test_a_version_without_weight_gets_no_traffic_until_pinned():
    route = route_of(Variant("d--v1", 1, 100), Variant("d--v2", 2, 0))
    assert served_by(route, 200) == Counter({1: 200})
    assert served_by(route, 5, version=2) == Counter({2: 5})
    assert served_by(route, 5, body_version=2) == Counter({2: 5})


def test_the_header_version_wins_over_the_body_version():
    assert served_by(route_of(V1, V2), 5, version=1, body_version=2) == Counter({1: 5})


def test_a_pinned_version_that_is_not_live_is_404_naming_the_live_ones():
    with pytest.raises(errors.NotFound, match=r"does not serve version 3 \(live: 1, 2\)"):
        served_by(route_of(V1, V2), 1, version=3)


def test_without_any_weight_the_first_app_answers():
    route = route_of(Variant("d--v1", 1, 0), Variant("d--v2", 2, 0))
    assert pick(route).app == "d--v1"


def test_outcomes_are_counted_per_app():
    metrics = Metrics()
    router = FakeRouter(route_of(V1, V2))
    service = PredictService(router, metrics)  # type: ignore[arg-type]
    asyncio.run(service.predict("d", PredictRequest(args={}), 2))
    assert metrics.requests[("d", "success")] == 1
    assert metrics.apps["d--v2"].inflight == 0
    assert router.handles["d--v2"].calls == 1 and router.handles["d--v1"].calls == 0


def test_sentence_transformer_args_are_checked_before_any_call():
    router = FakeRouter(route_of(V1, kind="sentence-transformer"))
    service = PredictService(router, Metrics())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="texts"):
        asyncio.run(service.predict("d", PredictRequest(args={"texts": 5})))
    assert router.handles["d--v1"].calls == 0


# -- predictions whose replica dies ---------------------------------------------------------


OK = {"ok": True, "result": {"y": 1}, "model_version": 1}
FAILED = {"ok": False, "error_type": "predictor", "error": "ValueError: bad", "traceback": "T"}


def predict_with(handle: FakeHandle, batched: bool) -> dict:
    """Through the real router (its batcher and its retry rule), with the route in its cache."""

    def missing():
        raise ValueError("Failed to look up actor 'modelyard-registry'")

    router = Router(ActorGateway("modelyard-registry", object(), 0.3, lookup=missing))
    router._routes["d"] = route_of(Variant("d--v1", 1, 100), batched=batched)
    router._handles["d--v1"] = handle
    router.start = lambda: None  # no background refresh in this test
    service = PredictService(router, Metrics())
    return asyncio.run(service.predict("d", PredictRequest(args={"x": 1})))


@pytest.mark.parametrize("batched", [True, False], ids=["batcher", "per-request"])
def test_a_replica_that_dies_mid_request_is_retried_once_and_answers(batched):
    handle = FakeHandle(ActorDiedError(), OK)
    assert predict_with(handle, batched)["result"] == {"y": 1}
    assert handle.calls == 2


@pytest.mark.parametrize("batched", [True, False], ids=["batcher", "per-request"])
def test_two_deaths_are_503(batched):
    handle = FakeHandle(ActorDiedError(), ActorUnavailableError("gone", None), OK)
    with pytest.raises(errors.Unavailable) as info:
        predict_with(handle, batched)
    assert info.value.status_code == 503 and info.value.retry_after_s
    assert handle.calls == 2


@pytest.mark.parametrize("batched", [True, False], ids=["batcher", "per-request"])
def test_a_predictor_failure_is_not_retried(batched):
    handle = FakeHandle(FAILED, OK)
    with pytest.raises(errors.PredictorFailed) as info:
        predict_with(handle, batched)
    assert info.value.traceback == "T"
    assert handle.calls == 1


@pytest.mark.parametrize("batched", [True, False], ids=["batcher", "per-request"])
def test_an_unknown_upstream_error_is_not_retried_and_its_text_stays_out(batched):
    handle = FakeHandle(RuntimeError("/srv/secret/path.py line 3"), OK)
    with pytest.raises(errors.NotReady) as info:
        predict_with(handle, batched)
    assert "/srv/secret" not in info.value.message
    assert handle.calls == 1
