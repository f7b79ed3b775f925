"""Reading Serve's state without Ray (parse_details, allocation), and the options a model
version's app is deployed with."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from ray.serve._private.common import ReplicaState
from ray.serve.schema import ApplicationStatus

from cluster.operator.serve_gateway import replica_actor_options, server_user_config
from cluster.operator.serve_state import AppState, allocation, parse_details
from cluster.schemas import DeploymentConfig, Resources

TOTAL = {"CPU": 16.0, "GPU": 1.0}


def details() -> dict:
    return {
        "controller_info": {"node_id": "head"},
        "applications": {
            "emb--v1": {
                "status": ApplicationStatus.RUNNING,
                "message": "",
                "last_deployed_time_s": 1_700_000_000.0,
                "deployments": {
                    "ModelServer": {
                        "target_num_replicas": 2,
                        "required_resources": {"CPU": 1, "GPU": 0.5},
                        "replicas": [
                            {"replica_id": "r1", "state": ReplicaState.RUNNING, "node_id": "n1"},
                            {"replica_id": "r2", "state": ReplicaState.STARTING, "node_id": None},
                        ],
                        "message": "Deployment is starting",
                    }
                },
            },
            "modelyard": {
                "status": "RUNNING",
                "message": None,
                "deployments": {"Ingress": {"target_num_replicas": 1}},
            },
            "bad--v1": {
                "status": ApplicationStatus.DEPLOY_FAILED,
                "message": "ImportError: no module named x",
                "deployments": {},
            },
        },
    }


def test_parse_details_with_enum_statuses():
    apps = parse_details(details())
    assert set(apps) == {"emb--v1", "modelyard", "bad--v1"}
    emb = apps["emb--v1"]
    assert emb.status == "RUNNING"  # the enum's value, not 'ApplicationStatus.RUNNING'
    assert emb.target_replicas == 2
    assert emb.required_resources == {"CPU": 1, "GPU": 0.5}
    assert [r["replica_id"] for r in emb.replicas] == ["r1", "r2"]
    assert emb.deployment_message == "Deployment is starting"
    assert emb.last_deployed == 1_700_000_000.0
    control = apps["modelyard"]
    assert (control.status, control.message, control.target_replicas) == ("RUNNING", "", 0)
    assert apps["bad--v1"].status == "DEPLOY_FAILED"
    assert apps["bad--v1"].message == "ImportError: no module named x"


def test_parse_details_empty():
    assert parse_details({}) == {}
    assert parse_details({"applications": None}) == {}


def test_allocation_started_with_routing_table_and_reason():
    app = parse_details(details())["emb--v1"]
    free = {"CPU": 10.0, "GPU": 0.0}
    alloc = allocation(app, TOTAL, free)
    assert alloc.allocation_state == "started"
    assert (alloc.target_replicas, alloc.running_replicas) == (2, 1)
    assert alloc.start_time == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    r1, r2 = alloc.routing_table["r1"], alloc.routing_table["r2"]
    assert (r1.node_id, r1.routing_state, r1.reason) == ("n1", "started", None)
    assert (r2.node_id, r2.routing_state) == (None, "starting")
    assert r2.reason is not None
    assert r2.reason.startswith("waiting for resources")
    assert r2.reason.endswith("free now: GPU=0")
    assert alloc.reason == r2.reason


def replica(rid: str, state, node: str | None = "n1") -> dict:
    return {"replica_id": rid, "state": state, "node_id": node}


def test_allocation_fully_allocated():
    app = AppState(
        name="a--v1",
        status="RUNNING",
        target_replicas=2,
        replicas=[replica("r1", ReplicaState.RUNNING), replica("r2", "RUNNING")],
    )
    alloc = allocation(app, TOTAL, TOTAL)
    assert alloc.allocation_state == "fully_allocated"
    assert alloc.running_replicas == 2
    assert alloc.reason is None
    assert {r.routing_state for r in alloc.routing_table.values()} == {"started"}


def test_allocation_starting():
    app = AppState(
        name="a--v1",
        status="DEPLOYING",
        target_replicas=1,
        required_resources={"CPU": 1},
        replicas=[replica("r1", ReplicaState.STARTING, node="n1")],
    )
    alloc = allocation(app, TOTAL, TOTAL)
    assert alloc.allocation_state == "starting"
    assert alloc.running_replicas == 0
    # Placed on a node, just not running yet: no resource complaint.
    assert alloc.routing_table["r1"].reason is None
    assert alloc.start_time is None


def test_allocation_stopping_replicas_do_not_count():
    app = AppState(
        name="a--v1",
        status="DEPLOYING",
        target_replicas=1,
        replicas=[replica("r1", ReplicaState.STOPPING)],
    )
    alloc = allocation(app, TOTAL, TOTAL)
    assert alloc.routing_table["r1"].routing_state == "stopping"
    assert alloc.allocation_state == "starting"


def test_allocation_failed_uses_app_message():
    apps = parse_details(details())
    alloc = allocation(apps["bad--v1"], TOTAL, TOTAL)
    assert alloc.allocation_state == "failed"
    assert alloc.reason == "ImportError: no module named x"
    app = AppState(name="c--v1", status="DEPLOY_FAILED", deployment_message="replica crashed")
    assert allocation(app, TOTAL, TOTAL).reason == "replica crashed"


def test_allocation_of_missing_app_is_stopped():
    alloc = allocation(None, TOTAL, TOTAL)
    assert alloc.allocation_state == "stopped"
    assert alloc.routing_table == {}


def test_server_user_config_and_ray_options():
    config = DeploymentConfig(
        max_batch_size=8, batch_wait_timeout_ms=20, resources=Resources(num_gpus=0.5, memory=2**30)
    )
    assert server_user_config(config) == {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
    assert config.resources.as_ray_options() == {
        "num_gpus": 0.5,
        "num_cpus": 1,
        "memory": 2**30,
    }


def test_replica_options_carry_the_openmp_wait_policy():
    passive = replica_actor_options(DeploymentConfig(resources=Resources(num_cpus=2)))
    assert passive == {
        "num_gpus": 0,
        "num_cpus": 2,
        "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
    }
    active = replica_actor_options(DeploymentConfig(omp_wait_policy="active"))
    assert active["runtime_env"] == {"env_vars": {"OMP_WAIT_POLICY": "ACTIVE"}}
    assert "runtime_env" not in replica_actor_options(DeploymentConfig(omp_wait_policy="default"))
    with pytest.raises(ValueError, match="omp_wait_policy"):
        DeploymentConfig(omp_wait_policy="spin")


def test_allocation_names_what_the_cluster_lacks_before_serve_lists_a_replica():
    app = AppState(
        name="a--v1", status="DEPLOYING", target_replicas=1, required_resources={"GPU": 64}
    )
    alloc = allocation(app, TOTAL, TOTAL)
    assert alloc.allocation_state == "starting"
    assert alloc.reason is not None and alloc.reason.startswith("insufficient GPU")
    # Resources the cluster has, merely in use now, are no reason: the replica may be loading.
    fits = AppState(
        name="a--v1", status="DEPLOYING", target_replicas=1, required_resources={"CPU": 1}
    )
    assert allocation(fits, TOTAL, {"CPU": 0.0}).reason is None


def test_allocation_of_an_app_scaled_to_zero_is_full():
    app = AppState(name="a--v1", status="RUNNING", target_replicas=0)
    alloc = allocation(app, TOTAL, TOTAL)
    assert (alloc.allocation_state, alloc.target_replicas, alloc.running_replicas) == (
        "fully_allocated",
        0,
        0,
    )
    # Scaling down to zero: replicas still stopping do not make it less than full.
    down = AppState(name="a--v1", status="RUNNING", replicas=[replica("r1", ReplicaState.STOPPING)])
    assert allocation(down, TOTAL, TOTAL).allocation_state == "fully_allocated"
