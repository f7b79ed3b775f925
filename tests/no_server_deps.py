"""Run Python as ``pip install modelyard`` leaves it: without the server's dependencies.

``run(code)`` runs ``code`` in a fresh interpreter whose imports of the server's packages
(Ray, torch, FastAPI, ...) and of modelyard's server side raise ``ModuleNotFoundError``, as
they would where they are not installed. ``SERVER_MODULES`` are modelyard's own modules that
only the server imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What ``modelyard[server]`` adds, and modelyard's trainer and replica code.
BLOCKED = (
    "ray",
    "torch",
    "fastapi",
    "starlette",
    "uvicorn",
    "sentence_transformers",
    "transformers",
    "pydantic_settings",
    "pyarrow",
    "train_jobs",
    "serve_apps",
)
SERVER_MODULES = (
    "cluster.settings",
    "cluster.ingress",
    "cluster.registry",
    "cluster.operator",
    "cluster.jobs",
    "cluster.api",
    "cluster.bootstrap",
    "cluster.uris",
)

PRELUDE = f"""
import sys

BLOCKED = {BLOCKED!r}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""

# Runs after the code, also when it exits (a CLI's ``main()`` does). It catches the server
# modules the blocker cannot: those whose own imports need nothing blocked.
CHECK = f"""
SERVER_MODULES = {SERVER_MODULES!r}
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in BLOCKED or any(m == s or m.startswith(s + ".") for s in SERVER_MODULES)
)
assert not loaded, f"server modules imported: {{loaded}}"
"""


def program(code: str) -> str:
    """The blocker, then ``code`` as a ``__main__``, then the check."""
    body = f"exec(compile({code!r}, '<code>', 'exec'), {{'__name__': '__main__'}})"
    check = "".join(f"    {line}\n" for line in CHECK.strip().splitlines())
    return f"{PRELUDE}\ntry:\n    {body}\nfinally:\n{check}"


def cli(*args: str) -> str:
    """Code that runs ``modelyard ARGS`` (its exit status is the run's)."""
    argv = ["modelyard", *args]
    return f"import sys\nsys.argv = {argv!r}\nfrom cluster.cli import main\nmain()\n"


def run(
    code: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter without the server's packages, then a check that no
    server module got imported (exit status 1 if one did); its output as text."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", program(code)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
