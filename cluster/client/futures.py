"""``ResponseFuture``: a prediction queued on the server's durable async queue.

``POST /v1/deployments/{name}/async-predict`` answers a task id at once; the request waits in
the registry's queue (written to SQLite, so a registry restart does not lose it) until a
worker runs it through the same path as ``/predict``. ``GET /v1/async-tasks/{id}`` answers
PENDING, SUCCESS with the result, or FAILURE with the error and traceback.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cluster.client.errors import PredictorError
from cluster.client.shapes import EndpointResponse, parse
from cluster.schemas import AsyncTaskPublic

if TYPE_CHECKING:
    from cluster.client.client import Client


class ResponseFuture:
    """An async prediction; ``get`` polls the server until it ends.

    ``task_id`` is the server's id of the queued request, ``request_id`` the one it was sent
    with (echoed in the response). Polls start at ``poll_s`` and back off to ``max_poll_s``.
    """

    def __init__(
        self,
        client: Client,
        task_id: str,
        request_id: str | None = None,
        poll_s: float = 0.05,
        max_poll_s: float = 1.0,
    ) -> None:
        self._client = client
        self.task_id = task_id
        self.request_id = request_id
        self._poll_s = poll_s
        self._max_poll_s = max_poll_s
        self._final: AsyncTaskPublic | None = None

    def __repr__(self) -> str:
        state = self._final.status if self._final else "PENDING?"
        return f"ResponseFuture({self.task_id!r}, {state})"

    def status(self) -> AsyncTaskPublic:
        """The queued request as the server has it now; once it has ended, without asking."""
        if self._final is not None:
            return self._final
        info = self._client.get_async_task(self.task_id)
        if info.status != "PENDING":
            self._final = info
        return info

    def done(self) -> bool:
        """True once the prediction has ended (SUCCESS or FAILURE)."""
        return self.status().status != "PENDING"

    def get(self, timeout: float | None = None) -> EndpointResponse:
        """The response once the prediction ends. Raises ``PredictorError`` (with the
        server's message and ``.traceback``) when it ended FAILURE, and the builtin
        ``TimeoutError`` when it is still PENDING after ``timeout`` seconds (None: no limit;
        the prediction goes on and ``get`` may be called again)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self._poll_s
        while (info := self.status()).status == "PENDING":
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"async prediction {self.task_id} still PENDING after {timeout:g}s"
                )
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, self._max_poll_s)
        return self._response(info)

    def cancel(self) -> bool:
        """Always False: the server has no way to withdraw a queued prediction (as with a
        ``concurrent.futures.Future`` that is already running)."""
        return False

    def _response(self, info: AsyncTaskPublic) -> EndpointResponse:
        if info.status == "FAILURE":
            raise PredictorError(
                info.error or "the prediction failed",
                status_code=500,
                type="prediction_failed",
                request_id=self.request_id,
                traceback=info.traceback,
                body=info.model_dump(mode="json"),
            )
        return parse(
            EndpointResponse,
            {
                "status": "SUCCESS",
                "result": info.result,
                "model_version": info.model_version,
                "request_id": self.request_id,
            },
        )
