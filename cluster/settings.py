"""Runtime configuration: one ``Settings`` object, read from ``MODELYARD_*`` variables."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cluster import defaults
from cluster.defaults import KEY_FILE

NAMESPACE = "modelyard"
REGISTRY_ACTOR = "modelyard-registry"
OPERATOR_ACTOR = "modelyard-operator"
ASYNC_WORKER_ACTOR = "modelyard-async-worker"
CONTROL_APP = "modelyard"
RAY_MARKER_FILE = "ray-started-by-up"
# What a Ray started by modelyard needs in its environment for direct ingress. Nothing sits
# in front of the replicas' own ports, so a stopping replica need not wait for a load
# balancer to forget it (Serve's default for that is 30 s).
# What a Ray started by modelyard gets in its environment in every mode (a user's own value
# wins). Serve's controller finds a dead HTTP proxy by its health check: three misses in a
# row at a 10 s period by default, so a killed proxy left port 8000 closed for 25-33 s in the
# fault-injection test; at a 1 s period the controller replaces it within a few seconds.
RAY_START_ENV = {
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "1",
}
DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


class Settings(BaseSettings):
    """Every option is also a ``modelyard up`` flag of the same name."""

    model_config = SettingsConfigDict(env_prefix=defaults.ENV_PREFIX, extra="ignore")

    ray_address: str = Field(
        default="", description="Ray cluster to join; empty starts a local Ray."
    )
    host: str = Field(default=defaults.HOST, description="HTTP bind address of the Serve proxy.")
    port: int = Field(
        default=defaults.PORT, ge=1, le=65535, description="HTTP port of the Serve proxy."
    )
    storage_root: Path = Field(
        default=Path(defaults.STORAGE_ROOT),
        description="Artifacts, checkpoints, the registry database and the key file.",
    )
    registry_db: Path | None = Field(
        default=None, description="SQLite file of the registry; default <storage_root>/registry.db."
    )
    async_result_ttl_s: float = Field(
        default=86400, gt=0, description="How long async-prediction results are kept."
    )
    async_pending_ttl_s: float = Field(
        default=3600, gt=0, description="An async prediction still PENDING after this fails."
    )
    async_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Tries of an async prediction before it fails."
    )
    async_max_pending: int = Field(
        default=100_000,
        ge=2,
        description="Pending async predictions in all, one deployment at most half; more get 429.",
    )
    task_retention_days: float = Field(
        default=30,
        gt=0,
        le=36500,
        description="Finished tasks older than this are purged (the newest of each kind per "
        "model and per deployment stays).",
    )
    max_finished_tasks: int = Field(
        default=10_000, ge=1, description="Finished tasks kept at most; the oldest go first."
    )
    event_retention_days: float = Field(
        default=30, gt=0, le=36500, description="Deployment events older than this are purged."
    )
    events_per_deployment: int = Field(
        default=1000, ge=1, description="Newest deployment events kept per deployment."
    )
    api_key: str | None = Field(
        default=None, description="Admin key; generated and saved under storage_root when unset."
    )
    max_body_bytes: int = Field(
        default=8 << 20,
        ge=64 << 10,
        le=1 << 30,
        description="Largest request body; a larger one answers 413 before it is read. The "
        "default holds 4096 texts of ~1,900 characters, or ~10,000 inline fine-tuning pairs.",
    )
    predict_url_http: bool = Field(
        default=False,
        description="Let a predict 'url' be http(s) (it is fetched by the ingress); file:// "
        "URIs under storage_root are always accepted.",
    )
    predict_url_max_bytes: int = Field(
        default=1 << 20, ge=1, le=64 << 20, description="Largest document a predict 'url' reads."
    )
    predict_url_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="How long fetching a predict 'url' may take."
    )
    deploy_timeout_s: float = Field(
        default=900,
        gt=0,
        le=86_400,
        description="How long a deploy may take to have every replica placed and healthy "
        "(model download and load included); past it the deploy task ends failed with what "
        "could not be placed, and its Serve app is deleted.",
    )
    registry_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=3600,
        description="How long the ingress waits for the registry actor (in-memory reads and "
        "single-row writes) before answering 503 with Retry-After.",
    )
    operator_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How long the ingress waits for the operator actor (cancelling a job, "
        "reading its logs, through Ray Jobs) before answering 503 with Retry-After.",
    )
    direct_ingress: bool = Field(
        default=False,
        description=(
            "Also serve HTTP straight from the ingress replica on a port of its own (Ray "
            "Serve's direct ingress), skipping the proxy hop; the proxy keeps serving on "
            "port. Applies when modelyard starts Ray; a joined cluster must have been "
            "started with RAY_SERVE_ENABLE_DIRECT_INGRESS=1."
        ),
    )

    @property
    def binds_every_interface(self) -> bool:
        return self.host in defaults.WILDCARD_HOSTS

    @property
    def local_host(self) -> str:
        """The host a client on this node connects to: localhost for a wildcard bind."""
        return defaults.local_host(self.host)

    @property
    def root(self) -> Path:
        return self.storage_root.expanduser().resolve()

    @property
    def db_path(self) -> Path:
        path = self.registry_db if self.registry_db is not None else self.root / "registry.db"
        return path.expanduser().resolve()

    @property
    def key_path(self) -> Path:
        return self.root / KEY_FILE

    @property
    def ray_marker_path(self) -> Path:
        """Written by ``up --detach`` when it started the local Ray, so ``down`` stops only a
        Ray that modelyard started."""
        return self.root / RAY_MARKER_FILE

    def for_replica(self) -> dict[str, Any]:
        """What a replica is handed (``from_replica`` rebuilds it there): every setting but
        the admin key, as Serve configs are readable (the ingress checks the key's digest).
        Paths are resolved here, where ``~`` means the user who ran ``modelyard up``."""
        resolved = self.model_copy(update={"storage_root": self.root, "registry_db": self.db_path})
        return resolved.model_dump(mode="json", exclude={"api_key"})

    @classmethod
    def from_replica(cls, values: dict[str, Any]) -> Settings:
        # Every field is given, so the replica's own environment changes nothing; api_key is
        # None even if that environment holds one.
        return cls(**{**values, "api_key": None})


def load_or_create_key(settings: Settings) -> tuple[str, bool]:
    """The admin key: from settings, else the key file, else a new one saved with mode 0600.

    Returns the key and whether it was created now.
    """
    if settings.api_key:
        return settings.api_key, False
    path = settings.key_path
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "my-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True


def key_digest(key: str) -> str:
    """What the ingress keeps instead of the key itself: Serve configs are readable."""
    return hashlib.sha256(key.encode()).hexdigest()
