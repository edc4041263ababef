"""Typed, frozen settings loaded from ``config/dcorch.toml``, ``--config`` and ``DCORCH_*``.

Precedence, lowest first: the defaults written below, the TOML file, then environment variables
named ``DCORCH_<SECTION>_<KEY>`` (``DCORCH_DATABASE_URL``, ``DCORCH_SIM_SUBCLOUDS``). Settings
are loaded once at the edge (the CLI or the harness) and passed down; nothing reads them from a
global. An unknown key or a bad value stops start-up with a :class:`SettingsError` that names the
key and where it came from, because a typo silently ignored is a production incident later.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
DAYS = 24 * HOURS

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "dcorch.toml"


class SettingsError(ValueError):
    """Raised when a configuration source holds an unknown key or a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    data_dir: str = "data"
    log_level: str = "INFO"
    shutdown_timeout: float = 10 * SECONDS


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = ""
    """Empty means ``sqlite+aiosqlite:///<data_dir>/dcorch.db``."""
    pool_size: int = 3
    max_overflow: int = 2
    sqlite_busy_timeout_ms: int = 5000
    retry_attempts: int = 8
    retry_backoff: float = 0.05 * SECONDS
    retry_backoff_max: float = 5 * SECONDS
    mailbox_size: int = 256
    purge_age_days: int = 3
    purge_interval: float = 1 * DAYS


@dataclass(frozen=True, slots=True)
class ProxySettings:
    host: str = "127.0.0.1"
    identity_port: int = 25000
    platform_port: int = 26385
    usm_port: int = 25497
    identity_sync_endpoint: str = "identity"
    forward_timeout: float = 60 * SECONDS
    token_cache_ttl: float = 30 * SECONDS
    max_body_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MasterSettings:
    keystone_url: str = ""
    """Empty means the simulated System Controller's keystone (``sim.enabled`` must be true)."""
    dbsync_url: str = ""
    """Empty: ``keystone_url``'s host, port 8219 (where a System Controller runs dcdbsync)."""
    sysinv_url: str = ""
    """Empty with ``sim.enabled`` false: no platform endpoint type (a Keystone-only master)."""
    usm_url: str = ""
    dcmanager_url: str = ""
    """Empty with ``sim.enabled`` false: sync status is kept in the database, not reported."""
    region_name: str = "RegionOne"
    username: str = "admin"
    password: str = "admin-password"
    project_name: str = "admin"
    ca_cert_dir: str = ""
    """The System Controller's installed CA files (``ssl_ca``, ``openstack_ca``): what the audit
    installs on a subcloud missing one, found by signature (docs/behaviour.md#platform-driver).
    Empty with ``sim.enabled``: a temporary directory the simulated master writes."""


@dataclass(frozen=True, slots=True)
class SubcloudSettings:
    """The template of a subcloud's service URLs: ``scheme://<management IP>:<port>``.

    Used for every service the v1 API was not given an explicit URL for when the subcloud was
    added; the defaults are a StarlingX subcloud's admin endpoints (docs/behaviour.md).
    """

    scheme: str = "https"
    keystone_port: int = 5001
    sysinv_port: int = 6386
    dcdbsync_port: int = 8220


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Verification of the certificates of the master's and the subclouds' https services."""

    verify: bool = True
    ca_file: str = ""
    """A PEM bundle of the CAs to trust; empty = the system's trust store."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8118


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    mailbox_size: int = 1000
    max_batch: int = 500
    enqueue_timeout: float = 5 * SECONDS
    retry_after: int = 1


@dataclass(frozen=True, slots=True)
class EngineSettings:
    sync_concurrency: int = 100
    sync_actor_mailbox_size: int = 8
    request_max_attempts: int = 3
    request_retry_backoff: float = 1 * SECONDS
    request_retry_backoff_max: float = 30 * SECONDS
    request_time_budget: float = 600 * SECONDS
    subcloud_http_timeout: float = 60 * SECONDS
    offline_retry_interval: float = 30 * SECONDS
    safety_sweep_interval: float = 60 * SECONDS
    audit_interval: float = 1200 * SECONDS
    audit_timeout: float = 600 * SECONDS
    initial_sync_retry: float = 60 * SECONDS
    status_report_dedup: float = 3600 * SECONDS
    disable_audit_endpoints: tuple[str, ...] = ()
    fernet_rotation_interval: float = 168 * HOURS
    """0 turns off the rotation of the master's fernet keys (docs/behaviour.md#fernet-rotation)."""
    fernet_rotation_command: tuple[str, ...] = ("keystone-fernet-keys-rotate-active",)
    """The argv run on the System Controller; empty turns the rotation off."""
    fernet_rotation_timeout: float = 300 * SECONDS


@dataclass(frozen=True, slots=True)
class ActorSettings:
    restart_max: int = 5
    restart_period: float = 60 * SECONDS
    restart_backoff: float = 0.1 * SECONDS
    restart_backoff_max: float = 30 * SECONDS


