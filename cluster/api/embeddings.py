"""OpenAI-compatible embeddings: ``POST /v1/embeddings`` on sentence-transformer deployments.

``model`` names a deployment. The route is a translation over the predict service
(``cluster.ingress.predict``, as ``ControlPlane.predict``), so limits, 429s and errors are
exactly those of ``/v1/deployments/{name}/predict``. ``base64`` is little-endian float32
bytes, which is what the ``openai`` package decodes (and asks for when no
``encoding_format`` is given).
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import Field, field_validator

from cluster import errors
from cluster.api.deps import ControlDep
from cluster.ingress.http import FastJSONResponse
from cluster.schemas import PredictRequest, Schema
from cluster.schemas.predictions import MAX_TEXT_CHARS, MAX_TEXTS, texts_problem

router = APIRouter(tags=["embeddings"])

EMBEDDING_KIND = "sentence-transformer"
_WORDS = re.compile(r"\w+|[^\w\s]")


class EmbeddingsRequest(Schema):
    model: str = Field(description="Name of a sentence-transformer deployment.")
    input: str | list[str] = Field(
        description=f"A text or a list of at most {MAX_TEXTS} texts, each of at most "
        f"{MAX_TEXT_CHARS} characters."
    )
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, description="Accepted and ignored.")
    dimensions: int | None = Field(
        default=None, ge=1, description="Must equal the model's size when given."
    )

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if any(isinstance(v, (int, list)) for v in value):
                raise ValueError(
                    "token arrays are not supported: send text, a string or a list of strings"
                )
            if not value:
                raise ValueError("give at least one string")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class EmbeddingData(Schema):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(Schema):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Schema):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


@router.post("/embeddings", response_model=EmbeddingsResponse)
async def embeddings(req: EmbeddingsRequest, control: ControlDep) -> FastJSONResponse:
    _check_limits(req)
    route = await control.router.route(req.model)
    if route.kind != EMBEDDING_KIND:
        raise errors.BadRequest(
            f"deployment '{req.model}' serves a '{route.kind}' model; /v1/embeddings needs a "
            f"{EMBEDDING_KIND} deployment (use /v1/deployments/{req.model}/predict instead)"
        )
    out = await control.predict(req.model, PredictRequest(args={"texts": req.texts}))
    vectors = out["result"]["embeddings"]
    _check_dimensions(req, len(vectors[0]))
    # A plain FastJSONResponse skips response-model validation of every float.
    return FastJSONResponse(_body(req, vectors))


def _check_limits(req: EmbeddingsRequest) -> None:
    # The limits of EmbedArgs (which the predict path checks again), worded for "input".
    problem = texts_problem(req.texts)
    if problem is not None:
        where, msg = problem
        where = "" if isinstance(req.input, str) else where
        raise RequestValidationError([{"loc": ("body", f"input{where}"), "msg": msg}])


def _check_dimensions(req: EmbeddingsRequest, size: int) -> None:
    if req.dimensions is not None and req.dimensions != size:
        msg = (
            f"deployment '{req.model}' makes {size}-dimensional embeddings and cannot shorten "
            f"them; omit dimensions or pass {size}"
        )
        raise RequestValidationError([{"loc": ("body", "dimensions"), "msg": msg}])


def _body(req: EmbeddingsRequest, vectors: list[list[float]]) -> dict[str, Any]:
    if req.encoding_format == "base64":
        encoded: list[Any] = [
            base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors
        ]
    else:
        encoded = vectors
    # Approximate counts: words and punctuation marks, not the model's WordPiece tokens
    # (which split rare words further); there is no tokenizer in the ingress.
    tokens = sum(len(_WORDS.findall(text)) for text in req.texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)
        ],
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
