"""Fault injection on a local multi-node Ray: a worker node holding one of two replicas dies.

The session's single-node Ray (tests/e2e/conftest.py) cannot hold this case, so the module starts
its own cluster with Ray's cluster utilities (a head with no CPUs for model replicas and two
workers of 2 CPUs) and must run in a pytest process of its own: ``pytest -m multinode``.
Replicas ask for one CPU each and Serve spreads them, so each worker holds one; the worker
holding a replica but not the ingress is removed without a graceful shutdown, under the
same steady load as tests/e2e/test_faults.py, and the same figures are recorded.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import ray
from ray.util.state import list_actors

from cluster.settings import CONTROL_APP, NAMESPACE
from tests import faults_support as faults
from tests.e2e.support import API_KEY, ROOT, LocalCluster, deploy, register_echo, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.multinode]

WORKER_CPUS = 2


class MultiNodeCluster(LocalCluster):
    """The control plane on a head node of a ``ray.cluster_utils.Cluster``."""

    def start(self) -> None:
        from ray.cluster_utils import Cluster

        from cluster.bootstrap import start_control_plane
        from cluster.settings import key_digest

        self.ray = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        self.workers = [self.ray.add_node(num_cpus=WORKER_CPUS) for _ in range(2)]
        self.ray.wait_for_nodes()
        ray.init(
            address=self.ray.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}},
        )
        self.info = start_control_plane(self.settings, key_digest(API_KEY), deploy_default=False)
        wait_for(self._healthy, 90, "the control app to answer /healthz")

    def stop(self) -> None:
        ray.shutdown()
        self.ray.shutdown()


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    if ray.is_initialized():
        pytest.skip("needs a Ray of its own: run it in its own process, pytest -m multinode")
    cluster = MultiNodeCluster(tmp_path_factory.mktemp("modelyard-multinode"))
    cluster.start()
    with httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as api:
        yield cluster, api
    cluster.stop()


def _node_of(class_name: str) -> list[str]:
    return sorted(
        a.node_id
        for a in list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])
    )


def _victim(cluster: MultiNodeCluster):
    """The worker holding a model replica and not the ingress (killing the ingress too is
    the ingress case of the single-node test)."""
    replica_nodes = _node_of(f"ServeReplica:{faults.APP}:ModelServer")
    assert len(set(replica_nodes)) == 2, f"replicas not on two nodes: {replica_nodes}"
    ingress_nodes = set(_node_of(f"ServeReplica:{CONTROL_APP}:Ingress"))
    for worker in cluster.workers:
        if worker.node_id in replica_nodes and worker.node_id not in ingress_nodes:
            return worker
    pytest.fail(f"no worker with a replica and without the ingress: {replica_nodes}")


@pytest.mark.timeout(600)
def test_worker_node_with_one_of_two_replicas_dies_under_load(multinode):
    cluster, api = multinode
    register_echo(api, faults.MODEL, delay_s=0.005)
    config = {"num_replicas": 2, "resources": {"num_cpus": 1}}
    assert deploy(api, model_id=faults.MODEL, config=config)["status"] == "done"
    wait_for(lambda: faults.full_capacity(api), 90, "both replicas RUNNING")
    before = faults.registry_snapshot(api)
    victim = _victim(cluster)
    load = faults.Load(cluster.url).start()
    start = time.monotonic()
    load.collect()
    killed_at = time.monotonic()
    cluster.ray.remove_node(victim, allow_graceful=False)

    def replaced() -> bool:
        nodes = _node_of(f"ServeReplica:{faults.APP}:ModelServer")
        return victim.node_id not in nodes and faults.full_capacity(api)

    wait_for(replaced, faults.RECOVERY_BOUND_S, "a replacement replica", interval_s=0.5)
    recovered_at = time.monotonic()
    load.collect()
    answers = load.stop()
    window = faults.Window(start, killed_at, recovered_at, time.monotonic())
    lost = faults.lost_rows(before, faults.registry_snapshot(api))
    row = faults.summarize("worker node (1 of 2 replicas)", answers, window, lost)
    print(f"\nFAULT CASE {json.dumps(row)}", flush=True)
    faults.publish([row])
    faults.assert_held(row)
