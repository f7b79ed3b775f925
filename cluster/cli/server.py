"""Server commands: ``up`` starts or joins Ray and serves, ``down`` stops.

They run the server itself, so they import it (Ray, Serve, the control plane) when they
start, not when the CLI loads: the client commands work with ``pip install modelyard``, and
these two say to install ``modelyard[server]`` when it is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cluster.cli.common import app, console, err

if TYPE_CHECKING:
    from cluster.settings import Settings

SERVER_EXTRAS = "pip install 'modelyard[server]'"

RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster to join (env MODELYARD_RAY_ADDRESS); empty: local.")
]
Host = Annotated[str | None, typer.Option(help="HTTP bind address (env MODELYARD_HOST).")]
Port = Annotated[int | None, typer.Option(help="HTTP port (env MODELYARD_PORT).")]
StorageRoot = Annotated[
    Path | None, typer.Option(help="Artifacts, registry and key (env MODELYARD_STORAGE_ROOT).")
]
RegistryDb = Annotated[Path | None, typer.Option(help="SQLite file (env MODELYARD_REGISTRY_DB).")]
ApiKey = Annotated[str | None, typer.Option(help="Admin key (env MODELYARD_API_KEY).")]
AsyncResultTtl = Annotated[
    float | None,
    typer.Option(
        help="Seconds async-prediction results are kept (env MODELYARD_ASYNC_RESULT_TTL_S)."
    ),
]
AsyncPendingTtl = Annotated[
    float | None,
    typer.Option(help="Seconds an async task may stay PENDING (MODELYARD_ASYNC_PENDING_TTL_S)."),
]
AsyncMaxAttempts = Annotated[
    int | None, typer.Option(help="Tries of an async prediction (MODELYARD_ASYNC_MAX_ATTEMPTS).")
]
AsyncMaxPending = Annotated[
    int | None, typer.Option(help="Pending async predictions (MODELYARD_ASYNC_MAX_PENDING).")
]
PredictUrlHttp = Annotated[
    bool | None,
    typer.Option(
        "--predict-url-http/--no-predict-url-http",
        help="Let a predict url be http(s) (env MODELYARD_PREDICT_URL_HTTP; default off).",
    ),
]
PredictUrlMaxBytes = Annotated[
    int | None, typer.Option(help="Largest predict url document (MODELYARD_PREDICT_URL_MAX_BYTES).")
]
PredictUrlTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds to fetch a predict url (MODELYARD_PREDICT_URL_TIMEOUT_S)."),
]
MaxBodyBytes = Annotated[
    int | None,
    typer.Option(help="Largest request body; more answers 413 (env MODELYARD_MAX_BODY_BYTES)."),
]
DeployTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds a deploy may take to be ready (env MODELYARD_DEPLOY_TIMEOUT_S)."),
]
RegistryTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds the ingress waits for the registry (MODELYARD_REGISTRY_TIMEOUT_S)."),
]
OperatorTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds the ingress waits for the operator (MODELYARD_OPERATOR_TIMEOUT_S)."),
]
DirectIngress = Annotated[
    bool | None,
    typer.Option(
        "--direct-ingress/--no-direct-ingress",
        help="Also serve from the ingress replica's own port, skipping the proxy hop "
        "(env MODELYARD_DIRECT_INGRESS).",
    ),
]


def _require_server(command: str) -> None:
    """Import what ``command`` runs on; without the server's dependencies, say how to get
    them and exit 1."""
    try:
        import ray  # noqa: F401

        import cluster.bootstrap  # noqa: F401
    except ImportError as exc:
        if (exc.name or "").startswith("cluster"):
            raise  # modelyard's own module: a bug, not a missing extra
        err.print(
            f"[red]error:[/] 'modelyard {command}' runs the server, and its dependencies are "
            f"not installed ({escape(str(exc))}). Install them with: {escape(SERVER_EXTRAS)}",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(1) from None


def _settings(**options: object) -> Settings:
    """Environment first, then every option given on the command line on top."""
    from cluster.settings import Settings

    return Settings(**{k: v for k, v in options.items() if v is not None})


def _connect(settings: Settings, start_local: bool, detach: bool) -> bool:
    """Join the configured cluster, else a running local one (detached mode), else start
    one. Returns True when this call started Ray."""
    import ray

    from cluster.settings import DIRECT_INGRESS_ENV, NAMESPACE, RAY_START_ENV

    # Read by the Serve processes of a Ray this call starts (they inherit it).
    for name, value in RAY_START_ENV.items():
        os.environ.setdefault(name, value)
    if settings.direct_ingress:
        os.environ.update(DIRECT_INGRESS_ENV)
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
        return False
    if start_local and not detach:
        # Foreground: a private local Ray that lives and dies with this process (a new one
        # even when another Ray runs on this machine).
        ray.init(address="local", namespace=NAMESPACE, log_to_driver=False)
        return True
    try:
        ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
        return False
    except (ConnectionError, RuntimeError):
        if not start_local:
            raise
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    # `ray start` turns token authentication on only when a token exists; the local Ray of
    # the foreground mode always has one. Making it first gives both modes the same auth, so
    # the documented `RAY_AUTH_MODE=token ray job submit` works against either. The output
    # is the secret token: it is not printed.
    subprocess.run([*ray_cli, "get-auth-token", "--generate"], check=True, capture_output=True)
    subprocess.run([*ray_cli, "start", "--head", "--disable-usage-stats"], check=True)
    ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
    return True


TaskRetentionDays = Annotated[
    float | None,
    typer.Option(help="Days finished tasks are kept (env MODELYARD_TASK_RETENTION_DAYS)."),
]
MaxFinishedTasks = Annotated[
    int | None, typer.Option(help="Finished tasks kept at most (MODELYARD_MAX_FINISHED_TASKS).")
]
EventRetentionDays = Annotated[
    float | None,
    typer.Option(help="Days deployment events are kept (MODELYARD_EVENT_RETENTION_DAYS)."),
]
EventsPerDeployment = Annotated[
    int | None,
    typer.Option(help="Events kept per deployment (env MODELYARD_EVENTS_PER_DEPLOYMENT)."),
]


@app.command(rich_help_panel="Server")
def up(
    ray_address: RayAddress = None,
    host: Host = None,
    port: Port = None,
    storage_root: StorageRoot = None,
    registry_db: RegistryDb = None,
    api_key: ApiKey = None,
    direct_ingress: DirectIngress = None,
    max_body_bytes: MaxBodyBytes = None,
    async_result_ttl_s: AsyncResultTtl = None,
    deploy_timeout_s: DeployTimeout = None,
    registry_timeout_s: RegistryTimeout = None,
    operator_timeout_s: OperatorTimeout = None,
    async_pending_ttl_s: AsyncPendingTtl = None,
    async_max_attempts: AsyncMaxAttempts = None,
    async_max_pending: AsyncMaxPending = None,
    predict_url_http: PredictUrlHttp = None,
    predict_url_max_bytes: PredictUrlMaxBytes = None,
    predict_url_timeout_s: PredictUrlTimeout = None,
    task_retention_days: TaskRetentionDays = None,
    max_finished_tasks: MaxFinishedTasks = None,
    event_retention_days: EventRetentionDays = None,
    events_per_deployment: EventsPerDeployment = None,
    detach: Annotated[bool, typer.Option(help="Return once serving; leave Ray running.")] = False,
    wait_s: Annotated[float, typer.Option(help="How long to wait for the bundled model.")] = 600,
) -> None:
    """Start or join Ray, deploy the control app, restore deployments, print URL and key."""
    _require_server("up")
    from cluster.bootstrap import start_control_plane, wait_for_task
    from cluster.settings import key_digest, load_or_create_key

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = _settings(
        ray_address=ray_address,
        host=host,
        port=port,
        storage_root=storage_root,
        registry_db=registry_db,
        api_key=api_key,
        direct_ingress=direct_ingress,
        max_body_bytes=max_body_bytes,
        async_result_ttl_s=async_result_ttl_s,
        deploy_timeout_s=deploy_timeout_s,
        registry_timeout_s=registry_timeout_s,
        operator_timeout_s=operator_timeout_s,
        async_pending_ttl_s=async_pending_ttl_s,
        async_max_attempts=async_max_attempts,
        async_max_pending=async_max_pending,
        predict_url_http=predict_url_http,
        predict_url_max_bytes=predict_url_max_bytes,
        predict_url_timeout_s=predict_url_timeout_s,
        task_retention_days=task_retention_days,
        max_finished_tasks=max_finished_tasks,
        event_retention_days=event_retention_days,
        events_per_deployment=events_per_deployment,
    )
    key, created = load_or_create_key(settings)
    started = _connect(settings, start_local=True, detach=detach)
    info = start_control_plane(settings, key_digest(key))
    if info.default_task_id:
        console.print("deploying the bundled all-MiniLM-L6-v2 as [bold]minilm[/] ...")
        task = wait_for_task(info.registry, info.default_task_id, wait_s)
        if task.status != "done":
            console.print(f"[red]minilm is {task.status}: {task.error or task.detail}[/]")
            raise typer.Exit(1)
    _print_banner(info.best_url, key, settings, created)
    if info.direct_url:
        console.print(f"direct ingress: the Serve proxy at {info.url} answers too")
    elif settings.direct_ingress:
        console.print(
            "[yellow]direct ingress is not on in this Ray cluster (start its Ray with "
            "RAY_SERVE_ENABLE_DIRECT_INGRESS=1); serving through the Serve proxy only[/]"
        )
    if detach:
        if started:
            settings.ray_marker_path.parent.mkdir(parents=True, exist_ok=True)
            settings.ray_marker_path.write_text(f"{os.getpid()}\n")
        return
    console.print("serving in the foreground; Ctrl-C stops" + (" Ray too." if started else "."))
    _wait_for_signal()
    if started:
        import ray

        ray.shutdown()


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM; Ray's own handlers are replaced for the wait."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def _print_banner(url: str, key: str, settings: Settings, created: bool) -> None:
    where = "new key, saved to" if created else "key from"
    console.print(f"\n[bold green]modelyard is up[/] at {url}")
    console.print(f"admin key ({where} {settings.key_path if not settings.api_key else 'env'}):")
    console.print(f"  {key}\n")
    console.print("try:")
    console.print(
        f"  curl -s {url}/v1/deployments/minilm/predict \\\n"
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        """    -d '{"args": {"texts": ["hello world"]}}'\n""",
        soft_wrap=True,
        highlight=False,
    )


@app.command(rich_help_panel="Server")
def down(
    ray_address: RayAddress = None,
    stop_ray: Annotated[
        bool,
        typer.Option(help="Also stop the local Ray, when 'modelyard up --detach' started it."),
    ] = True,
) -> None:
    """Stop serving: delete modelyard's Serve apps and control actors, leave other Serve apps
    on the cluster alone; the registry database is kept. A local Ray is stopped only when
    ``up --detach`` started it: one that was running already is somebody's, and stays."""
    _require_server("down")
    from cluster.bootstrap import stop_control_plane

    settings = _settings(ray_address=ray_address)
    try:
        _connect(settings, start_local=False, detach=False)
    except (ConnectionError, RuntimeError):
        console.print("no running Ray cluster found; nothing to stop")
        return
    report = stop_control_plane(settings.db_path)
    console.print(
        f"modelyard stopped: deleted {', '.join(report.deleted) or 'no Serve apps'} "
        f"(modelyard's apps from {report.source})"
    )
    if report.left:
        console.print(f"left running (not modelyard's): {', '.join(report.left)}")
    marker = settings.ray_marker_path
    if settings.ray_address or not marker.exists():
        return
    if not stop_ray:
        console.print("left the local Ray running (modelyard up started it)")
        return
    import ray

    ray.shutdown()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], check=False)
    marker.unlink(missing_ok=True)
