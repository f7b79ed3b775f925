"""The Ray Jobs client the operator's runners (fine-tuning, batch predictions) submit with."""

from __future__ import annotations

from typing import Any


def job_client(dashboard_url: str | None) -> Any:
    """A ``JobSubmissionClient`` for the cluster's dashboard (the local one by default)."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url or "http://127.0.0.1:8265"
    return JobSubmissionClient(url if "://" in url else f"http://{url}")
