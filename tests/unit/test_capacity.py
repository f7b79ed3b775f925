"""Capacity without Ray: what replicas need, what is short, and the messages that say so."""

from __future__ import annotations

from cluster.operator.capacity import (
    green_refusal,
    pending_reason,
    replica_demand,
    shortage,
    surge_percent,
)
from cluster.schemas import Autoscaling, DeploymentConfig, Resources

TOTAL = {"CPU": 16.0, "GPU": 1.0}


def test_pending_reason_cluster_too_small_names_gpu():
    reason = pending_reason({"CPU": 1, "GPU": 2}, TOTAL, {"CPU": 16.0, "GPU": 1.0})
    assert reason is not None
    assert reason.startswith("insufficient GPU")
    assert "GPU=2" in reason
    assert "GPU=1 in total" in reason
    assert "resources.num_gpus" in reason


def test_pending_reason_cluster_without_gpus():
    reason = pending_reason({"CPU": 1, "GPU": 1}, {"CPU": 4.0}, {"CPU": 4.0})
    assert "insufficient GPU" in reason
    assert "GPU=0 in total" in reason


def test_pending_reason_only_busy_now():
    reason = pending_reason({"CPU": 1, "GPU": 1}, TOTAL, {"CPU": 8.0, "GPU": 0.0})
    assert reason is not None
    assert reason.startswith("waiting for resources")
    assert "insufficient" not in reason
    assert reason.endswith("free now: GPU=0")
    assert "each replica needs CPU=1, GPU=1" in reason


def test_pending_reason_memory_names_the_config_field():
    reason = pending_reason({"memory": 8e9}, {"memory": 4e9}, {"memory": 4e9})
    assert reason.startswith("insufficient memory")
    assert reason.endswith("resources.memory")


def test_pending_reason_none_when_it_fits():
    assert pending_reason({"CPU": 1, "GPU": 1}, TOTAL, TOTAL) is None
    assert pending_reason({"CPU": 1, "GPU": 0}, {"CPU": 1.0}, {"CPU": 1.0}) is None


def test_replica_demand_counts_every_replica_and_memory_only_when_asked():
    config = DeploymentConfig(resources=Resources(num_cpus=2, num_gpus=0.5))
    assert replica_demand(config, 3) == {"CPU": 6, "GPU": 1.5}
    with_memory = DeploymentConfig(resources=Resources(num_cpus=1, memory=2**30))
    assert replica_demand(with_memory, 2) == {"CPU": 2, "GPU": 0, "memory": 2.0 * 2**30}


def test_shortage_names_only_what_is_short_and_tolerates_float_sums():
    assert shortage({"CPU": 2, "GPU": 1}, {"CPU": 4.0, "GPU": 0.5}) == {"GPU": 1}
    assert shortage({"CPU": 0.3, "GPU": 0}, {"CPU": 0.1 + 0.2}) == {}
    assert shortage({"memory": 8.0}, {}) == {"memory": 8.0}


def test_surge_by_one_replica_when_one_more_fits_else_in_place():
    config = DeploymentConfig(num_replicas=3, resources=Resources(num_cpus=1, num_gpus=1))
    assert surge_percent(config, {"CPU": 1.0, "GPU": 1.0}) == 34  # one replica of three
    assert surge_percent(config, {"CPU": 8.0, "GPU": 0.0}) == 0
    one = DeploymentConfig(num_replicas=1)
    assert surge_percent(one, {"CPU": 8.0}) == 100


def test_green_refusal_names_each_short_resource_with_need_and_free():
    config = DeploymentConfig(num_replicas=2, resources=Resources(num_cpus=1, num_gpus=1))
    refusal = green_refusal(config, {"CPU": 8.0, "GPU": 1.0})
    assert refusal is not None
    assert refusal.startswith("not enough free resources for the new version beside the old one")
    assert "GPU=2 (free 1)" in refusal
    assert "CPU" not in refusal  # enough CPU is free: not named
    assert refusal.endswith("use rollout.strategy 'in_place'")


def test_green_refusal_counts_the_autoscaler_s_wanted_replicas():
    auto = Autoscaling(min_replicas=2, max_replicas=4)
    config = DeploymentConfig(autoscaling=auto, resources=Resources(num_cpus=2))
    short = green_refusal(config, {"CPU": 3.0})
    assert short is not None and f"CPU={2 * config.replicas_wanted:g} (free 3)" in short


def test_green_refusal_none_when_the_new_copy_fits():
    config = DeploymentConfig(num_replicas=2, resources=Resources(num_cpus=1, num_gpus=1))
    assert green_refusal(config, {"CPU": 2.0, "GPU": 2.0}) is None
