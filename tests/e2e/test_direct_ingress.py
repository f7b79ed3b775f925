"""``modelyard up --direct-ingress``: a private local Ray with Serve's direct ingress, where
the ingress replica answers on a port of its own (no proxy hop) and the proxy still answers
on the configured port. Runs ``modelyard up`` as a user would, in a child process."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.support import API_KEY, ROOT, free_port

pytestmark = pytest.mark.e2e

TEXT = "direct ingress skips the proxy"


def _lines(proc: subprocess.Popen) -> queue.Queue:
    out: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _read_until(out: queue.Queue, marker: str, timeout_s: float) -> str:
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout_s}s:\n{''.join(seen)[-3000:]}")


def test_up_with_direct_ingress_serves_from_the_ingress_replica(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(COLUMNS="200", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    modelyard = str(Path(sys.executable).parent / "modelyard")  # the console script
    cmd = [modelyard, "up", "--direct-ingress", "--port", str(port)]
    cmd += ["--storage-root", str(tmp_path), "--api-key", API_KEY]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner = _read_until(_lines(proc), "serving in the foreground", 600)
        direct = re.search(r"modelyard is up at (http://\S+)", banner).group(1)
        proxy = re.search(r"the Serve proxy at (http://\S+) answers too", banner).group(1)
        assert proxy == f"http://127.0.0.1:{port}" and direct != proxy

        auth = {"Authorization": f"Bearer {API_KEY}"}
        body = {"args": {"texts": [TEXT]}}
        assert httpx.get(f"{direct}/healthz", timeout=10).status_code == 200
        denied = httpx.post(f"{direct}/v1/deployments/minilm/predict", json=body, timeout=30)
        assert denied.status_code == 401
        answers = []
        for base in (direct, proxy):
            resp = httpx.post(
                f"{base}/v1/deployments/minilm/predict", json=body, headers=auth, timeout=60
            )
            assert resp.status_code == 200, resp.text
            answers.append(np.array(resp.json()["result"]["embeddings"][0]))
        assert answers[0].shape == (384,)
        assert float(answers[0] @ answers[1]) == pytest.approx(
            float(np.linalg.norm(answers[0]) * np.linalg.norm(answers[1])), rel=1e-4
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
