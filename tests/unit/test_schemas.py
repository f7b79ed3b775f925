"""Validation at the edge: errors name the fields to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.schemas import (
    Autoscaling,
    DeleteRequest,
    DeploymentConfig,
    DeploymentRecord,
    DeployRequest,
    EmbedArgs,
    ModelCreate,
    PredictRequest,
    app_name,
)


def message(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "; ".join(e["msg"] for e in exc.value.errors())


def test_num_replicas_and_autoscaling_are_exclusive():
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(num_replicas=2, autoscaling=Autoscaling(min_replicas=1, max_replicas=3))
    assert "num_replicas" in message(exc)
    assert "autoscaling" in message(exc)


def test_max_batch_size_above_max_ongoing_requests():
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(max_batch_size=64, max_ongoing_requests=8)
    text = message(exc)
    assert "max_batch_size (64)" in text
    assert "max_ongoing_requests (8)" in text
    DeploymentConfig(max_batch_size=8, max_ongoing_requests=8)


def test_autoscaling_bounds():
    with pytest.raises(ValidationError) as exc:
        Autoscaling(min_replicas=3, max_replicas=2)
    assert "max_replicas (2) must be >= min_replicas (3)" in message(exc)
    assert Autoscaling(min_replicas=0, max_replicas=2).max_replicas == 2


def test_config_defaults_and_replicas_wanted():
    assert DeploymentConfig().replicas_wanted == 1
    assert DeploymentConfig(num_replicas=3).replicas_wanted == 3
    auto = DeploymentConfig(autoscaling=Autoscaling(min_replicas=0, max_replicas=4))
    assert auto.replicas_wanted == 1
    with pytest.raises(ValidationError):
        DeploymentConfig(num_replicas=0)
    with pytest.raises(ValidationError):
        DeploymentConfig(resources={"num_gpus": -1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        DeploymentConfig(replicas=2)


@pytest.mark.parametrize(
    "body",
    [{}, {"model_id": "m", "deployment_name": "d"}],
)
def test_delete_request_needs_exactly_one(body):
    with pytest.raises(ValidationError) as exc:
        DeleteRequest(**body)
    assert "exactly one of model_id and deployment_name" in message(exc)


def test_delete_request_ok():
    assert DeleteRequest(model_id="m").deployment_name is None
    assert DeleteRequest(deployment_name="d").model_id is None


@pytest.mark.parametrize("body", [{}, {"args": {"x": 1}, "url": "file:///tmp/a.json"}])
def test_predict_request_needs_exactly_one(body):
    with pytest.raises(ValidationError) as exc:
        PredictRequest(**body)
    assert "exactly one of args and url" in message(exc)


def test_predict_request_ok():
    assert PredictRequest(args={}).args == {}
    assert PredictRequest(url="file:///a.json").url == "file:///a.json"


@pytest.mark.parametrize("kind", ["torch", "custom"])
def test_model_create_needs_predictor(kind):
    with pytest.raises(ValidationError) as exc:
        ModelCreate(model_id="m", kind=kind, artifact_uri="/w")
    assert "predictor" in message(exc)
    assert kind in message(exc)
    ok = ModelCreate(model_id="m", kind=kind, artifact_uri="/w", predictor="pkg.mod:Cls")
    assert ok.kind == kind


def test_model_create_sentence_transformer_needs_no_predictor():
    m = ModelCreate(model_id="all-MiniLM-L6-v2", kind="sentence-transformer", artifact_uri="/w")
    assert m.predictor is None


@pytest.mark.parametrize("bad", ["pkg.mod", "pkg.mod:", ":Cls", "pkg mod:Cls", "1pkg:Cls"])
def test_predictor_import_path_pattern(bad):
    with pytest.raises(ValidationError):
        ModelCreate(model_id="m", kind="custom", artifact_uri="/w", predictor=bad)


def test_unknown_kind():
    with pytest.raises(ValidationError):
        ModelCreate(model_id="m", kind="onnx", artifact_uri="/w")


@pytest.mark.parametrize("good", ["a", "all-MiniLM-L6-v2", "org_model.v2", "A" * 128])
def test_model_id_pattern_accepts(good):
    assert DeployRequest(model_id=good).model_id == good


@pytest.mark.parametrize("bad", ["", "-lead", "has space", "a/b", "A" * 129])
def test_model_id_pattern_rejects(bad):
    with pytest.raises(ValidationError) as exc:
        DeployRequest(model_id=bad)
    assert exc.value.errors()[0]["loc"] == ("model_id",)


@pytest.mark.parametrize("good", ["a", "minilm", "emb-2", "a" * 63])
def test_deployment_name_pattern_accepts(good):
    assert DeployRequest(model_id="m", deployment_name=good).deployment_name == good


@pytest.mark.parametrize("bad", ["Upper", "-lead", "trail-", "under_score", "a" * 64, "a--v1!"])
def test_deployment_name_pattern_rejects(bad):
    with pytest.raises(ValidationError) as exc:
        DeployRequest(model_id="m", deployment_name=bad)
    assert exc.value.errors()[0]["loc"] == ("deployment_name",)
    with pytest.raises(ValidationError):
        DeploymentRecord(name=bad, model_id="m", model_version=1)


def test_deploy_request_limits():
    with pytest.raises(ValidationError):
        DeployRequest(model_id="m", version=0)
    with pytest.raises(ValidationError):
        DeployRequest(model_id="m", wait_for="running")
    with pytest.raises(ValidationError):
        DeployRequest(model_id="m", timeout_s=0)


def test_app_name_and_serve_app():
    assert app_name("emb", 3) == "emb--v3"
    assert DeploymentRecord(name="emb", model_id="m", model_version=2).serve_app == "emb--v2"


def test_embed_args():
    assert EmbedArgs(texts=["a"]).texts == ["a"]
    with pytest.raises(ValidationError):
        EmbedArgs(texts=[])
