"""Capacity: what replicas need, what is short, and every message about missing capacity.

Pure arithmetic on Ray's resource dicts (``{"CPU": 8.0, "GPU": 1.0, "memory": ...}``), so
the operator, the rollout start and the allocation view word a shortage the same way and
unit tests need no Ray. The reads of the cluster's total and free resources live in
``cluster.operator.serve_state``.
"""

from __future__ import annotations

from cluster.schemas import DeploymentConfig

# Where a user lowers each resource in a deployment config.
_CONFIG_FIELD = {"GPU": "num_gpus", "CPU": "num_cpus", "memory": "memory"}
# Float sums of fractional GPUs and CPUs are not exact: 0.1 + 0.2 free must fit a 0.3 need.
_EPSILON = 1e-9


def replica_demand(config: DeploymentConfig, replicas: int = 1) -> dict[str, float]:
    """What ``replicas`` replicas of ``config`` ask Ray for, in Ray's resource names."""
    res = config.resources
    need = {"CPU": res.num_cpus * replicas, "GPU": res.num_gpus * replicas}
    if res.memory:
        need["memory"] = float(res.memory * replicas)
    return need


def shortage(need: dict[str, float], free: dict[str, float]) -> dict[str, float]:
    """Resources (Ray names) of which less is free than ``need``."""
    return {r: n for r, n in need.items() if n > 0 and free.get(r, 0.0) + _EPSILON < n}


def surge_percent(config: DeploymentConfig, free: dict[str, float]) -> int:
    """Serve's ``max_surge_percent`` for an in-place swap: with room for one extra replica,
    surge by one replica; with none, replace in place."""
    if shortage(replica_demand(config), free):
        return 0
    return min(100, -(-100 // config.replicas_wanted))


def green_refusal(config: DeploymentConfig, free: dict[str, float]) -> str | None:
    """Why a green rollout cannot start now: the new version's replicas, beside the old
    ones, need more than is free. None when they fit."""
    need = replica_demand(config, config.replicas_wanted)
    short = shortage(need, free)
    if not short:
        return None
    return (
        "not enough free resources for the new version beside the old one: needs "
        + ", ".join(f"{r}={need[r]:g} (free {free.get(r, 0.0):g})" for r in short)
        + "; free some, or use rollout.strategy 'in_place'"
    )


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()) if v) or "nothing"


def pending_reason(
    required: dict[str, float], total: dict[str, float], free: dict[str, float]
) -> str | None:
    """Why a replica that needs ``required`` is not placed, in words a user can act on."""
    for res, need in sorted(required.items()):
        if need <= 0:
            continue
        have = total.get(res, 0.0)
        if have < need:
            return (
                f"insufficient {res}: each replica needs {res}={need:g} but the cluster has "
                f"{res}={have:g} in total; add nodes with {res} or lower "
                f"resources.{_CONFIG_FIELD.get(res, res)}"
            )
    short = {r: n for r, n in required.items() if n > 0 and free.get(r, 0.0) < n}
    if short:
        return (
            f"waiting for resources: each replica needs {_fmt(required)}, free now: "
            + ", ".join(f"{r}={free.get(r, 0.0):g}" for r in sorted(short))
        )
    return None
