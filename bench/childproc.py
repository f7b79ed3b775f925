"""The baselines that run outside Ray (offline encode, the plain training loop) run in fresh
child processes of the same script, with what Ray would give a worker of ``num_cpus`` CPUs,
and print their result as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

READY = "ready"


def child_env(num_cpus: int) -> dict[str, str]:
    # Ray sets OMP_NUM_THREADS from a worker's num_cpus; without it OpenMP's defaults make
    # torch several times slower on a busy machine.
    return {**os.environ, "OMP_NUM_THREADS": str(num_cpus)}


def renice(niceness: int):
    return lambda: os.nice(max(0, niceness - os.nice(0)))


def run_json_child(
    script: str, flag: str, flags: list[Any], num_cpus: int, niceness: int, what: str
) -> Any:
    """``python script flag *flags`` at ``niceness``; its last stdout line, parsed."""
    child = subprocess.run(
        [sys.executable, script, flag, *map(str, flags)],
        env=child_env(num_cpus),
        preexec_fn=renice(niceness),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{child.stderr[-3000:]}")
    return last_json(child.stdout)


def run_json_children_together(
    script: str, flag: str, flag_lists: list[list[Any]], num_cpus: int, niceness: int, what: str
) -> list[Any]:
    """One child per flag list, each with ``num_cpus``; every child prints ``ready`` when
    set up (model loaded, warmed up), and all of them are told to go at once (a line on
    stdin), so their measured parts run side by side. Returns their last stdout lines."""
    children = [
        subprocess.Popen(
            [sys.executable, script, flag, *map(str, flags)],
            env=child_env(num_cpus),
            preexec_fn=renice(niceness),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flags in flag_lists
    ]
    try:
        for child in children:
            line = child.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"{what} failed:\n{line}\n{child.stderr.read()[-3000:]}")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outs = [child.communicate(timeout=1800) for child in children]
    finally:
        for child in children:
            child.kill()
    for child, (_, err) in zip(children, outs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{err[-3000:]}")
    return [last_json(out) for out, _ in outs]


def last_json(stdout: str) -> Any:
    """A child's result: its last stdout line, as JSON."""
    return json.loads(stdout.strip().splitlines()[-1])


def wait_for_go() -> None:
    """In a child of ``run_json_children_together``: say ready, then wait to be told to go."""
    print(READY, flush=True)
    sys.stdin.readline()
