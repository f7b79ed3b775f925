"""Options shared by modelyard's detached control actors (registry, operator, async worker)."""

from __future__ import annotations

from typing import Any


def control_actor_options(name: str, head_node_id: str | None, **extra: Any) -> dict[str, Any]:
    """A named, detached actor that Ray restarts forever, with calls retried across restarts;
    pinned to the head node when given (the registry's SQLite file lives there)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.settings import NAMESPACE

    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
        **extra,
    }
    if head_node_id:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head_node_id, soft=False)
    return options
