"""The simulator's URL scheme, in one place.

One HTTP server hosts the System Controller and every subcloud, told apart by a path prefix,
because thousands of listening ports would exhaust file descriptors and slow start-up::

    {base}/master/keystone/v3/...          System Controller keystone
    {base}/master/sysinv/v1/...            System Controller sysinv
    {base}/master/dcdbsync/v1.0/...        System Controller identity DB records (read)
    {base}/master/dcmanager/v1.0/...       dcmanager endpoint_status reports
    {base}/subclouds/<region>/keystone/v3/...
    {base}/subclouds/<region>/sysinv/v1/...
    {base}/subclouds/<region>/dcdbsync/v1.0/...
    {base}/sim/...                         control and inspection API

Build simulated clouds' URLs with :class:`SimEndpoints`, not string literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dcorch.db.rows import SubcloudRow
from dcorch.remote.endpoints import MasterEndpoints, SubcloudEndpoints

MASTER_PREFIX: Final = "master"
SUBCLOUD_PREFIX: Final = "subclouds"
CONTROL_PREFIX: Final = "sim"

KEYSTONE: Final = "keystone"
SYSINV: Final = "sysinv"
DCDBSYNC: Final = "dcdbsync"
DCMANAGER: Final = "dcmanager"

SERVICE_VERSIONS: Final = {KEYSTONE: "v3", SYSINV: "v1", DCDBSYNC: "v1.0", DCMANAGER: "v1.0"}


@dataclass(frozen=True, slots=True)
class SimEndpoints:
    """Build the simulator's service URLs from its base URL (``http://127.0.0.1:PORT``)."""

    base_url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def master_keystone(self) -> str:
        """``.../master/keystone/v3``."""
        return self.master_service(KEYSTONE)

    @property
    def master_sysinv(self) -> str:
        """``.../master/sysinv/v1``."""
        return self.master_service(SYSINV)

    @property
    def master_dcdbsync(self) -> str:
        """``.../master/dcdbsync/v1.0``."""
        return self.master_service(DCDBSYNC)

    @property
    def master_dcmanager(self) -> str:
        """``.../master/dcmanager/v1.0``."""
        return self.master_service(DCMANAGER)

    @property
    def control(self) -> str:
        """``.../sim``, the control and inspection API."""
        return f"{self.base_url}/{CONTROL_PREFIX}"

    def master_service(self, service: str) -> str:
        """The versioned root of one of the master's services."""
        return f"{self.base_url}/{MASTER_PREFIX}/{service}/{SERVICE_VERSIONS[service]}"

    def subcloud_root(self, region: str) -> str:
        """``.../subclouds/<region>``."""
        return f"{self.base_url}/{SUBCLOUD_PREFIX}/{region}"

    def subcloud_service(self, region: str, service: str) -> str:
        """The versioned root of one of a subcloud's services."""
        return f"{self.subcloud_root(region)}/{service}/{SERVICE_VERSIONS[service]}"

    def subcloud_keystone(self, region: str) -> str:
        """``.../subclouds/<region>/keystone/v3``."""
        return self.subcloud_service(region, KEYSTONE)

    def subcloud_sysinv(self, region: str) -> str:
        """``.../subclouds/<region>/sysinv/v1``."""
        return self.subcloud_service(region, SYSINV)

    def subcloud_dcdbsync(self, region: str) -> str:
        """``.../subclouds/<region>/dcdbsync/v1.0``."""
        return self.subcloud_service(region, DCDBSYNC)

    def master(self) -> MasterEndpoints:
        """The simulated System Controller's services, as the engine and proxies see them."""
        return MasterEndpoints(
            self.master_keystone, self.master_sysinv, self.master_dcdbsync, self.master_dcmanager
        )

    def status_report(self, region: str) -> str:
        """Where dcorch reports a subcloud's endpoint sync status."""
        return f"{self.master_dcmanager}/subclouds/{region}/endpoint_status"


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
