"""The slice of the database actor the engine uses, as a Protocol.

The engine depends on this narrow interface rather than on the concrete actor so the tests can
see at a glance which units the engine touches, and so the engine type-checks on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from dcorch.db.rows import (
    PendingRequest,
    RequestUpdate,
    ResourceRow,
    SubcloudResourceRow,
    SubcloudRow,
    SubcloudSyncRow,
)
from dcorch.work import EnqueueResult, WorkOrder


class EngineDatabase(Protocol):
    """Database units used by the sync manager, sync actors, drivers and the audit."""

    async def get_subcloud(self, region: str) -> SubcloudRow: ...

    async def list_subclouds(self) -> list[SubcloudRow]: ...

    async def set_initial_sync_state(
        self, region: str, from_state: str, to_state: str, *, subsequent_sync: bool | None = None
    ) -> bool: ...

    async def list_subcloud_syncs(self, region: str | None = None) -> list[SubcloudSyncRow]: ...

    async def update_subcloud_sync(
        self, region_name: str, endpoint_type: str, **fields: Any
    ) -> SubcloudSyncRow: ...

    async def enqueue_work(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]: ...

    async def pending_requests(
        self,
        region: str,
        endpoint_type: str,
        *,
        states: Sequence[str] = ...,
        limit: int | None = None,
    ) -> list[PendingRequest]: ...

    async def update_requests(self, updates: Sequence[RequestUpdate]) -> list[int]: ...

    async def soft_delete_failed_requests(
        self, region: str, endpoint_type: str, older_than: datetime
    ) -> int: ...

    async def get_subcloud_resource(
        self, region: str, resource_type: str, master_id: str
    ) -> SubcloudResourceRow | None: ...

    async def list_subcloud_resources(
        self, region: str, resource_type: str | None = None
    ) -> list[SubcloudResourceRow]: ...

    async def upsert_subcloud_resource(
        self,
        region: str,
        resource_type: str,
        master_id: str,
        subcloud_resource_id: str,
        *,
        shared_config_state: str | None = None,
    ) -> SubcloudResourceRow: ...

    async def delete_subcloud_resource(
        self, region: str, resource_type: str, master_id: str
    ) -> bool: ...

    async def list_resources(self, resource_type: str) -> list[ResourceRow]: ...
