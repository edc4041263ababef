"""The dcorch schema as SQLAlchemy Core tables (docs/behaviour.md#tables), plus our extras.

Table, column, constraint and index names are the real system's (operators' tools and upgrade
scripts read them). Core, not the ORM: hot paths are bulk statements returning plain data.

Kept from the real system: every table has ``created_at``, ``updated_at`` (set by every Core
``update()``), ``deleted_at`` and ``deleted`` (0 = live, soft-deleted rows get the literal 1);
only ``orch_request`` is soft-deleted. Timestamps are naive UTC, as oslo.db writes them, so both
backends compare alike. The client fills ``uuid`` columns: bulk inserts never need RETURNING.

Our extras (migration 0002), each fixing one of docs/behaviour.md#upstream-bugs-we-do-not-repeat:

* ``subcloud_sync_subcloud_name_idx`` and ``subcloud_resource_subcloud_id_idx`` (eacc4b8f).
* ``orch_request_pending_idx`` on ``(target_region_name, deleted, id, state)``: a pair's sync
  reads a region's live requests in id order; seeking on region and ``deleted`` yields them
  sorted, ``state`` filtered in the index; also used by failed-request queries, subcloud deletes.
* Orphaned ``orch_request`` rows after a subcloud delete
  (docs/behaviour.md#orphaned-requests-after-delete): the unit, not a foreign key, deletes the
  region's requests by ``target_region_name``. Requests are keyed by region name (as upstream),
  an FK column would burden every bulk path, and this also cleans imported upstream rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()


def utcnow() -> datetime:
    """Naive UTC now, the representation every timestamp column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_uuid() -> str:
    """A client-generated uuid4 in its 36-character text form."""
    return str(uuid.uuid4())


def _common() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime, default=utcnow),
        Column("updated_at", DateTime, onupdate=utcnow),
        Column("deleted_at", DateTime),
        Column("deleted", Integer, nullable=False, default=0, server_default="0"),
    ]


subcloud = Table(
    "subcloud",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True, default=new_uuid),
    Column("region_name", String(255), unique=True),
    Column("software_version", String(255)),
    Column("management_state", String(64)),
    Column("availability_status", String(64), nullable=False, default="offline"),
    Column("capabilities", Text),
    Column("initial_sync_state", String(64), default="none"),
    Column("subsequent_sync", Boolean, nullable=False, default=False, server_default="0"),
    Column("management_ip", String(64)),
    *_common(),
    Index("subcloud_region_name_idx", "region_name"),
)

subcloud_sync = Table(
    "subcloud_sync",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subcloud_id", Integer, ForeignKey("subcloud.id", ondelete="CASCADE")),
    Column("subcloud_name", String(255), nullable=False),
    Column("endpoint_type", String(255), default="none"),
    Column("sync_request", String(64), default="none"),
    Column("sync_status_reported", String(64), default="none"),
    Column("sync_status_report_time", DateTime),
    Column("audit_status", String(64), default="none"),
    Column("last_audit_time", DateTime),
    *_common(),
    UniqueConstraint(
        "subcloud_name", "endpoint_type", name="uniq_subcloud_sync0subcloud_name0endpoint_type"
    ),
    Index("subcloud_sync_subcloud_name_endpoint_type_idx", "subcloud_name", "endpoint_type"),
    Index("subcloud_sync_subcloud_name_idx", "subcloud_name"),
)

resource = Table(
    "resource",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True, default=new_uuid),
    Column("resource_type", String(128)),
    Column("master_id", String(255)),
    Column("capabilities", Text),
    *_common(),
    UniqueConstraint(
        "resource_type",
        "master_id",
        "deleted",
        name="uniq_resource0resource_type0master_id0deleted",
    ),
    Index("resource_resource_type_idx", "resource_type"),
    Index("resource_master_id_idx", "master_id"),
)

subcloud_resource = Table(
    "subcloud_resource",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True, default=new_uuid),
    Column("subcloud_resource_id", String(255)),
    Column("shared_config_state", String(255), default="managed"),
    Column("capabilities", Text),
    Column("subcloud_name", String(255)),
    Column("resource_id", Integer, ForeignKey("resource.id", ondelete="CASCADE")),
    Column("subcloud_id", Integer, ForeignKey("subcloud.id", ondelete="CASCADE")),
    *_common(),
    UniqueConstraint(
        "resource_id", "subcloud_id", name="uniq_subcloud_resource0resource_id0subcloud_id"
    ),
    Index("subcloud_resource_resource_id_idx", "resource_id"),
    Index("subcloud_resource_resource_id_subcloud_id_idx", "resource_id", "subcloud_id"),
    Index("subcloud_resource_subcloud_id_idx", "subcloud_id"),
)

orch_job = Table(
    "orch_job",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True, default=new_uuid),
    Column("user_id", String(128)),
    Column("project_id", String(128)),
    Column("endpoint_type", String(255), nullable=False),
    Column("source_resource_id", String(255)),
    Column("operation_type", String(255)),
    Column("resource_id", Integer, ForeignKey("resource.id")),
    Column("resource_info", Text),
    Column("capabilities", Text),
    *_common(),
    Index("orch_job_endpoint_type_idx", "endpoint_type"),
)

orch_request = Table(
    "orch_request",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True, default=new_uuid),
    Column("state", String(128)),
    Column("try_count", Integer, nullable=False, default=0, server_default="0"),
    Column("api_version", String(128)),
    Column("target_region_name", String(255)),
    Column("orch_job_id", Integer, ForeignKey("orch_job.id")),
    Column("capabilities", Text),
    *_common(),
    UniqueConstraint(
        "target_region_name",
        "orch_job_id",
        "deleted",
        name="uniq_orch_request0target_region_name0orch_job_id0deleted",
    ),
    Index("orch_request_state_idx", "state"),
    Index("orch_request_updated_at_state_idx", "updated_at", "state"),
    Index("orch_request_deleted_at_idx", "deleted_at"),
    Index("orch_request_orch_job_id_idx", "orch_job_id"),
    Index("orch_request_pending_idx", "target_region_name", "deleted", "id", "state"),
)

service = Table(
    "service",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("host", String(255)),
    Column("binary", String(255)),
    Column("topic", String(255)),
    Column("disabled", Boolean, default=False),
    Column("disabled_reason", String(255)),
    Column("capabilities", Text),
    *_common(),
)

ORCH_REQUEST_COPY_COLUMNS = (
    "uuid",
    "state",
    "try_count",
    "target_region_name",
    "orch_job_id",
    "created_at",
    "deleted",
)
"""Columns written by the PostgreSQL COPY path of enqueue (COPY applies no client defaults)."""
