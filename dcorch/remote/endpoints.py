"""Where the engine finds a subcloud's services, and the master's: all of it from configuration.

The engine asks an :class:`EndpointResolver` for subcloud URLs, per call from the subcloud row
(a new management IP or new given URLs apply at once). The service wraps its resolver in
:class:`GivenFirstResolver`: a URL given for a service when the subcloud was added through the
v1 API wins; every other service comes from the fallback, :class:`ManagementIpResolver` built
from ``[subcloud]`` in production (``https://IP:5001/v3`` and so on, ``docs/behaviour.md``) or
``sim.endpoints.SimResolver`` under the simulator.

The master's URLs are ``[master]``: ``keystone_url`` is required (with the simulator off);
``dbsync_url`` empty is derived from it (its host, port 8219), shown by ``dcorch config`` and
logged at start-up, so the guess is never silent; ``sysinv_url`` or ``dcmanager_url`` empty
switch the platform endpoint type, or the status reports, off (:meth:`MasterEndpoints.notes`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

from dcorch import constants as c
from dcorch.db.rows import SubcloudRow
from dcorch.settings import MasterSettings, Settings, SubcloudSettings
from dcorch.urls import http_url_problem

DERIVED_DBSYNC_PORT: Final = 8219
"""A System Controller's dcdbsync listens beside its keystone on this port."""

VERSIONS: Final = {"keystone": "v3", "sysinv": "v1", "dcdbsync": "v1.0"}
"""The API version each subcloud service root ends with."""


@dataclass(frozen=True, slots=True)
class SubcloudEndpoints:
    """Versioned service roots of one subcloud (no trailing slash)."""

    keystone: str
    """``.../v3``."""
    sysinv: str
    """``.../v1``."""
    dcdbsync: str
    """``.../v1.0``."""


@dataclass(frozen=True, slots=True)
class MasterEndpoints:
    """Versioned service roots of the System Controller's own services."""

    keystone: str
    sysinv: str
    """Empty: the master has no sysinv (a Keystone-only System Controller), no platform sync."""
    dcdbsync: str
    dcmanager: str
    """Root of the dcmanager API that receives endpoint sync status reports; empty: none."""

    usm: str = ""
    """Unversioned root of the master's usm (software) API; empty: no usm proxy."""

    dcdbsync_derived: bool = False
    """``dcdbsync`` was derived from the keystone URL (``master.dbsync_url`` empty)."""

    @property
    def keystone_root(self) -> str:
        """Unversioned keystone root (what the identity proxy forwards to)."""
        return _unversioned(self.keystone, "v3")

    @property
    def sysinv_root(self) -> str:
        """Unversioned sysinv root (what the platform proxy forwards to); empty: none."""
        return _unversioned(self.sysinv, "v1")

    @property
    def sync_endpoint_types(self) -> tuple[str, ...]:
        """The endpoint types this master can sync: platform needs its sysinv."""
        return tuple(
            e for e in c.SYNC_ENDPOINT_TYPES if e != c.ENDPOINT_TYPE_PLATFORM or self.sysinv
        )

    def notes(self) -> list[str]:
        """What this configuration leaves out or derives, one line each (logged at start-up)."""
        found = []
        if self.dcdbsync_derived:
            found.append(
                f"master.dbsync_url is empty: the master's DB-sync is taken to be {self.dcdbsync} "
                f"(master.keystone_url's host, port {DERIVED_DBSYNC_PORT}); set it if it is not"
            )
        if not self.sysinv:
            found.append(
                "master.sysinv_url is empty: platform endpoint type off (no platform proxy, "
                "subclouds sync identity only, no fernet key distribution at initial sync)"
            )
        if not self.dcmanager:
            found.append(
                "master.dcmanager_url is empty: sync status is kept in the database and shown by "
                "the v1 API, not reported to a dcmanager"
            )
        if not self.usm:
            found.append("master.usm_url is empty: no usm proxy")
        return found

    @classmethod
    def from_settings(cls, master: MasterSettings) -> MasterEndpoints:
        """Real master services from ``[master]`` (URLs with or without their version).

        Raises:
            ValueError: ``keystone_url`` is empty, or a URL is not an absolute http(s) URL
                (the message names the key).
        """
        if not master.keystone_url:
            raise ValueError("master.keystone_url must be set when sim.enabled is false")
        for key in MASTER_URL_KEYS:
            value = getattr(master, key)
            if value and (problem := http_url_problem(value)):
                raise ValueError(f"master.{key} {problem}")
        keystone = _unversioned(master.keystone_url, "v3")
        dbsync = master.dbsync_url or _with_port(keystone, DERIVED_DBSYNC_PORT)
        return cls(
            keystone=_versioned(keystone, "v3"),
            sysinv=_versioned(master.sysinv_url, "v1") if master.sysinv_url else "",
            dcdbsync=_versioned(dbsync, "v1.0"),
            dcmanager=_versioned(master.dcmanager_url, "v1.0") if master.dcmanager_url else "",
            usm=master.usm_url.rstrip("/"),
            dcdbsync_derived=not master.dbsync_url,
        )


MASTER_URL_KEYS: Final = ("keystone_url", "dbsync_url", "sysinv_url", "usm_url", "dcmanager_url")
"""The ``[master]`` keys that name a real System Controller's service."""


