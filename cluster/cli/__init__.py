"""The ``modelyard`` command line.

``up``/``down`` run the server (``server``, which imports it only when they start, so that
``pip install modelyard`` without ``[server]`` gives every other command); every other
command talks to a running one over HTTP through the typed client (``status``,
``deployments``, ``finetune``, ``catalog``), with ``--url`` and ``--api-key`` (``common``);
``views`` renders the answers.
"""

from cluster.cli import (  # noqa: F401  (they register commands)
    catalog,
    deployments,
    finetune,
    server,
    status,
)
from cluster.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
