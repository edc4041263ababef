"""Plain, frozen values returned by the database.

Never ORM objects or SQLAlchemy rows, which would tie the caller to a connection owned by the
asyncio thread: every value is immutable and safe to pass between actors. Timestamps: naive UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

SERVICES = ("keystone", "sysinv", "dcdbsync")
"""The services of a subcloud dcorch talks to (the fields of :class:`GivenEndpoints`)."""


@dataclass(frozen=True, slots=True)
class GivenEndpoints:
    """Service roots given for one subcloud through the v1 API (``""``: from the template).

    Stored in ``subcloud.capabilities`` beside ``endpoint_types`` (no schema change).
    """

    keystone: str = ""
    sysinv: str = ""
    dcdbsync: str = ""

    @classmethod
    def from_mapping(cls, urls: Mapping[str, object]) -> GivenEndpoints:
        """From stored JSON; unknown keys and non-text values are ignored (never raised)."""
        return cls(**{k: v for k, v in urls.items() if k in SERVICES and isinstance(v, str)})

    def given(self) -> dict[str, str]:
        """Only the services that were given, ``{"keystone": url, ...}``."""
        return {name: url for name in SERVICES if (url := getattr(self, name))}


@dataclass(frozen=True, slots=True)
class SubcloudRow:
    """One ``subcloud`` row."""

    id: int
    uuid: str
    region_name: str
    software_version: str
    management_state: str | None
    """``None`` until the first state update, then ``managed`` or ``unmanaged``."""
    availability_status: str
    initial_sync_state: str
    subsequent_sync: bool
    """True once the identity ID reconciliation has run (cleared by unmanage)."""
    management_ip: str
    endpoint_types: tuple[str, ...]
    """From ``capabilities.endpoint_types``: the pairs this subcloud syncs."""
    created_at: datetime | None
    updated_at: datetime | None
    endpoints: GivenEndpoints = GivenEndpoints()
    """From ``capabilities.endpoints``: URLs that win over the template, service by service."""


@dataclass(frozen=True, slots=True)
class SubcloudBacklog:
    """How far one subcloud is from done: its states and its work still to apply."""

    region_name: str
    management_state: str | None
    availability_status: str
    initial_sync_state: str
    work: int
    """Live ``orch_request`` rows ``queued`` or ``in-progress`` (failed ones are final)."""


@dataclass(frozen=True, slots=True)
class SubcloudSyncRow:
    """One ``subcloud_sync`` row (one pair)."""

    id: int
    subcloud_id: int | None
    subcloud_name: str
    endpoint_type: str
    sync_request: str
    sync_status_reported: str
    sync_status_report_time: datetime | None
    audit_status: str
    last_audit_time: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """An ``orch_request`` joined with its ``orch_job`` and ``resource``.

    Live ones (the engine's work), or completed ones kept until the purge (the v1 API's list).
    """

    id: int
    uuid: str
    state: str
    try_count: int
    target_region_name: str
    orch_job_id: int
    endpoint_type: str
    resource_type: str
    operation_type: str
    source_resource_id: str
    resource_info: str
    resource_id: int
    master_id: str
    created_at: datetime | None
    updated_at: datetime | None
    result: str | None = None
    """Why it ended as it did, when a state alone would mislead (``"no_mapping"``: completed,
    nothing to change); kept in ``orch_request.capabilities`` (docs/behaviour.md#tables)."""


@dataclass(frozen=True, slots=True)
class RequestUpdate:
    """One change for :meth:`Database.update_requests`.

    ``state='completed'`` also soft-deletes the row (``deleted=1``, ``deleted_at=now``), as the
    real system does on success (docs/behaviour.md#states).
    """

    id: int
    state: str | None = None
    try_count: int | None = None
    """Absolute value; wins over ``try_count_increment`` when both are given."""
    try_count_increment: int = 0
    result: str | None = None
    """Stored as the request's :attr:`PendingRequest.result` (None: left as it is)."""


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows removed by one purge (docs/behaviour.md#purge), in the order they were removed."""

    orch_requests: int
    orch_jobs: int
    resources: int


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """One ``resource`` row: a master object dcorch tracks."""

    id: int
    uuid: str
    resource_type: str
    master_id: str
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubcloudResourceRow:
    """One ``subcloud_resource`` row: where a master object lives in one subcloud."""

    id: int
    uuid: str
    subcloud_id: int
    region_name: str
    resource_id: int
    resource_type: str
    master_id: str
    subcloud_resource_id: str
    shared_config_state: str
    created_at: datetime | None
    updated_at: datetime | None
