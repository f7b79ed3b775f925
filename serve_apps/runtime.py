"""The process set-up shared by model replicas and batch actors: device and torch threads.

A Serve replica (``serve_apps.model_server``) and a batch-prediction actor
(``serve_apps.batch``) run the same predictors, so they pick their device and size torch's
thread pool by the same rule; a batch job then answers what ``/predict`` answers, as fast.
"""

from __future__ import annotations

import os


def pick_device() -> str:
    """``cuda`` when Ray gave this process a GPU and CUDA is there, else ``cpu``."""
    import ray
    import torch

    if ray.get_gpu_ids() and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def use_ray_cpu_share() -> None:
    """Let torch run exactly as many threads as CPUs Ray gave this process.

    Ray sets ``OMP_NUM_THREADS`` from the actor's ``num_cpus``; torch's own default takes
    the whole node, which oversubscribes it when several replicas share one.
    """
    import torch

    threads = int(float(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    if threads > 0:
        torch.set_num_threads(threads)
