"""``POST /v1/embeddings``: the OpenAI format, checked with the ``openai`` package itself."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import openai
import pytest

from tests.e2e.support import API_KEY, BUNDLED, deploy, register_echo, wait_for

pytestmark = pytest.mark.e2e

NAME = "emb-minilm"
TEXTS = ["modelyard serves models on Ray", "a cat sat on the mat", "embeddings, please!"]


def _delete(api, name: str) -> None:
    resp = api.post("/v1/delete", json={"deployment_name": name})
    assert resp.status_code in (202, 404), resp.text
    wait_for(lambda: api.get(f"/v1/deployments/{name}").status_code == 404, 120, f"{name} gone")


@pytest.fixture(scope="module")
def minilm(api) -> Iterator[str]:
    assert api.post("/v1/models", json=BUNDLED).status_code in (201, 409)
    task = deploy(api, model_id=BUNDLED["model_id"], deployment_name=NAME)
    assert task["status"] == "done", task
    yield NAME
    _delete(api, NAME)


@pytest.fixture(scope="module")
def oai(local_cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local_cluster.url}/v1", api_key=API_KEY, max_retries=0)


def _predicted(api, texts: list[str]) -> np.ndarray:
    resp = api.post(f"/v1/deployments/{NAME}/predict", json={"args": {"texts": texts}})
    assert resp.status_code == 200, resp.text
    return np.asarray(resp.json()["result"]["embeddings"])


def test_openai_float_matches_predict(api, oai, minilm):
    out = oai.embeddings.create(model=minilm, input=TEXTS, encoding_format="float")
    assert out.object == "list" and out.model == minilm
    assert [d.index for d in out.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in out.data)
    assert out.usage.prompt_tokens == out.usage.total_tokens > 0
    got = np.asarray([d.embedding for d in out.data])
    np.testing.assert_allclose(got, _predicted(api, TEXTS), atol=1e-5)


def test_openai_default_base64_is_decoded_by_the_package(api, oai, minilm):
    # Without encoding_format the package asks for base64 and decodes it itself.
    out = oai.embeddings.create(model=minilm, input=TEXTS)
    got = np.asarray([d.embedding for d in out.data])
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, _predicted(api, TEXTS), atol=1e-5)


def test_explicit_base64_is_little_endian_float32(api, oai, minilm):
    out = oai.embeddings.create(model=minilm, input=TEXTS[:2], encoding_format="base64")
    raw = [d.embedding for d in out.data]
    assert all(isinstance(e, str) for e in raw)
    got = np.stack([np.frombuffer(base64.b64decode(e), dtype="<f4") for e in raw])
    np.testing.assert_allclose(got, _predicted(api, TEXTS[:2]), atol=1e-5)


def test_single_string_input_and_matching_dimensions(api, minilm):
    body = {"model": minilm, "input": "one text", "dimensions": 384, "user": "someone"}
    resp = api.post("/v1/embeddings", json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert len(data) == 1 and data[0]["index"] == 0 and len(data[0]["embedding"]) == 384
    assert resp.json()["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": [[101, 2023]]}, "token arrays"),
        ({"input": [101, 2023]}, "token arrays"),
        ({"input": []}, "at least one"),
        ({"input": ["a"], "encoding_format": "int8"}, "encoding_format"),
        ({"input": ["a"], "dimensions": 128}, "384"),
        ({}, "input"),
    ],
)
def test_bad_bodies_are_422(api, minilm, body, words):
    resp = api.post("/v1/embeddings", json={"model": minilm, **body})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["type"] == "validation_error" and words in err["message"], err


def test_unknown_model_and_auth_errors(api, oai, local_cluster):
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="no-such-deployment", input=["x"])
    bad = openai.OpenAI(base_url=f"{local_cluster.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=NAME, input=["x"])


def test_non_embedding_deployment_is_400(api):
    register_echo(api, "emb-echo")
    assert deploy(api, model_id="emb-echo")["status"] == "done"
    try:
        resp = api.post("/v1/embeddings", json={"model": "emb-echo", "input": ["x"]})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["type"] == "bad_request"
        assert "sentence-transformer" in err["message"] and "custom" in err["message"]
    finally:
        _delete(api, "emb-echo")
