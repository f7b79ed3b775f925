"""Settings from MODELYARD_* variables and the admin key file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster import defaults
from cluster.client import environment
from cluster.settings import Settings, key_digest, load_or_create_key

VARS = (
    "RAY_ADDRESS", "HOST", "PORT", "STORAGE_ROOT", "REGISTRY_DB", "API_KEY", "DIRECT_INGRESS",
    "URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(f"MODELYARD_{var}", raising=False)


def test_defaults():
    s = Settings()
    assert (s.ray_address, s.host, s.port, s.api_key) == ("", "127.0.0.1", 8000, None)
    assert s.root == (Path.home() / ".modelyard").resolve()
    assert s.db_path == s.root / "registry.db"
    assert s.direct_ingress is False


def test_env_vars_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELYARD_PORT", "9123")
    monkeypatch.setenv("MODELYARD_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELYARD_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MODELYARD_API_KEY", "from-env")
    monkeypatch.setenv("MODELYARD_DIRECT_INGRESS", "true")
    s = Settings()
    assert s.direct_ingress is True
    assert s.port == 9123
    assert s.host == "0.0.0.0"
    assert s.ray_address == "ray://head:10001"
    assert s.root == (tmp_path / "root").resolve()
    assert s.db_path == (tmp_path / "root" / "registry.db").resolve()
    assert s.key_path == (tmp_path / "root" / "admin.key").resolve()
    assert s.api_key == "from-env"


def test_registry_db_env_overrides_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MODELYARD_REGISTRY_DB", str(tmp_path / "elsewhere" / "r.db"))
    assert Settings().db_path == (tmp_path / "elsewhere" / "r.db").resolve()


def test_bad_port_is_rejected(monkeypatch):
    monkeypatch.setenv("MODELYARD_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_key_file_created_with_mode_0600_and_reused(tmp_path):
    s = Settings(storage_root=tmp_path / "root")
    key, created = load_or_create_key(s)
    assert created is True
    assert len(key) > 20
    assert s.key_path.exists()
    assert stat.S_IMODE(s.key_path.stat().st_mode) == 0o600
    assert s.key_path.read_text().strip() == key
    again, created = load_or_create_key(Settings(storage_root=tmp_path / "root"))
    assert (again, created) == (key, False)
    other, _ = load_or_create_key(Settings(storage_root=tmp_path / "other"))
    assert other != key


def test_explicit_api_key_wins(tmp_path):
    root = tmp_path / "root"
    load_or_create_key(Settings(storage_root=root))
    key, created = load_or_create_key(Settings(storage_root=root, api_key="explicit"))
    assert (key, created) == ("explicit", False)
    fresh = Settings(storage_root=tmp_path / "fresh", api_key="explicit")
    assert load_or_create_key(fresh) == ("explicit", False)
    assert not fresh.key_path.exists()


def test_the_client_reads_the_variables_and_defaults_the_server_reads():
    for field in ("host", "port", "storage_root", "api_key"):
        assert getattr(defaults, f"{field.upper()}_ENV") == f"MODELYARD_{field.upper()}"
        assert field in Settings.model_fields
    assert defaults.URL_ENV.removeprefix("MODELYARD_").lower() not in Settings.model_fields


@pytest.mark.parametrize(
    "env",
    [{}, {"HOST": "0.0.0.0", "PORT": "9123"}, {"HOST": "::"}, {"HOST": "head.internal"}],
)
def test_the_clients_defaults_find_the_server_settings_describe(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(f"MODELYARD_{name}", value)
    settings = Settings()
    assert environment.default_url() == f"http://{settings.local_host}:{settings.port}"
    assert environment.default_api_key() is None
    key, _ = load_or_create_key(settings)
    assert environment.default_api_key() == key
    monkeypatch.setenv("MODELYARD_STORAGE_ROOT", str(tmp_path / "root"))
    key, _ = load_or_create_key(Settings())
    assert defaults.key_path(tmp_path / "root") == Settings().key_path
    assert environment.default_api_key() == key


def test_key_digest():
    assert key_digest("k") == key_digest("k")
    assert key_digest("k") != key_digest("k2")
    # sha256 hex of the key: the digest, never the key, is what the ingress keeps.
    assert key_digest("k") == "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"


def test_direct_url_is_the_replicas_node_when_binding_every_interface():
    from cluster.bootstrap import direct_url

    wildcard, local = Settings(host="0.0.0.0"), Settings(host="127.0.0.1")
    assert direct_url(wildcard, "10.0.0.7", 30000) == "http://10.0.0.7:30000"
    assert direct_url(local, "10.0.0.7", 30000) == "http://127.0.0.1:30000"


def test_a_replica_gets_every_setting_but_the_key_with_paths_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    given = Settings(
        storage_root=Path("~/yard"), api_key="secret", registry_timeout_s=7, predict_url_http=True
    )
    values = given.for_replica()
    assert "api_key" not in values and "secret" not in json.dumps(values)
    assert values["storage_root"] == str(tmp_path / "home" / "yard")
    assert values["registry_db"] == str(tmp_path / "home" / "yard" / "registry.db")
    monkeypatch.setenv("MODELYARD_API_KEY", "the-replicas-own")
    monkeypatch.setenv("MODELYARD_REGISTRY_TIMEOUT_S", "99")
    replica = Settings.from_replica(values)
    assert replica.api_key is None
    assert (replica.registry_timeout_s, replica.predict_url_http) == (7, True)
    assert replica.db_path == given.db_path and replica.root == given.root
    expected = given.model_dump(exclude={"api_key", "storage_root", "registry_db"})
    assert replica.model_dump(exclude={"api_key", "storage_root", "registry_db"}) == expected


@pytest.mark.parametrize("field", ["registry_timeout_s", "operator_timeout_s"])
@pytest.mark.parametrize("bad", [0, -1, "nan"])
def test_control_actor_timeouts_are_positive(field, bad):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: bad})
