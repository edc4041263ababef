"""Where the engine finds a subcloud's services, and the master's.

The engine asks an :class:`EndpointResolver` for subcloud URLs: :class:`ManagementIpResolver` in
production (admin endpoints like ``https://IP:5001/v3``, ``docs/behaviour.md``), built per call
from the subcloud row (a new management IP applies at once); ``sim.endpoints.SimResolver`` in tests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from dcorch.db.rows import SubcloudRow
from dcorch.settings import MasterSettings


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
    dcdbsync: str
    dcmanager: str
    """Root of the dcmanager API that receives endpoint sync status reports."""

    usm: str = ""
    """Unversioned root of the master's usm (software) API; empty: no usm proxy."""

    @property
    def keystone_root(self) -> str:
        """Unversioned keystone root (what the identity proxy forwards to)."""
        return _unversioned(self.keystone, "v3")

    @property
    def sysinv_root(self) -> str:
        """Unversioned sysinv root (what the platform proxy forwards to)."""
        return _unversioned(self.sysinv, "v1")

    @classmethod
    def from_settings(cls, master: MasterSettings) -> MasterEndpoints:
        """Real master services (URLs with or without version); dcdbsync: keystone's host:8219.

        Raises:
            ValueError: a service URL that production needs is not set.
        """
        missing = [
            name
            for name in ("keystone_url", "sysinv_url", "dcmanager_url")
            if not getattr(master, name)
        ]
        if missing:
            raise ValueError(f"master.{missing[0]} must be set when sim.enabled is false")
        keystone = _unversioned(master.keystone_url.rstrip("/"), "v3")
        return cls(
            keystone=_versioned(keystone, "v3"),
            sysinv=_versioned(master.sysinv_url, "v1"),
            dcdbsync=_versioned(keystone.rsplit(":", 1)[0] + ":8219", "v1.0"),
            dcmanager=_versioned(master.dcmanager_url, "v1.0"),
            usm=master.usm_url.rstrip("/"),
        )


class EndpointResolver(Protocol):
    """Maps a subcloud row to its service endpoints (a pure, cheap, synchronous call)."""

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints: ...


@dataclass(frozen=True, slots=True)
class ManagementIpResolver:
    """Real subclouds: the admin endpoints on the management IP."""

    scheme: str = "https"
    keystone_port: int = 5001
    sysinv_port: int = 6386
    dcdbsync_port: int = 8220

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints:
        host = _host(subcloud.management_ip)
        base = f"{self.scheme}://{host}"
        return SubcloudEndpoints(
            keystone=f"{base}:{self.keystone_port}/v3",
            sysinv=f"{base}:{self.sysinv_port}/v1",
            dcdbsync=f"{base}:{self.dcdbsync_port}/v1.0",
        )


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
