"""Counters of one Serve app's answers: the ingress counts them per replica, the registry
sums them over replicas, and the rollout reads error rate and p99 off two snapshots."""

from __future__ import annotations

# Finer buckets for rollout decisions: the p99 of a step is read off these.
STAT_BUCKETS_MS = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 60000,
)  # fmt: skip
ERROR_OUTCOMES = {
    "predictor_error",
    "timeout",
    "not_ready",
    "unavailable",
    "internal_error",
    "error",
}


class AppStats:
    """Cumulative counters of one Serve app, as the ingress sees its answers."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.inflight = 0
        self.buckets = [0] * (len(STAT_BUCKETS_MS) + 1)

    def observe(self, outcome: str, latency_ms: float) -> None:
        self.requests += 1
        if outcome in ERROR_OUTCOMES:
            self.errors += 1
        for i, bound in enumerate(STAT_BUCKETS_MS):
            if latency_ms <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def snapshot(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "inflight": self.inflight,
            "buckets": list(self.buckets),
        }


def merge(snapshots: list[dict]) -> dict:
    """Sum the snapshots of one app from several ingress replicas."""
    out = {"requests": 0, "errors": 0, "inflight": 0, "buckets": [0] * (len(STAT_BUCKETS_MS) + 1)}
    for snap in snapshots:
        out["requests"] += snap["requests"]
        out["errors"] += snap["errors"]
        out["inflight"] += snap["inflight"]
        out["buckets"] = [a + b for a, b in zip(out["buckets"], snap["buckets"], strict=True)]
    return out


def window(before: dict, after: dict) -> dict:
    """Requests, error rate and p99 between two cumulative snapshots of one app.

    A counter that went backwards (an ingress restarted) makes the window start afresh.
    """
    if not before or after["requests"] < before.get("requests", 0):
        before = {"requests": 0, "errors": 0, "buckets": [0] * len(after["buckets"])}
    count = after["requests"] - before["requests"]
    errors = after["errors"] - before["errors"]
    deltas = [a - b for a, b in zip(after["buckets"], before["buckets"], strict=True)]
    return {
        "requests": count,
        "errors": errors,
        "error_rate": errors / count if count else 0.0,
        "p99_ms": _quantile_ms(deltas, 0.99),
    }


def _quantile_ms(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= q * total:
            return float(STAT_BUCKETS_MS[i]) if i < len(STAT_BUCKETS_MS) else float("inf")
    return float("inf")
