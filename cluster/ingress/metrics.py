"""Prediction counters and latency histograms kept by each ingress replica (``GET /metrics``)."""

from __future__ import annotations

from collections import defaultdict

from cluster.traffic_stats import AppStats

BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    def __init__(self) -> None:
        self.apps: dict[str, AppStats] = defaultdict(AppStats)
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS_MS) + 1))
        self.latency_sum_ms: dict[str, float] = defaultdict(float)

    def observe(
        self, deployment: str, outcome: str, latency_ms: float, app: str | None = None
    ) -> None:
        if app is not None:
            self.apps[app].observe(outcome, latency_ms)
        self.requests[(deployment, outcome)] += 1
        buckets = self.latency[deployment]
        for i, bound in enumerate(BUCKETS_MS):
            if latency_ms <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self.latency_sum_ms[deployment] += latency_ms

    def app_snapshots(self) -> dict[str, dict]:
        return {app: stats.snapshot() for app, stats in self.apps.items()}

    def render(self) -> str:
        """Prometheus text exposition format."""
        lines = [
            "# TYPE modelyard_predictions_total counter",
            *(
                f'modelyard_predictions_total{{deployment="{d}",outcome="{o}"}} {n}'
                for (d, o), n in sorted(self.requests.items())
            ),
            "# TYPE modelyard_prediction_latency_ms histogram",
        ]
        for dep, buckets in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS_MS, "+Inf"), buckets, strict=False):
                cumulative += n
                lines.append(
                    f'modelyard_prediction_latency_ms_bucket{{deployment="{dep}",le="{bound}"}} '
                    f"{cumulative}"
                )
            lines.append(
                f'modelyard_prediction_latency_ms_count{{deployment="{dep}"}} {cumulative}'
            )
            lines.append(
                f'modelyard_prediction_latency_ms_sum{{deployment="{dep}"}} '
                f"{self.latency_sum_ms[dep]:.3f}"
            )
        return "\n".join(lines) + "\n"
