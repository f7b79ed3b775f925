"""``Client``: one httpx connection to the modelyard HTTP API, with 429 retries."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel

from cluster.client.environment import default_api_key, default_url
from cluster.client.errors import error_from_response, retry_after
from cluster.client.finetune import Dataset, FineTuningPage, FineTuningTask, dataset_spec
from cluster.client.futures import ResponseFuture
from cluster.client.progress import spinner
from cluster.client.resources import Deployment, Model
from cluster.client.shapes import EndpointRequest, EndpointResponse, S, TaskPage, body, parse
from cluster.schemas import (
    AsyncAccepted,
    AsyncTaskPublic,
    ClusterPublic,
    DeleteRequest,
    DeploymentConfig,
    DeploymentPublic,
    DeployRequest,
    FineTuneCreate,
    ModelCreate,
    ModelPublic,
    ModelVersion,
    PredictRequest,
    Task,
    VersionCreate,
    WaitFor,
)
from cluster.schemas.training import FinetuneParams


class Client:
    """The modelyard HTTP API. ``transport`` is for tests (``httpx.MockTransport``).

    ``url`` defaults to ``MODELYARD_URL``, else ``http://MODELYARD_HOST:MODELYARD_PORT``
    (127.0.0.1:8000); ``api_key`` to ``MODELYARD_API_KEY``, else the key file under
    ``MODELYARD_STORAGE_ROOT`` (``~/.modelyard``).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
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
        """A thread pool for background work on this client, made on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="modelyard")
            return self._pool

    # ------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        timeout: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One call; a 429 is retried after its Retry-After, at most ``max_retries`` times.
        An error answer raises its ``ModelyardHTTPError`` subclass."""
        kwargs: dict[str, Any] = {} if json is None else {"json": json}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if params:
            kwargs["params"] = params
        for attempt in range(self.max_retries + 1):
            resp = self._http.request(method, path, **kwargs)
            if resp.status_code != 429 or attempt == self.max_retries:
                break
            time.sleep(retry_after(resp))
        if resp.is_error:
            raise error_from_response(resp)
        return resp

    def call(
        self,
        method: str,
        path: str,
        schema: type[S],
        req: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> S:
        """``request`` with ``req`` as the JSON body, the answer parsed into ``schema``."""
        payload = None if req is None else body(req)
        return parse(schema, self.request(method, path, payload, timeout, params).json())

    def call_list(self, method: str, path: str, schema: type[S]) -> list[S]:
        """``call`` for an answer that is a JSON list of ``schema``."""
        return [parse(schema, item) for item in self.request(method, path).json()]

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
        self.call("POST", "/v1/models", ModelVersion, req)
        return self.get_model(model_id)

    def add_version(
        self, model_id: str, artifact_uri: str = "", metrics: dict[str, float] | None = None
    ) -> ModelVersion:
        req = VersionCreate(artifact_uri=artifact_uri, metrics=metrics or {})
        return self.call("POST", f"/v1/models/{model_id}/versions", ModelVersion, req)

    def get_model(self, model_id: str) -> Model:
        return Model(self, self.call("GET", f"/v1/models/{model_id}", ModelPublic))

    def list_models(self) -> list[Model]:
        return [Model(self, info) for info in self.call_list("GET", "/v1/models", ModelPublic)]

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        return self.call_list("GET", f"/v1/models/{model_id}/versions", ModelVersion)

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
        return self.call("POST", "/v1/deploy", Task, req, timeout=timeout)

    def get_deploy_task(self, task_id: str) -> Task:
        return self.call("GET", f"/v1/deploy/{task_id}", Task)

    def deploy_status(self, model_id: str) -> Task:
        """The model's latest deploy task."""
        return self.call("GET", f"/v1/deploy-status/{model_id}", Task)

    def delete(
        self,
        model_id: str | None = None,
        deployment_name: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Delete one deployment, or every deployment of a model; give exactly one."""
        req = DeleteRequest(model_id=model_id, deployment_name=deployment_name, reason=reason)
        return self.call("POST", "/v1/delete", Task, req)

    def get_delete_task(self, task_id: str) -> Task:
        return self.call("GET", f"/v1/delete/{task_id}", Task)

    def delete_status(self, model_id: str) -> Task:
        """The model's latest delete task."""
        return self.call("GET", f"/v1/delete-status/{model_id}", Task)

    # ------------------------------------------------------------ tasks of every kind

    def get_task(self, task_id: str) -> Task:
        """Any task (deploy, delete, rollout) by id."""
        return self.call("GET", f"/v1/tasks/{task_id}", Task)

    def list_tasks(
        self,
        kind: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """One page of tasks, oldest first, filtered by ``kind`` and ``status``; ``total``
        counts every match."""
        params = {"kind": kind, "status": status, "offset": offset, "limit": limit}
        params = {k: v for k, v in params.items() if v is not None}
        return self.call("GET", "/v1/tasks", TaskPage, params=params)

    def wait_for_task(
        self, task: Task | str, timeout: float = 300.0, progress: bool = False, poll_s: float = 0.5
    ) -> Task:
        """Poll until the task ends (done, failed, canceled or refused) and return it;
        ``TimeoutError`` after ``timeout`` seconds. ``progress`` shows a spinner on stderr."""
        task_id = task if isinstance(task, str) else task.id
        deadline = time.monotonic() + timeout
        with spinner(progress, task_id) as show:
            current = self.get_task(task_id)
            while not current.final:
                show(current)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"task {task_id} still {current.status} after {timeout:g}s")
                time.sleep(poll_s)
                current = self.get_task(task_id)
            show(current)
        return current

    # ------------------------------------------------------------ fine-tuning

    def create_fine_tuning_task(
        self,
        embedding_model_id: str,
        dataset: Dataset,
        version: int | None = None,
        params: FinetuneParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        deploy_to: str | None = None,
    ) -> FineTuningTask:
        """Fine-tune a sentence-transformer model version (default: the latest) on
        (anchor, positive) pairs: ``dataset`` is a list of ``{"anchor", "positive"}`` dicts, or
        a JSONL path or URI the server reads (a local path must be under its storage root).
        ``params``: epochs, max_steps, batch_size, learning_rate, num_workers, use_gpu,
        eval_fraction, ... (``FinetuneParams``). The same ``idempotency_key`` gives back the
        same task (``ConflictError`` if the request differs). ``deploy_to`` names a deployment
        the result is swapped into when its recall@1 is no worse than the serving version's.
        A bad dataset is a ``BadRequestError`` naming the line."""
        fields: dict[str, Any] = {
            "embedding_model_id": embedding_model_id,
            "dataset": dataset_spec(dataset),
            "version": version,
            "idempotency_key": idempotency_key,
            "deploy_to": deploy_to,
        }
        if params is not None:
            fields["params"] = params
        req = FineTuneCreate(**{k: v for k, v in fields.items() if v is not None})
        return FineTuningTask(self, self.call("POST", "/v1/fine-tuning/task", Task, req))

    def get_fine_tuning_task(self, task_id: str) -> FineTuningTask:
        return FineTuningTask(self, self.call("GET", f"/v1/fine-tuning/task/{task_id}", Task))

    def list_fine_tuning_tasks(
        self, offset: int = 0, limit: int = 50, status: str | None = None
    ) -> FineTuningPage:
        """One page of fine-tuning tasks, oldest first, optionally in one ``status``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status is not None:
            params["status"] = status
        page = self.call("GET", "/v1/fine-tuning/task", TaskPage, params=params)
        items = [FineTuningTask(self, info) for info in page.items]
        return FineTuningPage(items, page.total, page.offset, page.limit)

    # ------------------------------------------------------------ deployments

    def list_deployments(self) -> list[Deployment]:
        infos = self.call_list("GET", "/v1/deployments", DeploymentPublic)
        return [Deployment(self, d) for d in infos]

    def get_deployment(self, name: str) -> Deployment:
        return Deployment(self, self.call("GET", f"/v1/deployments/{name}", DeploymentPublic))

    def predict(
        self,
        deployment_name: str,
        args: dict[str, Any] | EndpointRequest,
        request_id: str | None = None,
        timeout: float | None = None,
        version: int | None = None,
    ) -> EndpointResponse:
        """One prediction on a deployment by name (``Deployment.predict`` without a lookup);
        ``version`` pins a live version instead of the traffic split."""
        req = _predict_request(args, request_id, version)
        path = f"/v1/deployments/{deployment_name}/predict"
        return self.call("POST", path, EndpointResponse, req, timeout=timeout)

    def predict_async(
        self,
        deployment_name: str,
        args: dict[str, Any] | EndpointRequest,
        request_id: str | None = None,
        version: int | None = None,
    ) -> ResponseFuture:
        """Queue one prediction on the server (it survives a registry restart) and return at
        once; ``ResponseFuture.get`` waits for the result."""
        req = _predict_request(args, request_id, version)
        path = f"/v1/deployments/{deployment_name}/async-predict"
        accepted = self.call("POST", path, AsyncAccepted, req)
        return ResponseFuture(self, accepted.task_id, req.request_id)

    def get_async_task(self, task_id: str) -> AsyncTaskPublic:
        """A queued prediction: PENDING, SUCCESS with its result or FAILURE with the error
        and traceback."""
        return self.call("GET", f"/v1/async-tasks/{task_id}", AsyncTaskPublic)

    # ------------------------------------------------------------ system

    def cluster(self) -> ClusterPublic:
        return self.call("GET", "/v1/cluster", ClusterPublic)

    def healthz(self) -> dict[str, str]:
        """``{"status": "ok"}`` once the control app answers; needs no key."""
        return self.request("GET", "/healthz").json()


def _predict_request(
    args: dict[str, Any] | PredictRequest, request_id: str | None, version: int | None
) -> PredictRequest:
    req = args if isinstance(args, PredictRequest) else EndpointRequest(args=args)
    update = {"request_id": request_id, "version": version}
    return req.model_copy(update={k: v for k, v in update.items() if v is not None})
