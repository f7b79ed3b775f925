"""The bounds of the async queue (``AsyncQueue``) and its back-off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A deployment that is not ready is asked again after 1, 2, 4 ... s, at most this.
DEPLOYMENT_PAUSE_MAX_S = 10.0
QUEUE_FULL_RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class AsyncLimits:
    """Bounds of the async queue. The settings (``MODELYARD_ASYNC_*``) set the attempts, the
    total bound (a deployment may hold half of it, so one flood leaves room for the others)
    and the PENDING TTL; the rest are fixed here."""

    max_attempts: int = 5
    max_pending: int = 100_000
    max_pending_per_deployment: int = 50_000
    # Below the worker's concurrency (64), so a slow deployment leaves slots for the others.
    max_inflight_per_deployment: int = 32
    pending_ttl_s: float = 3600.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> AsyncLimits:
        return cls(
            max_attempts=settings.async_max_attempts,
            max_pending=settings.async_max_pending,
            max_pending_per_deployment=max(1, settings.async_max_pending // 2),
            pending_ttl_s=settings.async_pending_ttl_s,
        )


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Wait before the next try after ``attempts`` failed ones: base, 2 base, 4 base ..."""
    return min(max_s, base_s * 2 ** max(0, attempts - 1))
