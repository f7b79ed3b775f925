"""What the ingress routes with, and what the ingresses report back.

``snapshot`` is the ingress's routing table, versioned by the registry's boot id and the
state's generation (which changes with every routing-relevant write), so an unchanged table
is not sent again. ``ingress_view`` merges the ingresses' reports: their routing generation
(has a traffic change taken effect) and per-app counters, a rollout's health signal.
"""

from __future__ import annotations

import time
from typing import Any

from cluster.registry.deployments import DeploymentStore
from cluster.registry.models import ModelStore
from cluster.registry.state import RegistryState
from cluster.traffic_stats import merge


class RoutingTable:
    def __init__(
        self, state: RegistryState, models: ModelStore, deployments: DeploymentStore, boot: str
    ) -> None:
        self._state = state
        self._models = models
        self._deployments = deployments
        # With the generation, a fresh boot id makes a restarted registry look changed to
        # every cached reader.
        self._boot = boot
        # Ingress reports live in memory only: they are rebuilt within a second.
        self._ingress: dict[str, tuple[float, str | None, dict]] = {}

    def _current(self) -> str:
        return f"{self._boot}:{self._state.generation}"

    def snapshot(self, known: str | None = None) -> tuple[str, dict[str, dict] | None]:
        """What the ingress needs to route predictions; ``None`` when ``known`` is current."""
        generation = self._current()
        if generation == known:
            return generation, None
        table = {}
        for d in self._deployments.all():
            table[d.name] = {
                "status": d.status,
                "kind": self._models.kind(d.model_id),
                "model_version": d.model_version,
                "request_timeout_s": d.config.request_timeout_s,
                "limits": d.config.ingress_limits(),
                "variants": d.variants(),
            }
        return generation, table

    def report(self, ingress_id: str, generation: str | None, apps: dict) -> None:
        """An ingress replica's routing generation and cumulative per-app counters."""
        self._ingress[ingress_id] = (time.monotonic(), generation, apps)

    def ingress_view(self, max_age_s: float = 5.0) -> dict[str, Any]:
        """Live ingress reports merged: per-app counters, and whether every live ingress
        routes with the current generation (so a traffic change has taken effect)."""
        now = time.monotonic()
        live = [r for r in self._ingress.values() if now - r[0] <= max_age_s]
        current = self._current()
        per_app: dict[str, list[dict]] = {}
        for _, _, apps in live:
            for app, snap in apps.items():
                per_app.setdefault(app, []).append(snap)
        return {
            "generation": self._state.generation,
            "caught_up": all(r[1] == current for r in live),
            "apps": {app: merge(snaps) for app, snaps in per_app.items()},
        }
