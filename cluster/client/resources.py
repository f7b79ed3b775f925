"""Resource objects the client hands out: ``Model`` and ``Deployment``.

Each holds the last view read from the server in ``info`` and its client for further calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cluster.client.errors import DeploymentFailedError
from cluster.client.futures import ResponseFuture
from cluster.client.shapes import EndpointRequest, EndpointResponse
from cluster.schemas import (
    BatchPredictCreate,
    DeploymentConfig,
    DeploymentEvent,
    DeploymentPublic,
    DeploymentUpdate,
    ModelPublic,
    ModelVersion,
    RolloutOptions,
    SetVersionRequest,
    Task,
)

if TYPE_CHECKING:
    from cluster.client.client import Client
    from cluster.client.finetune import FineTuningTask

# What ``GET /v1/deployments/{name}?wait=true`` may wait at most, per request.
SERVER_WAIT_MAX_S = 600.0


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

    def fine_tune(self, dataset: Any, version: int | None = None, **kwargs: Any) -> FineTuningTask:
        """``Client.create_fine_tuning_task`` for this model; keyword arguments as there."""
        return self._client.create_fine_tuning_task(self.model_id, dataset, version, **kwargs)


class Deployment:
    """A deployment; ``info`` is the last ``DeploymentPublic`` read from the server.

    Calls that change it (``stop``, ``start``, ``update``) refresh ``info`` with the answer.
    """

    def __init__(self, client: Client, info: DeploymentPublic) -> None:
        self._client = client
        self.info = info

    def __repr__(self) -> str:
        return f"Deployment({self.name!r}, status={self.info.status!r})"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def _path(self) -> str:
        return f"/v1/deployments/{self.name}"

    def refresh(self) -> DeploymentPublic:
        """Read the deployment again (status, config, allocation view)."""
        self.info = self._client.get_deployment(self.name).info
        return self.info

    describe = refresh

    def get_status(self) -> str:
        """The current status: PENDING, DEPLOYING, ACTIVE, UPDATING, STOPPED, FAILED, DELETING."""
        return self.refresh().status

    # ------------------------------------------------------------ predictions

    def predict(
        self,
        args: dict[str, Any] | EndpointRequest,
        request_id: str | None = None,
        version: int | None = None,
    ) -> EndpointResponse:
        """Run one prediction (an ``args`` dict or an ``EndpointRequest``); ``version`` pins a
        live version (e.g. the new one of a swap before it gets traffic). Raises
        ``PredictorError`` (with ``.traceback``) when the model's code fails."""
        # Wait as long as the server may: its own request_timeout_s answers 504 first.
        timeout = self.info.config.request_timeout_s + 10
        return self._client.predict(
            self.name, args, request_id=request_id, timeout=timeout, version=version
        )

    def predict_async(
        self,
        args: dict[str, Any] | EndpointRequest,
        request_id: str | None = None,
        version: int | None = None,
    ) -> ResponseFuture:
        """Queue the prediction on the server's durable queue and return at once; the
        ``ResponseFuture``'s ``get(timeout)`` gives the response, or raises
        ``PredictorError`` (with ``.traceback``) when it failed."""
        return self._client.predict_async(self.name, args, request_id, version)

    def batch_predict(
        self,
        input_uri: str,
        output_uri: str,
        wait: bool = False,
        timeout: float = 3600.0,
        progress: bool = False,
        batch_size: int | None = None,
        concurrency: int | None = None,
        overwrite: bool = False,
        num_cpus_per_copy: float | None = None,
    ) -> Task:
        """Run a JSONL file through the model version this deployment serves now, as a Ray
        Data job (not through the replicas); returns its ``batch_prediction`` task, whose
        ``detail.progress`` counts rows. Input lines are ``{"id", "args"}`` (or ``{"id",
        "text"}`` for sentence-transformer models); output lines keep their order and ids.
        URIs: a path under the server's storage root (relative to it, or absolute) or a
        remote URI (``s3://...``). ``concurrency`` model copies run it, each with the
        deployment's resources (``num_cpus_per_copy`` CPUs when given). ``wait`` waits for
        the end (``TimeoutError`` after ``timeout``); ``progress`` shows rows done on
        stderr."""
        given = {
            "batch_size": batch_size,
            "concurrency": concurrency,
            "num_cpus_per_copy": num_cpus_per_copy,
        }
        req = BatchPredictCreate(
            input_uri=input_uri,
            output_uri=output_uri,
            overwrite=overwrite,
            **{k: v for k, v in given.items() if v is not None},
        )
        task = self._client.call("POST", f"{self._path}/batch-predictions", Task, req)
        return self._maybe_wait(task, wait, timeout, progress)

    # ------------------------------------------------------------ versions and rollouts

    def set_model_version(
        self,
        version: int,
        rollout: RolloutOptions | dict[str, Any] | None = None,
        wait: bool = False,
        timeout: float = 600.0,
        progress: bool = False,
    ) -> Task:
        """Swap to ``version``: a rollout task moving traffic in ``rollout.steps`` (server
        defaults when None). The task is ``refused`` at once when the cluster has no room for
        the new copy. ``wait`` waits until the task ends (``TimeoutError`` after ``timeout``);
        ``progress`` shows its phase and traffic share on stderr."""
        fields: dict[str, Any] = {"version": version}
        if rollout is not None:
            fields["rollout"] = rollout
        req = SetVersionRequest(**fields)
        task = self._client.call("PUT", f"{self._path}/model-version", Task, req)
        return self._maybe_wait(task, wait, timeout, progress)

    def rollback(self, wait: bool = False, timeout: float = 600.0, progress: bool = False) -> Task:
        """Mid-swap: all traffic back to the serving version now (the swap's task ends
        ``canceled``). After a swap: a new rollout back to ``previous_version``."""
        task = self._client.call("POST", f"{self._path}/rollback", Task)
        return self._maybe_wait(task, wait, timeout, progress)

    def _maybe_wait(self, task: Task, wait: bool, timeout: float, progress: bool) -> Task:
        if not wait or task.final:
            return task
        return self._client.wait_for_task(task, timeout=timeout, progress=progress)

    def wait_for_pending_deployment_update(self, timeout: float = 300.0) -> DeploymentPublic:
        """Wait on the server until no change is pending (no swap in progress, not PENDING or
        DEPLOYING) and return the deployment as it is then, ACTIVE or FAILED or STOPPED;
        ``TimeoutError`` if a change is still pending after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            wait_s = min(max(deadline - time.monotonic(), 0.1), SERVER_WAIT_MAX_S)
            self.info = self._client.call(
                "GET",
                self._path,
                DeploymentPublic,
                params={"wait": "true", "timeout_s": round(wait_s, 3)},
                timeout=wait_s + 30,
            )
            if _settled(self.info):
                return self.info
            if time.monotonic() >= deadline:
                pending = self.info.pending_model_version
                raise TimeoutError(
                    f"deployment '{self.name}' still {self.info.status}"
                    + (f" (swapping to v{pending})" if pending else "")
                    + f" after {timeout:g}s"
                )

    # ------------------------------------------------------------ lifecycle

    def stop(self) -> DeploymentPublic:
        """Release every replica (and its GPUs); predictions answer 503 until ``start``."""
        self.info = self._client.call("POST", f"{self._path}/stop", DeploymentPublic)
        return self.info

    def start(self) -> DeploymentPublic:
        """Request the replicas of a STOPPED (or FAILED) deployment again."""
        self.info = self._client.call("POST", f"{self._path}/start", DeploymentPublic)
        return self.info

    def update(
        self,
        *,
        description: str | None = None,
        auto_deploy: bool | None = None,
        skip_metrics_check: bool | None = None,
        config: DeploymentConfig | dict[str, Any] | None = None,
        rollout: RolloutOptions | dict[str, Any] | None = None,
    ) -> DeploymentPublic:
        """Change what is given. ``config`` as a ``DeploymentConfig`` replaces the config; as a
        dict it is laid over the config last read (``{"num_replicas": 3}`` keeps the rest).
        Replica counts, limits and batch settings apply in place; a change of
        ``config.resources`` needs new replicas and goes through a green rollout (``rollout``
        options; see ``wait_for_pending_deployment_update``)."""
        if isinstance(config, dict):
            config = _overlay(self.info.config.model_dump(), config)
        given = {
            "description": description,
            "auto_deploy": auto_deploy,
            "skip_metrics_check": skip_metrics_check,
            "config": config,
            "rollout": rollout,
        }
        req = DeploymentUpdate(**{k: v for k, v in given.items() if v is not None})
        self.info = self._client.call("PATCH", self._path, DeploymentPublic, req)
        return self.info

    def events(self) -> list[DeploymentEvent]:
        """What happened to this deployment, oldest first (rollout steps, rollbacks, stops)."""
        return self._client.call_list("GET", f"{self._path}/events", DeploymentEvent)

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


def _overlay(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``change`` laid over ``base``, nested dicts (resources, autoscaling) key by key."""
    out = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _overlay(out[key], value)
        out[key] = value
    return out


def _settled(info: DeploymentPublic) -> bool:
    # The server's own test in ControlPlane.wait_settled.
    return info.rollout is None and info.status not in ("PENDING", "DEPLOYING")
