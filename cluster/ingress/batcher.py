"""Ingress-side batching: concurrent predictions for one Serve app go out as one call.

Per request, the expensive part of serving a small model through Serve is not the model but
the call: routing, pickling, a replica-side task and future each. The ingress already holds
every concurrent request, so it gathers them and sends ``ModelServer.predict_many`` with up
to ``max_batch_size`` of them at a time: one Ray call per batch instead of one per request.

There is no fixed wait. Each replica gets at most ``CALLS_PER_REPLICA`` calls at once: one
it computes, one queued behind it so it never idles between batches. A request that finds a
free call slot goes out at once, alone; requests that arrive while every slot is taken wait
here and leave together in the next free one. Light load keeps its latency, heavy load gets
large batches.

The deployment's limits keep their meaning: at most ``replicas * max_ongoing_requests``
requests are in replicas at once, at most ``max_queued_requests`` wait here, and the next
one is answered 429 at once.

A batch whose replica dies under it is sent once more (predictions are idempotent, and
Serve sends the second call to another replica); a second failure goes to its waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cluster import errors

CALLS_PER_REPLICA = 2

Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Limits:
    replicas: int = 1
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    max_batch_size: int = 32

    @property
    def in_flight(self) -> int:
        return max(1, self.replicas) * self.max_ongoing_requests

    @property
    def calls(self) -> int:
        return max(1, self.replicas) * CALLS_PER_REPLICA


@dataclass
class _Item:
    args: dict[str, Any]
    future: asyncio.Future


class Batcher:
    """One per Serve app. ``send`` makes the call; its exceptions fail that batch only,
    except those ``retry_on`` accepts, after which the batch is sent once more."""

    def __init__(
        self,
        name: str,
        send: Send,
        limits: Limits,
        retry_on: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self._send = send
        self._retry_on = retry_on
        self._waiting: deque[_Item] = deque()
        self._in_flight = 0  # requests inside calls that have not answered yet
        self._calls = 0
        self.batches = 0
        self.batched = 0
        self.resent = 0  # batches sent a second time after their replica died

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Answer of one request; ``Overloaded`` when the queue is full, ``UpstreamTimeout``
        after ``timeout_s``."""
        if self._queue_full() and not self._has_room():
            raise errors.Overloaded(
                f"deployment '{self.name}' is at capacity: {self._in_flight} requests in "
                f"replicas and {len(self._waiting)} queued; retry later or raise "
                "config.max_queued_requests / num_replicas",
                retry_after_s=1.0,
            )
        loop = asyncio.get_running_loop()
        item = _Item(args, loop.create_future())
        self._waiting.append(item)
        self._dispatch()
        # A timer rather than asyncio.wait_for: no extra task per request on the hot path.
        timer = loop.call_later(timeout_s, self._expire, item, timeout_s)
        try:
            return await item.future
        except asyncio.CancelledError:  # the client went away: do not send it
            self._forget(item)
            raise
        finally:
            timer.cancel()

    def _expire(self, item: _Item, timeout_s: float) -> None:
        if item.future.done():
            return
        self._forget(item)
        item.future.set_exception(
            errors.UpstreamTimeout(
                f"deployment '{self.name}' did not answer within {timeout_s:g}s "
                "(config.request_timeout_s)"
            )
        )

    def _forget(self, item: _Item) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(item)  # not sent yet: nobody needs it any more

    def _queue_full(self) -> bool:
        cap = self.limits.max_queued_requests
        return cap >= 0 and len(self._waiting) >= cap

    def _has_room(self) -> bool:
        return self._in_flight < self.limits.in_flight and self._calls < self.limits.calls

    def _dispatch(self) -> None:
        while self._waiting and self._has_room():
            room = self.limits.in_flight - self._in_flight
            size = min(self.limits.max_batch_size, room, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(size)]
            self._in_flight += size
            self._calls += 1
            self.batches += 1
            self.batched += size
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Item]) -> None:
        sent = batch
        try:
            try:
                answers = await self._send([item.args for item in sent])
            except Exception as exc:
                if self._retry_on is None or not self._retry_on(exc):
                    raise
                sent = [item for item in batch if not item.future.done()]  # not timed out
                self.resent += 1
                answers = await self._send([item.args for item in sent]) if sent else []
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for item, answer in zip(sent, answers, strict=True):
                if not item.future.done():
                    item.future.set_result(answer)
        finally:
            self._in_flight -= len(batch)
            self._calls -= 1
            self._dispatch()