class EndpointResolver(Protocol):
    """Maps a subcloud row to its service endpoints (a pure, cheap, synchronous call)."""

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints: ...


@dataclass(frozen=True, slots=True)
class ManagementIpResolver:
    """Real subclouds: ``scheme://<management IP>:<port>/<version>`` per service."""

    scheme: str = "https"
    keystone_port: int = 5001
    sysinv_port: int = 6386
    dcdbsync_port: int = 8220

    @classmethod
    def from_settings(cls, subcloud: SubcloudSettings) -> ManagementIpResolver:
        """The ``[subcloud]`` template.

        Raises:
            ValueError: a scheme other than http/https or a port out of range (naming the key).
        """
        if subcloud.scheme not in ("http", "https"):
            raise ValueError(f"subcloud.scheme must be http or https, got {subcloud.scheme!r}")
        ports = {
            "keystone_port": subcloud.keystone_port,
            "sysinv_port": subcloud.sysinv_port,
            "dcdbsync_port": subcloud.dcdbsync_port,
        }
        for key, port in ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"subcloud.{key} must be a port (1-65535), got {port}")
        return cls(subcloud.scheme, **ports)

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints:
        return self._for_host(_host(subcloud.management_ip))

    def template(self) -> SubcloudEndpoints:
        """The template itself, the host written ``<management_ip>`` (``dcorch config``)."""
        return self._for_host("<management_ip>")

    def _for_host(self, host: str) -> SubcloudEndpoints:
        base = f"{self.scheme}://{host}"
        return SubcloudEndpoints(
            keystone=f"{base}:{self.keystone_port}/v3",
            sysinv=f"{base}:{self.sysinv_port}/v1",
            dcdbsync=f"{base}:{self.dcdbsync_port}/v1.0",
        )


@dataclass(frozen=True, slots=True)
class GivenFirstResolver:
    """The URLs given for a subcloud through the v1 API, service by service, else ``fallback``.

    A given URL may carry its version (``.../v3``) or not; the version is added if missing.
    """

    fallback: EndpointResolver

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints:
        base = self.fallback.endpoints_for(subcloud)
        given = subcloud.endpoints.given()
        if not given:
            return base
        return dataclasses.replace(
            base, **{name: _versioned(url, VERSIONS[name]) for name, url in given.items()}
        )


def check_master_settings(settings: Settings) -> None:
    """Refuse settings that contradict ``sim.enabled``: the simulator would silently win.

    With the simulator on, a real ``[master]`` URL or a changed ``[subcloud]`` template would
    be ignored (the simulated clouds' URLs are used), so start-up stops instead.

    Raises:
        ValueError: naming both keys, so the operator knows which one to change.
    """
    if not settings.sim.enabled:
        return
    for key in MASTER_URL_KEYS:
        if value := getattr(settings.master, key):
            raise ValueError(
                f"master.{key} is set ({value}) but sim.enabled is true, so the simulated "
                f"System Controller would be used instead: set sim.enabled = false to use the "
                f"real one, or clear master.{key}"
            )
    defaults = SubcloudSettings()
    for field in dataclasses.fields(SubcloudSettings):
        value = getattr(settings.subcloud, field.name)
        if value != getattr(defaults, field.name):
            raise ValueError(
                f"subcloud.{field.name} is set ({value}) but sim.enabled is true, so the "
                f"simulated subclouds' URLs would be used instead: set sim.enabled = false to "
                f"use real subclouds, or remove subcloud.{field.name}"
            )


def describe_endpoints(settings: Settings) -> dict[str, Any]:
    """Every URL the service will use, as ``dcorch config`` shows it.

    Raises:
        ValueError: the settings would stop start-up (the same message).
    """
    check_master_settings(settings)
    if settings.sim.enabled:
        where = f"simulated, on {settings.sim.host} port {settings.sim.port or '(a free one)'}"
        return {
            "master": where,
            "subclouds": f"{where}, unless URLs are given when a subcloud is added",
            "sync_endpoint_types": list(c.SYNC_ENDPOINT_TYPES),
            "notes": [],
        }
    master = MasterEndpoints.from_settings(settings.master)
    template = ManagementIpResolver.from_settings(settings.subcloud).template()
    return {
        "master": {
            "keystone": master.keystone,
            "dbsync": master.dcdbsync,
            "sysinv": master.sysinv,
            "dcmanager": master.dcmanager,
            "usm": master.usm,
        },
        "subcloud_template": dataclasses.asdict(template),
        "sync_endpoint_types": list(master.sync_endpoint_types),
        "notes": master.notes(),
    }


def _with_port(url: str, port: int) -> str:
    """``url`` with another port and no path: ``http://ks:5000/x`` -> ``http://ks:8219``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", "", "", ""))


def _host(ip: str) -> str:
    """IPv6 literals go in brackets inside a URL."""
    try:
        if isinstance(ipaddress.ip_address(ip), ipaddress.IPv6Address):
            return f"[{ip}]"
    except ValueError:
        pass  # a host name: used as is
    return ip


def _versioned(url: str, version: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/" + version) else f"{url}/{version}"


def _unversioned(url: str, version: str) -> str:
    url = url.rstrip("/")
    return url[: -len(version) - 1] if url.endswith("/" + version) else url
