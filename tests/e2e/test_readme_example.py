"""The driver script the docs show (examples/driver.py, printed whole in docs/client.md and
pointed to from the README) runs against a live server: deploy, predict, fine-tune (a real
Ray Job, a few steps) and swap to the fine-tuned version."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.support import API_KEY, ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_driver_example_runs(local_cluster, clean_serve):
    env = {
        **os.environ,
        "MODELYARD_URL": local_cluster.url,
        "MODELYARD_API_KEY": API_KEY,
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "driver.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedding[:3]" in out.stdout
    assert "async: 384 dims" in out.stdout
    assert "fine-tuning: done -> v" in out.stdout and "recall@1" in out.stdout
    assert "swap: done -> " in out.stdout
    assert "rollout_done" in out.stdout
    shown = (ROOT / "docs" / "client.md").read_text()
    assert (ROOT / "examples" / "driver.py").read_text().strip() in shown
    assert "examples/driver.py" in (ROOT / "README.md").read_text()
