"""cluster.yaml is a valid Ray cluster-launcher config and has what modelyard relies on.

Validation is Ray's own: ``prepare_config`` + ``validate_config`` are what ``ray up`` runs
before it launches anything (provider defaults filled in, then ``ray-schema.json`` and the
cross-field rules). Both are offline: no cloud credentials, no Ray started.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does with the file before launching; raises on an invalid config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_valid_for_ray_up(config: dict[str, Any]) -> None:
    ray_validate(config)


def test_file_itself_matches_ray_schema(config: dict[str, Any]) -> None:
    """The file as written, before Ray fills in defaults."""
    jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))


def test_autoscaling_gpu_worker_type(config: dict[str, Any]) -> None:
    head = config["head_node_type"]
    gpu_types = {
        name: spec
        for name, spec in config["available_node_types"].items()
        if name != head and spec["resources"].get("GPU", 0) >= 1
    }
    assert gpu_types, "no worker node type with resources GPU >= 1"
    assert any(
        spec.get("max_workers", 0) > spec.get("min_workers", 0) for spec in gpu_types.values()
    ), "no GPU worker type can scale up (max_workers > min_workers)"
    assert config["max_workers"] >= 1


def test_setup_installs_torch_pin_before_project(config: dict[str, Any]) -> None:
    cmds = config["setup_commands"]
    torch_at = [i for i, c in enumerate(cmds) if "pip install" in c and "torch==2.13.0" in c]
    project = [(i, m.group(1)) for i, c in enumerate(cmds) if (m := re.search(r"-e\s+(\S+)", c))]
    assert torch_at, "no setup command installs torch==2.13.0"
    assert project, "no setup command installs the project (pip install -e <dir>)"
    assert torch_at[0] < project[0][0], "torch must be installed before the project"
    target = project[0][1].strip("'\"").replace("$HOME/", "~/")
    # The nodes serve and train: the server extras, not the client-only install.
    assert target.endswith("[server]"), f"install {target!r} with its [server] extras"
    # The directory installed is the one file_mounts brings to the nodes.
    assert target.removesuffix("[server]") in config["file_mounts"]


def test_head_starts_ray_then_modelyard(config: dict[str, Any]) -> None:
    cmds = config["head_start_ray_commands"]
    ray_head = next(i for i, c in enumerate(cmds) if "ray start --head" in c)
    up = next(i for i, c in enumerate(cmds) if "modelyard up" in c)
    assert ray_head < up
    assert "--detach" in cmds[up]
    assert "--host 0.0.0.0" in cmds[up]
    assert "MODELYARD_STORAGE_ROOT=" in cmds[up]
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])


def _unknown_top_level_key(c: dict[str, Any]) -> None:
    c["not_a_ray_key"] = 1


def _max_workers_wrong_type(c: dict[str, Any]) -> None:
    c["max_workers"] = "four"


def _fractional_gpu_resource(c: dict[str, Any]) -> None:
    for spec in c["available_node_types"].values():
        if "GPU" in spec["resources"]:
            spec["resources"]["GPU"] = 0.5


def _unknown_node_type_key(c: dict[str, Any]) -> None:
    next(iter(c["available_node_types"].values()))["gpus"] = 1


def _head_type_missing(c: dict[str, Any]) -> None:
    c["head_node_type"] = "no-such-type"


@pytest.mark.parametrize(
    ("break_it", "error"),
    [
        (_unknown_top_level_key, jsonschema.ValidationError),
        (_max_workers_wrong_type, jsonschema.ValidationError),
        (_fractional_gpu_resource, jsonschema.ValidationError),
        (_unknown_node_type_key, jsonschema.ValidationError),
        (_head_type_missing, ValueError),
    ],
)
def test_broken_copy_is_rejected(config: dict[str, Any], break_it, error) -> None:
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises(error):
        ray_validate(broken)
