"""Fuzzing: schemathesis over the control app's served /openapi.json, every operation.

Each operation gets positive and negative cases from its schema; operations whose path names
a deployment or a model run twice, once against the real ones (a MiniLM deployment and its
model) and once against generated names. The only check that must hold is schemathesis's
``not_a_server_error``: no 5xx, except a 503 from a route of the fuzzed deployment while that
deployment is stopped (or on its way back), which is the documented answer there.

Findings are collected rather than raised inside hypothesis, so one run lists every 5xx (no
shrinking, no example database written into the repository).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

from tests.e2e.support import API_KEY, BUNDLED, deploy

pytestmark = pytest.mark.e2e

DEPLOYMENT = "fuzz-minilm"
# The bundled weights under a model id of the fuzz's own: fuzzed calls add versions with
# made-up artifacts, which must not become the latest version other tests deploy.
MODEL = {**BUNDLED, "model_id": "fuzz-minilm-model"}
MAX_EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "20"))
# The same cases on every run by default, so CI is repeatable; a seed explores new ones.
SEED = os.environ.get("MODELYARD_FUZZ_SEED")
REQUEST_TIMEOUT_S = 30
# A deployment on its way down or back answers 503 by design; anything else is a finding.
NOT_SERVING = {"STOPPED", "PENDING", "DEPLOYING", "UPDATING"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Tally:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    allowed_503: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)


def _deployment_status(base_url: str) -> str | None:
    resp = requests.get(f"{base_url}/v1/deployments/{DEPLOYMENT}", headers=AUTH, timeout=10)
    return resp.json().get("status") if resp.status_code == 200 else None


def _record(tally: Tally, case, response, base_url: str) -> None:
    tally.cases += 1
    tally.by_status[response.status_code] = tally.by_status.get(response.status_code, 0) + 1
    seen = tally.by_operation.setdefault(case.operation.label, {})
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    try:
        case.validate_response(response, checks=[not_a_server_error])
        return
    except (Failure, FailureGroup):
        pass
    label = f"{case.method} {case.formatted_path}"
    on_fuzzed = f"/deployments/{DEPLOYMENT}" in case.formatted_path
    if response.status_code == 503 and on_fuzzed:
        status = _deployment_status(base_url)
        if status in NOT_SERVING:
            tally.allowed_503.append(f"{label} ({status})")
            return
    tally.findings.append(
        {
            "operation": case.operation.label,
            "request": label,
            "query": case.query,
            "body": None if case.body is NOT_SET else case.body,
            "status": response.status_code,
            "response": response.text[:2000],
        }
    )


def _fuzz(operation, tally: Tally, base_url: str, path_parameters: dict | None) -> None:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )

    def run(case) -> None:
        try:
            response = case.call(base_url=base_url, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            tally.cases += 1
            tally.findings.append(
                {"operation": operation.label, "request": case.formatted_path, "error": repr(exc)}
            )
            return
        _record(tally, case, response, base_url)

    test = given(case=strategy)(run)
    if SEED is not None:
        test = seed(int(SEED))(test)
    settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=SEED is None,
    )(test)()


def _fixed_parameters(operation, model_id: str) -> dict | None:
    names = {p.name for p in operation.path_parameters}
    fixed = {"name": DEPLOYMENT, "model_id": model_id}
    chosen = {k: v for k, v in fixed.items() if k in names}
    return chosen or None


@pytest.fixture(scope="module")
def fuzzed_deployment(api):
    r = api.post("/v1/models", json=MODEL)
    assert r.status_code in (201, 409), r.text
    task = deploy(api, model_id=MODEL["model_id"], version=1, deployment_name=DEPLOYMENT)
    assert task["status"] == "done", task
    yield DEPLOYMENT


@pytest.mark.timeout(900)
def test_no_operation_answers_a_server_error(local_cluster, api, fuzzed_deployment, clean_serve):
    base_url = local_cluster.url
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=AUTH, timeout=30)
    tally = Tally()
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert operations, "the served schema lists no operations"
    for operation in operations:
        fixed = _fixed_parameters(operation, MODEL["model_id"])
        if fixed:
            _fuzz(operation, tally, base_url, fixed)
        _fuzz(operation, tally, base_url, None)

    summary = {
        "schemathesis": schemathesis.__version__,
        "operations": len(operations),
        "cases": tally.cases,
        "by_status": dict(sorted(tally.by_status.items())),
        "by_operation": tally.by_operation,
        "allowed_503": tally.allowed_503,
        "findings": tally.findings,
    }
    print("\nFUZZ SUMMARY " + json.dumps(summary, indent=2, default=str))
    assert not tally.findings, json.dumps(tally.findings, indent=2, default=str)
