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


# ------------------------------------------------------------------ NaN and infinity


def _schemas() -> list[type]:
    """Every request and record shape: the API's schemas and the trainer's configs."""
    from pydantic import BaseModel

    import cluster.schemas as schemas
    import train_jobs.config as train_config

    found = {
        obj
        for module in (schemas, train_config)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.model_fields
    }
    return sorted(found, key=lambda c: c.__name__)


def _float_fields() -> list[tuple[type, str, bool]]:
    """(schema, field, holds a dict of floats) for every float field there is."""
    from typing import get_args

    def floats(annotation) -> bool:
        return annotation is float or any(floats(a) for a in get_args(annotation))

    out = []
    for schema in _schemas():
        for name, field in schema.model_fields.items():
            if floats(field.annotation):
                is_dict = "dict" in str(field.annotation)
                out.append((schema, name, is_dict))
    return out


FLOAT_FIELDS = _float_fields()
# Measured by the trainer (a diverged run's loss is NaN), never input: it is not refused.
MEASURED = {"FinetuneResult"}


def test_the_float_fields_are_found():
    names = {f"{s.__name__}.{n}" for s, n, _ in FLOAT_FIELDS}
    assert {"VersionCreate.metrics", "Resources.num_gpus", "FinetuneParams.learning_rate"} <= names
    assert {"DeployRequest.timeout_s", "RolloutOptions.max_error_rate"} <= names


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("schema", "field", "is_dict"),
    [f for f in FLOAT_FIELDS if f[0].__name__ not in MEASURED],
    ids=lambda f: getattr(f, "__name__", str(f)),
)
def test_nan_and_infinity_in_every_float_field_are_refused(schema, field, is_dict, bad):
    value = f'{{"k": {bad}}}' if is_dict else bad
    with pytest.raises(ValidationError) as exc:
        schema.model_validate_json(f'{{"{field}": {value}}}')
    locs = [e["loc"] for e in exc.value.errors() if e["type"] == "finite_number"]
    assert locs == [(field, "k")] if is_dict else locs == [(field,)], exc.value.errors()


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("schema", "body", "loc"),
    [
        (PredictRequest, '{"args": {"texts": ["a"], "w": [1.5, %s]}}', ("args", "w", 1)),
        (PredictRequest, '{"args": {"deep": {"x": [{"y": %s}]}}}', ("args", "deep", "x", 0, "y")),
        (
            ModelCreate,
            '{"model_id": "m", "kind": "custom", "predictor": "a:B", '
            '"predictor_kwargs": {"scale": %s}}',
            ("predictor_kwargs", "scale"),
        ),
        (
            ModelCreate,
            '{"model_id": "m", "kind": "sentence-transformer", "artifact_uri": "/w", '
            '"metrics": {"recall_at_1": %s}}',
            ("metrics", "recall_at_1"),
        ),
    ],
)
def test_nan_inside_free_form_fields_is_refused_on_both_parse_paths(schema, body, loc, bad):
    import json

    text = body % bad
    for parse in (schema.model_validate_json, lambda t: schema.model_validate(json.loads(t))):
        with pytest.raises(ValidationError) as exc:
            parse(text)
        assert [e["loc"] for e in exc.value.errors()] == [loc]


def test_finite_numbers_and_model_outputs_pass():
    from cluster.schemas import PredictResponse, Task

    assert PredictRequest(args={"texts": ["a"] * 3, "w": [1.0, -2.5, 1e300]}).args["w"][2] == 1e300
    # A model's answer is passed on as it is (JSON writes NaN as null).
    assert PredictResponse(result=[float("nan")]).result[0] != 0
    with pytest.raises(ValidationError, match="detail.progress.loss"):
        Task(id="t", kind="deploy", detail={"progress": {"loss": float("inf")}})


def test_the_api_answers_422_naming_the_field(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cluster.ingress.http import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/models")
    def create(req: ModelCreate) -> dict:
        return {"ok": True}

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict:
        return {"ok": True}

    client = TestClient(app)
    headers = {"content-type": "application/json"}
    model = (
        '{"model_id": "m", "kind": "sentence-transformer", "artifact_uri": "/w", '
        '"metrics": {"recall_at_1": NaN}}'
    )
    resp = client.post("/models", content=model, headers=headers)
    assert resp.status_code == 422
    assert "metrics.recall_at_1" in resp.json()["error"]["message"]
    resp = client.post("/predict", content='{"args": {"x": [-Infinity]}}', headers=headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == "args.x.0: NaN/Infinity is not allowed"
    assert client.post("/predict", content='{"args": {"x": [1.5]}}', headers=headers).json()
