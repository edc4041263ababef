"""What a driver needs to apply a request: the subcloud, its client, the master, the database."""

from __future__ import annotations

from dataclasses import dataclass

from dcorch.db.database import Database
from dcorch.db.rows import SubcloudRow
from dcorch.remote.clients import CloudClient


@dataclass(frozen=True, slots=True)
class DriverContext:
    """Everything one application of a request touches (built per pass, never cached)."""

    db: Database
    subcloud: SubcloudRow
    remote: CloudClient
    """The subcloud's services."""
    master: CloudClient
    """The System Controller's services (source of the records replicated)."""
    keyring_password: str | None = None
    """The central admin password a keyring ``patch`` sets (None: unknown, such a patch fails);
    never written to the database (docs/behaviour.md#audit)."""
    master_ca_dir: str = ""
    """The System Controller's CA files (``master.ca_cert_dir``): the PEM of a CA certificate
    the audit found missing (sysinv's listing carries none)."""

    @property
    def region(self) -> str:
        return self.subcloud.region_name

    async def map(self, resource_type: str, master_id: str, subcloud_id: str) -> None:
        """Record where the master object lives in this subcloud."""
        await self.db.upsert_subcloud_resource(self.region, resource_type, master_id, subcloud_id)

    async def unmap(self, resource_type: str, master_id: str) -> None:
        await self.db.delete_subcloud_resource(self.region, resource_type, master_id)
