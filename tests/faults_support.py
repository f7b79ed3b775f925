"""What the fault-injection tests share: the steady load on one echo deployment, the probes
for full capacity and for what the registry holds, and the figures each case reports.

The figures are plain functions of the answers and the window, so unit tests check them
without Ray (tests/unit/test_fault_figures.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.e2e.support import API_KEY, wait_for

MODEL = "faults-echo"
APP = f"{MODEL}--v1"
PREDICT = f"/v1/deployments/{MODEL}/predict"
RATE_PER_S = 30
CLIENTS = 6
# Above the ~15 s Ray takes to declare a dead node, so a slow answer is told from a hang.
REQUEST_TIMEOUT_S = 30
# Successes the load collects before the fault and again once capacity is back: about
# STEADY_S seconds at RATE_PER_S, counted rather than timed so a slow machine only waits longer.
STEADY_S = 3
STEADY_SUCCESSES = RATE_PER_S * STEADY_S
STEADY_BOUND_S = 60
RECOVERY_BOUND_S = 120


@dataclass
class Answer:
    sent: float
    done: float
    status: int | str  # the HTTP status, or the name of the transport error the client saw
    body: str = ""  # what a non-2xx answer said


def _ok(answer: Answer) -> bool:
    return answer.status in range(200, 300)


@dataclass
class Load:
    """CLIENTS threads, each pacing itself to RATE_PER_S / CLIENTS requests a second."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(CLIENTS):
            t = threading.Thread(target=self._client, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def successes(self) -> int:
        return sum(_ok(a) for a in list(self.answers))

    def collect(self, successes: int = STEADY_SUCCESSES) -> None:
        """Wait, bounded, until ``successes`` more requests than now have succeeded."""
        target = self.successes() + successes
        wait_for(
            lambda: self.successes() >= target,
            STEADY_BOUND_S,
            f"{successes} successful predictions under the steady load",
        )

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT_S + 5)
        return sorted(self.answers, key=lambda a: a.sent)

    def _client(self, i: int) -> None:
        interval = CLIENTS / RATE_PER_S
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as c:
            due = time.monotonic() + i * interval / CLIENTS
            n = 0
            while not self._stop.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                sent = time.monotonic()
                status, body = _post(c, {"args": {"client": i, "n": n}})
                self.answers.append(Answer(sent, time.monotonic(), status, body))
                n += 1
                # Behind schedule (a slow answer): carry on from now instead of bursting.
                due = max(due + interval, time.monotonic())


def _post(client: httpx.Client, body: dict) -> tuple[int | str, str]:
    try:
        resp = client.post(PREDICT, json=body)
    except httpx.TimeoutException:
        return "timeout", ""
    except httpx.TransportError as exc:
        return type(exc).__name__, str(exc)[:200]
    return resp.status_code, "" if resp.is_success else resp.text[:300]


def full_capacity(api: httpx.Client) -> bool:
    from ray import serve

    from cluster.settings import CONTROL_APP

    apps = serve.status().applications
    if CONTROL_APP not in apps or APP not in apps:
        return False
    model = apps[APP].deployments["ModelServer"]
    if apps[CONTROL_APP].status != "RUNNING" or model.replica_states != {"RUNNING": 2}:
        return False
    try:
        control = api.get("/v1/deployments", timeout=5).status_code
        predict = api.post(PREDICT, json={"args": {"probe": True}}, timeout=5).status_code
    except httpx.HTTPError:
        return False
    return control == 200 and predict == 200


def registry_snapshot(api: httpx.Client) -> dict:
    deployments = api.get("/v1/deployments").json()
    models = api.get("/v1/models").json()
    tasks = api.get("/v1/tasks", params={"limit": 500}).json()["items"]
    return {
        "deployments": {d["name"]: (d["status"], d["model_version"]) for d in deployments},
        "versions": {m["model_id"]: m["versions"] for m in models},
        "tasks": {t["id"]: t["status"] for t in tasks},
    }


def longest_gap(answers: list[Answer], start: float, end: float) -> float:
    done = [start] + sorted(a.done for a in answers if _ok(a)) + [end]
    return max(b - a for a, b in zip(done, done[1:], strict=False))


@dataclass
class Window:
    """When the load ran and when the fault happened (time.monotonic() seconds)."""

    start: float
    killed_at: float
    recovered_at: float
    end: float


def summarize(case: str, answers: list[Answer], w: Window, lost: dict) -> dict:
    """One row of the figures table."""
    statuses = Counter(a.status for a in answers)
    failed = [a for a in answers if not _ok(a)]
    steady = sum(a.sent < w.killed_at for a in answers)
    return {
        "case": case,
        "sent": len(answers),
        "rate_per_s": round(len(answers) / (w.end - w.start), 1),
        "steady_rate_per_s": round(steady / (w.killed_at - w.start), 1),
        "non_2xx": {str(s): n for s, n in statuses.items() if s not in range(200, 300)},
        "longest_gap_s": round(longest_gap(answers, w.start, w.end), 2),
        "slowest_answer_s": round(max(a.done - a.sent for a in answers), 2),
        "back_to_full_capacity_s": round(w.recovered_at - w.killed_at, 1),
        "registry_lost": lost,
        "examples": {str(a.status): a.body for a in failed},
    }


def lost_rows(before: dict, after: dict) -> dict:
    lost = {}
    for kind, rows in before.items():
        gone = {k: v for k, v in rows.items() if after[kind].get(k) != v}
        if gone:
            lost[kind] = gone
    return lost


def figures_table(rows: list[dict]) -> str:
    head = "| case | sent | req/s (steady) | non-2xx | longest gap s | slowest s | back s | lost |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        rate = f"{r['rate_per_s']} ({r['steady_rate_per_s']})"
        cells = [r["case"], r["sent"], rate, json.dumps(r["non_2xx"])]
        cells += [r["longest_gap_s"], r["slowest_answer_s"], r["back_to_full_capacity_s"]]
        cells.append(json.dumps(r["registry_lost"]) if r["registry_lost"] else "nothing")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def publish(rows: list[dict]) -> None:
    """Print the table (pytest -s) and append it to MODELYARD_FAULT_FIGURES when set."""
    table = figures_table(rows)
    print("\n" + table, flush=True)
    if path := os.environ.get("MODELYARD_FAULT_FIGURES"):
        with open(path, "a") as f:
            f.write(f"\n{time.strftime('%H:%M UTC', time.gmtime())}\n\n{table}\n")


def assert_held(row: dict) -> None:
    """What a fault case must keep today: nothing lost from the registry, and no request
    left hanging past its timeout. The non-2xx counts are recorded, not asserted."""
    assert row["registry_lost"] == {}, row
    assert "timeout" not in row["non_2xx"], row
