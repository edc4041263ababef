"""Where the engine finds a subcloud's services, and the master's.

The engine never builds a subcloud URL itself: it asks an :class:`EndpointResolver`. Production
uses :class:`ManagementIpResolver` (spec 5.5: ``https://IP:5001/v3`` and friends, built from the
subcloud row at every call, so a management-IP change takes effect on the next request); the
simulator and the tests use :class:`SimResolver`, which maps a region to its path prefix on the
one simulator server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from dcorch.db.rows import SubcloudRow
from dcorch.settings import MasterSettings
from dcorch.sim.endpoints import SimEndpoints


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

    @classmethod
    def for_sim(cls, sim: SimEndpoints) -> MasterEndpoints:
        """The simulated System Controller."""
        return cls(
            sim.master_keystone, sim.master_sysinv, sim.master_dcdbsync, sim.master_dcmanager
        )

    @classmethod
    def from_settings(cls, master: MasterSettings, *, dcdbsync_url: str) -> MasterEndpoints:
        """Real master services; ``keystone_url`` may be given with or without ``/v3``."""
        return cls(
            keystone=_versioned(master.keystone_url, "v3"),
            sysinv=_versioned(master.sysinv_url, "v1"),
            dcdbsync=_versioned(dcdbsync_url, "v1.0"),
            dcmanager=_versioned(master.dcmanager_url, "v1.0"),
        )


class EndpointResolver(Protocol):
    """Maps a subcloud row to its service endpoints (a pure, cheap, synchronous call)."""

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints: ...


@dataclass(frozen=True, slots=True)
class SimResolver:
    """Subclouds served by the simulator, addressed by region name under one base URL."""

    sim: SimEndpoints

    def endpoints_for(self, subcloud: SubcloudRow) -> SubcloudEndpoints:
        region = subcloud.region_name
        return SubcloudEndpoints(
            keystone=self.sim.subcloud_keystone(region),
            sysinv=self.sim.subcloud_sysinv(region),
            dcdbsync=self.sim.subcloud_dcdbsync(region),
        )


@dataclass(frozen=True, slots=True)
class ManagementIpResolver:
    """Real subclouds: the admin endpoints on the management IP (spec 5.5 ports)."""

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
