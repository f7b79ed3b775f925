"""Each module of the predict path and of the routes imports on its own, first, in a fresh
interpreter: no import cycle that only a lucky import order (or a lazy import) hides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The modules an import cycle ran through (http -> deps -> control -> http), and the ones
# that sit between them now.
MODULES = (
    "cluster.ingress.http",
    "cluster.ingress.auth",
    "cluster.ingress.door",
    "cluster.ingress.predict",
    "cluster.ingress.async_worker",
    "cluster.api.deps",
    "cluster.api.control",
)


@pytest.fixture(scope="module")
def imports() -> dict[str, subprocess.Popen]:
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", f"import {m}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for m in MODULES
    }
    for proc in procs.values():
        proc.wait(timeout=120)
    return procs


@pytest.mark.parametrize("module", MODULES)
def test_imports_first_and_alone(imports, module):
    proc = imports[module]
    assert proc.returncode == 0, proc.stdout.read()
