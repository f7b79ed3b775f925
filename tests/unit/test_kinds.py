"""Model kinds without Serve: decode, load and predict_batch."""

from __future__ import annotations

import pytest
import torch

from cluster.schemas.predictions import MAX_TEXT_CHARS, MAX_TEXTS
from serve_apps import kinds
from tests.tiny_models import Tiny


def test_import_path():
    assert kinds.import_path("tests.tiny_models:Tiny") is Tiny
    with pytest.raises(ValueError, match="package.module:Name"):
        kinds.import_path("tests.tiny_models")
    with pytest.raises(AttributeError):
        kinds.import_path("tests.tiny_models:Nope")


@pytest.mark.parametrize(
    "args",
    [{}, {"texts": []}, {"texts": "hello"}, {"texts": ["ok", 3]}, {"texts": None}],
)
def test_sentence_transformer_decode_rejects_bad_args(args):
    predictor = kinds.SentenceTransformerPredictor({"artifact_uri": "unused"}, "cpu")
    with pytest.raises(ValueError, match="args.texts must be a non-empty list of strings"):
        predictor.decode(args)


def test_sentence_transformer_decode_accepts_texts():
    predictor = kinds.SentenceTransformerPredictor({"artifact_uri": "unused"}, "cpu")
    assert predictor.decode({"texts": ["a", "b"]}) == ["a", "b"]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["x"] * (MAX_TEXTS + 1), f"args.texts: at most {MAX_TEXTS} texts per request (got 4097)"),
        (
            ["ok", "fine", "y" * (MAX_TEXT_CHARS + 5)],
            f"args.texts.2: at most {MAX_TEXT_CHARS} characters per text (got 20005)",
        ),
    ],
)
def test_sentence_transformer_decode_keeps_the_apis_limits(texts, message):
    # Batch jobs and direct handle calls reach decode without the ingress's schemas.
    predictor = kinds.SentenceTransformerPredictor({"artifact_uri": "unused"}, "cpu")
    with pytest.raises(ValueError) as info:
        predictor.decode({"texts": texts})
    assert str(info.value) == message
    at_the_limits = ["y" * MAX_TEXT_CHARS] * 2 + ["x"] * (MAX_TEXTS - 2)
    assert predictor.decode({"texts": at_the_limits}) == at_the_limits


def test_sentence_transformer_predict_batch_splits_per_request():
    class FakeEncoder:
        def encode(self, texts, batch_size, convert_to_numpy):
            import numpy as np

            sizes.append(batch_size)
            return np.array([[float(len(t)), 0.0] for t in texts])

    sizes: list[int] = []
    predictor = kinds.SentenceTransformerPredictor({"artifact_uri": "unused"}, "cpu")
    predictor.model = FakeEncoder()
    predictor.max_batch_size = 2
    out = predictor.predict_batch([["a", "bb"], ["ccc"]])
    assert out == [
        {"embeddings": [[1.0, 0.0], [2.0, 0.0]]},
        {"embeddings": [[3.0, 0.0]]},
    ]
    assert sizes == [2]  # the model runs 2 texts at a time, not all 3 of the batch


