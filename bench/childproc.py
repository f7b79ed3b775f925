"""The baselines that run outside Ray (offline encode, the plain training loop) run in a
fresh child process of the same script, with what Ray would give a worker of ``num_cpus``
CPUs, and print their result as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def run_json_child(
    script: str, flag: str, flags: list[Any], num_cpus: int, niceness: int, what: str
) -> Any:
    """``python script flag *flags`` at ``niceness``; its last stdout line, parsed."""
    child = subprocess.run(
        [sys.executable, script, flag, *map(str, flags)],
        # Ray sets OMP_NUM_THREADS from a worker's num_cpus; without it OpenMP's defaults
        # make torch several times slower on a busy machine.
        env={**os.environ, "OMP_NUM_THREADS": str(num_cpus)},
        preexec_fn=lambda: os.nice(max(0, niceness - os.nice(0))),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])
