"""The ``modelyard`` command line.

``up``/``down``/``status`` run the server (``server``); every other command talks to a running
one over HTTP through the typed client (``deployments``, ``finetune``, ``catalog``), with
``--url`` and ``--api-key`` (``common``); ``views`` renders the answers.
"""

from cluster.cli import (  # noqa: F401  (they register commands)
    catalog,
    deployments,
    finetune,
    server,
)
from cluster.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
