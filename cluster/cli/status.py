"""``status``: whether the server answers, and what it serves.

A client command like the others: the server is found by ``--url`` / ``MODELYARD_URL``, else
``MODELYARD_HOST`` / ``MODELYARD_PORT``, and the key by ``--api-key`` / ``MODELYARD_API_KEY``,
else the key file.
"""

from __future__ import annotations

from cluster.cli import views
from cluster.cli.common import Key, Url, app, connect, console


@app.command(rich_help_panel="Server")
def status(url: Url = None, api_key: Key = None) -> None:
    """Show whether the server is up, and every deployment."""
    with connect(url, api_key) as client:
        deployments = client.list_deployments()
    console.print(f"modelyard at {client.url}: up", highlight=False)
    for d in deployments:
        info = d.info
        console.print(
            f"  {info.name:<24} {info.model_id} v{info.model_version:<4} {info.status:<10} "
            f"{views.replicas_of(info)} replicas",
            highlight=False,
        )