@dataclass(frozen=True, slots=True)
class SimSettings:
    enabled: bool = True
    subclouds: int = 10
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    name_prefix: str = "subcloud"
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class DbsyncSettings:
    """The DB-sync agent (``dcorch dbsync``) that runs beside a keystone (docs/dbsync.md)."""

    host: str = "127.0.0.1"
    port: int = 8219
    """8219 beside the System Controller's keystone (upstream's master dcdbsync); 8220 on a
    subcloud."""
    keystone_database_url: str = ""
    """The keystone database, as keystone.conf's ``[database] connection`` (sqlite, postgresql,
    mysql); the agent maps it to the matching asyncio driver."""
    keystone_url: str = ""
    """The keystone beside the agent (unversioned or ``/v3``); it validates callers' tokens."""
    token_cache_ttl: float = 30 * SECONDS
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RpcSettings:
    """dcmanager's oslo.messaging RPC over RabbitMQ (docs/rpc.md)."""

    transport_url: str = "rabbit://guest:guest@127.0.0.1:5672/"
    """oslo's transport URL; the path is the virtual host. Its password is never logged."""
    control_exchange: str = "dcorch-engine"
    """The exchange of dcorch's own topics (upstream dcorch's ``set_transport_defaults``)."""
    dcmanager_exchange: str = "dcmanager"
    """The exchange of dcmanager's topics, where sync status casts go."""
    worker_topic: str = "dcorch-engine-worker"
    server: str = ""
    """The server name of the ``<topic>.<server>`` queue; empty = this host's name."""
    dcmanager_state_topic: str = "dcmanager-state"
    front_doors: str = "http"
    """Which lifecycle front doors run: ``http`` (the v1 API), ``rpc`` or ``both``."""
    heartbeat: float = 30 * SECONDS
    prefetch: int = 16
    reconnect_backoff: float = 1 * SECONDS
    reconnect_backoff_max: float = 30 * SECONDS
    connect_timeout: float = 10 * SECONDS
    confirm_timeout: float = 10 * SECONDS
    recent_ids: int = 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of one dcorch process."""

    service: ServiceSettings = field(default_factory=ServiceSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    master: MasterSettings = field(default_factory=MasterSettings)
    subcloud: SubcloudSettings = field(default_factory=SubcloudSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    actors: ActorSettings = field(default_factory=ActorSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    dbsync: DbsyncSettings = field(default_factory=DbsyncSettings)
    rpc: RpcSettings = field(default_factory=RpcSettings)

    @property
    def database_url(self) -> str:
        """The effective database URL (the SQLite file under ``data_dir`` when unset)."""
        if self.database.url:
            return self.database.url
        path = Path(self.service.data_dir).resolve() / "dcorch.db"
        return f"sqlite+aiosqlite:///{path}"

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """Return a copy with some keys of some sections replaced, validated like a file."""
        return _merge(self, {k: dict(v) for k, v in sections.items()}, "replace()")


def load_settings(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings from a TOML file (default ``config/dcorch.toml`` if it exists) and env.

    Raises:
        SettingsError: unknown section or key, a value of the wrong type, or unreadable TOML.
    """
    settings = Settings()
    source_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path is not None or source_path.exists():
        try:
            data = tomllib.loads(source_path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {source_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{source_path}: invalid TOML: {exc}") from None
        settings = _merge(settings, data, str(source_path))
    env = os.environ if environ is None else environ
    overrides = _from_environ(env)
    if overrides:
        settings = _merge(settings, overrides, "environment")
    return settings


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = {f.name for f in dataclasses.fields(Settings)}
    result: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith("DCORCH_"):
            continue
        rest = name[len("DCORCH_") :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            raise SettingsError(f"environment: unknown setting {name}")
        result.setdefault(section, {})[key] = _EnvText(raw)
    return result


class _EnvText(str):
    """A value that came from the environment and still has to be parsed to its field's type."""


def _merge(settings: Settings, data: Mapping[str, Any], source: str) -> Settings:
    section_types = {f.name: f for f in dataclasses.fields(Settings)}
    changes: dict[str, Any] = {}
    for section_name, values in data.items():
        if section_name not in section_types:
            raise SettingsError(f"{source}: unknown section [{section_name}]")
        if not isinstance(values, Mapping):
            raise SettingsError(f"{source}: [{section_name}] must be a table")
        current = getattr(settings, section_name)
        changes[section_name] = _merge_section(current, section_name, values, source)
    return dataclasses.replace(settings, **changes)


def _merge_section(current: Any, section: str, values: Mapping[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(type(current))
    fields = {f.name for f in dataclasses.fields(current)}
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise SettingsError(f"{source}: unknown key {section}.{key}")
        updates[key] = _coerce(hints[key], value, f"{section}.{key}", source)
    return dataclasses.replace(current, **updates)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> SettingsError:
        return SettingsError(f"{source}: {key} must be {expected}, got {value!r}")

    from_env = isinstance(value, _EnvText)
    if hint is bool:
        if from_env:
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise bad("a boolean")
        if not isinstance(value, bool):
            raise bad("a boolean")
        return value
    if hint is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                raise bad("an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if value < 0:
            raise bad("a non-negative integer")
        return value
    if hint is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        if value < 0:
            raise bad("a non-negative number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return str(value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        items: Any = value
        if from_env:
            items = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("a list of strings")
        return tuple(items)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no optional fields yet
        raise bad("a supported type")
    raise bad("a supported type")  # pragma: no cover


def settings_as_dict(settings: Settings) -> dict[str, dict[str, Any]]:
    """Plain-data view (for ``dcorch config`` and the test that keeps the TOML in step)."""
    return {
        f.name: dataclasses.asdict(getattr(settings, f.name)) for f in dataclasses.fields(settings)
    }
