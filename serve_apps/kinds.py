"""Model kinds: how a replica loads a model version and runs a batch of requests.

Each predictor follows the request's life: ``setup`` (load weights on the device),
``decode`` (validate one request's args), ``predict_batch`` (one call for many requests)
and ``warmup`` (one throw-away prediction before the replica reports healthy).

``predict_batch`` runs the model on at most ``max_batch_size`` rows (texts, input rows) at
a time, whatever the requests hold: a replica's memory is bounded by that, not by the
largest request. The replica sets it from its deployment's ``max_batch_size``.
"""

from __future__ import annotations

import importlib
from typing import Any

from cluster.schemas.predictions import texts_problem
from serve_apps import artifacts

# Rows per model call until a replica's config sets its own: the default rows per call of
# a batch job (BatchPredictCreate.batch_size), which runs without a deployment config.
DEFAULT_MAX_BATCH_SIZE = 64


def import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"'{path}' is not an import path of the form 'package.module:Name'")
    return getattr(importlib.import_module(module_name), attr)


class Predictor:
    def __init__(self, spec: dict[str, Any], device: str) -> None:
        self.spec = spec
        self.device = device
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE

    def setup(self) -> None:
        raise NotImplementedError

    def decode(self, args: dict[str, Any]) -> Any:
        return args

    def predict_batch(self, items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def warmup(self) -> None:
        return None


class SentenceTransformerPredictor(Predictor):
    """``args = {"texts": [...]}`` -> ``{"embeddings": [[...], ...]}``."""

    def setup(self) -> None:
        from sentence_transformers import SentenceTransformer

        path = artifacts.resolve(self.spec["artifact_uri"])
        self.model = SentenceTransformer(str(path), device=self.device)

    def decode(self, args: dict[str, Any]) -> list[str]:
        texts = args.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("args.texts must be a non-empty list of strings")
        # The API's limits, for batch jobs and direct handle calls that skip the ingress.
        problem = texts_problem(texts)
        if problem is not None:
            raise ValueError(f"args.texts{problem[0]}: {problem[1]}")
        return texts

    def predict_batch(self, items: list[list[str]]) -> list[Any]:
        flat = [t for texts in items for t in texts]
        # encode sorts all the texts by length, then tokenizes and runs them batch_size at a
        # time: one call, memory bounded by max_batch_size texts.
        vectors = self.model.encode(flat, batch_size=self.max_batch_size, convert_to_numpy=True)
        out, start = [], 0
        for texts in items:
            out.append({"embeddings": vectors[start : start + len(texts)].tolist()})
            start += len(texts)
        return out

    def warmup(self) -> None:
        self.predict_batch([["modelyard warm-up"]])


class TorchPredictor(Predictor):
    """An ``nn.Module`` class plus a state dict. ``args = {"inputs": [[...], ...]}``."""

    def setup(self) -> None:
        import torch

        cls = import_path(self.spec["predictor"])
        module = cls(**self.spec.get("predictor_kwargs", {}))
        path = artifacts.resolve(self.spec["artifact_uri"])
        module.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        self.module = module.to(self.device).eval()

    def decode(self, args: dict[str, Any]) -> Any:
        import torch

        if "inputs" not in args:
            raise ValueError("args.inputs is required: a list of input rows")
        return torch.as_tensor(args["inputs"], dtype=torch.float32)

    def predict_batch(self, items: list[Any]) -> list[Any]:
        import torch

        rows, n = torch.cat(items), self.max_batch_size
        with torch.inference_mode():
            # Rows are independent (requests already share a call), so slicing changes nothing.
            starts = range(0, max(len(rows), 1), n)
            outputs = torch.cat(
                [self.module(rows[i : i + n].to(self.device)).cpu() for i in starts]
            )
        results, start = [], 0
        for x in items:
            results.append({"outputs": outputs[start : start + len(x)].tolist()})
            start += len(x)
        return results


class CustomPredictor(Predictor):
    """A user class: ``__init__(artifact_path, device, **predictor_kwargs)``, then
    ``predict(**args)`` and optionally ``predict_batch(list_of_args)`` and ``warmup()``."""

    def setup(self) -> None:
        cls = import_path(self.spec["predictor"])
        uri = self.spec["artifact_uri"]
        path = str(artifacts.resolve(uri)) if uri else ""
        self.impl = cls(path, self.device, **self.spec.get("predictor_kwargs", {}))

    def predict_batch(self, items: list[dict[str, Any]]) -> list[Any]:
        if hasattr(self.impl, "predict_batch"):
            return list(self.impl.predict_batch(items))
        return [self.impl.predict(**args) for args in items]

    def warmup(self) -> None:
        if hasattr(self.impl, "warmup"):
            self.impl.warmup()


KINDS: dict[str, type[Predictor]] = {
    "sentence-transformer": SentenceTransformerPredictor,
    "torch": TorchPredictor,
    "custom": CustomPredictor,
}


def load(spec: dict[str, Any], device: str) -> Predictor:
    try:
        cls = KINDS[spec["kind"]]
    except KeyError:
        raise ValueError(f"unknown model kind '{spec['kind']}'; known: {sorted(KINDS)}") from None
    predictor = cls(spec, device)
    predictor.setup()
    predictor.warmup()
    return predictor
