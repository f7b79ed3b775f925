"""Size before work, on the real server: the key and the body's size are checked before the
body is read; texts per request and characters per text are refused with 422; a replica
encodes a large request in chunks of max_batch_size with the same embeddings."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.e2e.support import API_KEY, BUNDLED, deploy, wait_for

pytestmark = pytest.mark.e2e

BIG = 20 << 20  # over the default MODELYARD_MAX_BODY_BYTES (8 MiB)
# The client gives up after this: an answer that waited for 20 MiB to be parsed would come
# much later, so a refusal that fits in it was made before the body was read.
QUICK_S = 10.0
NAME = "limits-minilm"
KEY = {"Authorization": f"Bearer {API_KEY}"}


def _post(url: str, content, headers: dict) -> httpx.Response:
    return httpx.post(url, content=content, headers=headers, timeout=QUICK_S)


@pytest.mark.parametrize("path", ["/v1/deployments/nowhere/predict", "/v1/models"])
def test_a_big_body_without_the_key_is_refused_quickly(local_cluster, path):
    json_type = {"Content-Type": "application/json"}
    resp = _post(local_cluster.url + path, b"x" * BIG, json_type)
    assert resp.status_code in (401, 413), resp.text
    assert resp.json()["error"]["type"] in ("unauthorized", "payload_too_large")


@pytest.mark.parametrize("path", ["/v1/deployments/nowhere/predict", "/v1/embeddings"])
def test_a_big_body_with_the_key_is_413_quickly(local_cluster, path):
    headers = {**KEY, "Content-Type": "application/json"}
    resp = _post(local_cluster.url + path, b"x" * BIG, headers)
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert error["type"] == "payload_too_large"
    assert "body" in error["message"] and "MODELYARD_MAX_BODY_BYTES" in error["message"]


def test_a_chunked_body_over_the_limit_is_413(local_cluster):
    chunk = b"x" * (1 << 20)
    body = (chunk for _ in range(BIG // len(chunk)))  # no Content-Length: chunked
    resp = _post(local_cluster.url + "/v1/models", body, KEY)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["type"] == "payload_too_large"


def test_the_server_serves_on_after_refusing_big_bodies(api, local_cluster):
    for _ in range(3):
        _post(local_cluster.url + "/v1/models", b"x" * BIG, KEY)
    assert httpx.get(f"{local_cluster.url}/healthz", timeout=5).status_code == 200
    assert api.get("/v1/deployments").status_code == 200


@pytest.mark.parametrize(
    ("body_input", "message"),
    [
        (["x"] * 4097, "input: at most 4096 texts per request (got 4097)"),
        (["ok", "y" * 20_001], "input.1: at most 20000 characters per text (got 20001)"),
    ],
)
def test_embeddings_refuse_too_many_or_too_long_texts(api, body_input, message):
    resp = api.post("/v1/embeddings", json={"model": "any", "input": body_input})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"] == message


@pytest.fixture(scope="module")
def minilm(api) -> Iterator[str]:
    assert api.post("/v1/models", json=BUNDLED).status_code in (201, 409)
    config = {"max_batch_size": 8, "max_ongoing_requests": 8}
    task = deploy(api, model_id=BUNDLED["model_id"], deployment_name=NAME, config=config)
    assert task["status"] == "done", task
    yield NAME
    assert api.post("/v1/delete", json={"deployment_name": NAME}).status_code in (202, 404)
    wait_for(lambda: api.get(f"/v1/deployments/{NAME}").status_code == 404, 120, f"{NAME} gone")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["x"] * 4097, "texts: at most 4096 texts per request (got 4097)"),
        (["ok", "y" * 20_001], "texts.1: at most 20000 characters per text (got 20001)"),
    ],
)
def test_predict_refuses_too_many_or_too_long_texts(api, minilm, texts, message):
    resp = api.post(f"/v1/deployments/{minilm}/predict", json={"args": {"texts": texts}})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"] == message


def test_a_request_larger_than_max_batch_size_embeds_as_its_texts_alone(api, minilm):
    # 40 texts of different lengths, encoded 8 at a time by the replica: each embedding is
    # the one the text gets on its own.
    texts = [("modelyard serves models on Ray " * (1 + i % 7)).strip() for i in range(40)]
    resp = api.post(f"/v1/deployments/{minilm}/predict", json={"args": {"texts": texts}})
    assert resp.status_code == 200, resp.text
    together = np.asarray(resp.json()["result"]["embeddings"])
    assert together.shape == (40, 384)
    for i in (0, 3, 6, 39):
        alone = api.post(f"/v1/deployments/{minilm}/predict", json={"args": {"texts": [texts[i]]}})
        assert alone.status_code == 200, alone.text
        np.testing.assert_allclose(together[i], alone.json()["result"]["embeddings"][0], atol=1e-5)