TINY_WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ray", "serve", "model", "text"]


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory):
    """A one-layer BERT with an 11-word vocabulary, saved as a SentenceTransformer."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-st")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(root)
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    modules = [models.Transformer(str(root), max_seq_length=48), models.Pooling(16)]
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "st"))
    return root / "st"


def test_chunked_encode_matches_one_batch(tiny_sentence_model):
    import numpy as np

    spec = {"kind": "sentence-transformer", "artifact_uri": str(tiny_sentence_model)}
    predictor = kinds.load({**spec, "version": 1}, "cpu")
    items = [
        [" ".join(TINY_WORDS[: k + 1]) for k in range(7)],
        ["dog"],
        ["the cat sat on the mat " * 5, "ray serve", "model text"],
    ]
    predictor.max_batch_size = 1000
    whole = predictor.predict_batch(items)
    predictor.max_batch_size = 2
    chunked = predictor.predict_batch(items)
    assert [len(o["embeddings"]) for o in chunked] == [7, 1, 3]
    for a, b in zip(whole, chunked, strict=True):
        # Equal up to float32 rounding: a text padded to another length sums in another order.
        np.testing.assert_allclose(a["embeddings"], b["embeddings"], rtol=0, atol=1e-6)
    assert not np.allclose(whole[0]["embeddings"][0], whole[0]["embeddings"][6], atol=1e-3)


def custom_spec(**kwargs) -> dict:
    return {
        "kind": "custom",
        "artifact_uri": "",
        "predictor": "tests.predictors:Echo",
        "predictor_kwargs": kwargs,
        "version": 1,
    }


def test_custom_predictor_runs_predict_batch():
    predictor = kinds.load(custom_spec(), "cpu")
    assert isinstance(predictor, kinds.CustomPredictor)
    items = [predictor.decode({"x": 1}), predictor.decode({"y": [2, 3]})]
    assert predictor.predict_batch(items) == [
        {"echo": {"x": 1}, "device": "cpu"},
        {"echo": {"y": [2, 3]}, "device": "cpu"},
    ]
    with pytest.raises(RuntimeError, match="asked to fail"):
        predictor.predict_batch([{"fail": True}])


def test_custom_predictor_with_artifact_path(tmp_path):
    spec = {**custom_spec(delay_s=0.0), "artifact_uri": str(tmp_path)}
    predictor = kinds.load(spec, "cpu")
    assert predictor.predict_batch([{"a": 1}]) == [{"echo": {"a": 1}, "device": "cpu"}]


def test_custom_predictor_loader_error_surfaces():
    spec = {**custom_spec(), "predictor": "tests.predictors:BrokenLoader"}
    with pytest.raises(RuntimeError, match="weights are corrupt"):
        kinds.load(spec, "cpu")


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind 'onnx'"):
        kinds.load({"kind": "onnx"}, "cpu")


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    module = Tiny()
    path = tmp_path / "tiny.pt"
    torch.save(module.state_dict(), path)
    return module.eval(), path


def torch_spec(path) -> dict:
    return {
        "kind": "torch",
        "artifact_uri": str(path),
        "predictor": "tests.tiny_models:Tiny",
        "predictor_kwargs": {},
        "version": 1,
    }


def test_torch_predictor_matches_module_forward(tiny_weights):
    module, path = tiny_weights
    predictor = kinds.load(torch_spec(path), "cpu")
    assert isinstance(predictor, kinds.TorchPredictor)
    rows_a = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]
    rows_b = [[-3.0, 0.25, 1.5, 0.0]]
    items = [predictor.decode({"inputs": rows_a}), predictor.decode({"inputs": rows_b})]
    out = predictor.predict_batch(items)
    assert len(out) == 2
    with torch.no_grad():
        want_a = module(torch.tensor(rows_a)).tolist()
        want_b = module(torch.tensor(rows_b)).tolist()
    assert torch.allclose(torch.tensor(out[0]["outputs"]), torch.tensor(want_a))
    assert torch.allclose(torch.tensor(out[1]["outputs"]), torch.tensor(want_b))
    # The loaded weights are the saved ones, not a fresh random init.
    assert torch.equal(predictor.module.linear.weight, module.linear.weight)


def test_torch_predictor_file_uri_and_kwargs(tmp_path):
    module = Tiny(bias=False)
    path = tmp_path / "nobias.pt"
    torch.save(module.state_dict(), path)
    spec = {
        **torch_spec(path),
        "artifact_uri": f"file://{path}",
        "predictor_kwargs": {"bias": False},
    }
    predictor = kinds.load(spec, "cpu")
    assert predictor.module.linear.bias is None
    x = [[1.0, 1.0, 1.0, 1.0]]
    (out,) = predictor.predict_batch([predictor.decode({"inputs": x})])
    with torch.no_grad():
        assert torch.allclose(torch.tensor(out["outputs"]), module(torch.tensor(x)))


def test_torch_decode_requires_inputs(tiny_weights):
    _, path = tiny_weights
    predictor = kinds.load(torch_spec(path), "cpu")
    with pytest.raises(ValueError, match="args.inputs is required"):
        predictor.decode({"x": [[1, 2, 3, 4]]})


def test_torch_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError):
        kinds.load(torch_spec(tmp_path / "missing.pt"), "cpu")


def test_a_model_replica_refuses_direct_http_requests():
    import asyncio

    from starlette.requests import Request

    from serve_apps.model_server import ModelServer

    server = ModelServer.func_or_class.__new__(ModelServer.func_or_class)  # no model needed
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})
    response = asyncio.run(server(request))
    assert response.status_code == 404
    assert b"use the modelyard URL" in response.body


def test_torch_threads_follow_the_cpus_ray_gave(monkeypatch):
    from serve_apps import runtime

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        runtime.use_ray_cpu_share()
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "")  # not set by Ray: torch's own default stays
        runtime.use_ray_cpu_share()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
