"""Initial dcorch schema: the real system's tables, columns, constraints and indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Frozen: this file never imports dcorch.db.schema, so later schema edits cannot rewrite history.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _common() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("deleted_at", sa.DateTime),
        sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    op.create_table(
        "subcloud",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("region_name", sa.String(255), unique=True),
        sa.Column("software_version", sa.String(255)),
        sa.Column("management_state", sa.String(64)),
        sa.Column("availability_status", sa.String(64), nullable=False),
        sa.Column("capabilities", sa.Text),
        sa.Column("initial_sync_state", sa.String(64)),
        sa.Column("subsequent_sync", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("management_ip", sa.String(64)),
        *_common(),
    )
    op.create_index("subcloud_region_name_idx", "subcloud", ["region_name"])

    op.create_table(
        "subcloud_sync",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subcloud_id", sa.Integer, sa.ForeignKey("subcloud.id", ondelete="CASCADE")),
        sa.Column("subcloud_name", sa.String(255), nullable=False),
        sa.Column("endpoint_type", sa.String(255)),
        sa.Column("sync_request", sa.String(64)),
        sa.Column("sync_status_reported", sa.String(64)),
        sa.Column("sync_status_report_time", sa.DateTime),
        sa.Column("audit_status", sa.String(64)),
        sa.Column("last_audit_time", sa.DateTime),
        *_common(),
        sa.UniqueConstraint(
            "subcloud_name", "endpoint_type", name="uniq_subcloud_sync0subcloud_name0endpoint_type"
        ),
    )
    op.create_index(
        "subcloud_sync_subcloud_name_endpoint_type_idx",
        "subcloud_sync",
        ["subcloud_name", "endpoint_type"],
    )

    op.create_table(
        "resource",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("resource_type", sa.String(128)),
        sa.Column("master_id", sa.String(255)),
        sa.Column("capabilities", sa.Text),
        *_common(),
        sa.UniqueConstraint(
            "resource_type",
            "master_id",
            "deleted",
            name="uniq_resource0resource_type0master_id0deleted",
        ),
    )
    op.create_index("resource_resource_type_idx", "resource", ["resource_type"])
    op.create_index("resource_master_id_idx", "resource", ["master_id"])

    op.create_table(
        "subcloud_resource",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("subcloud_resource_id", sa.String(255)),
        sa.Column("shared_config_state", sa.String(255)),
        sa.Column("capabilities", sa.Text),
        sa.Column("subcloud_name", sa.String(255)),
        sa.Column("resource_id", sa.Integer, sa.ForeignKey("resource.id", ondelete="CASCADE")),
        sa.Column("subcloud_id", sa.Integer, sa.ForeignKey("subcloud.id", ondelete="CASCADE")),
        *_common(),
        sa.UniqueConstraint(
            "resource_id", "subcloud_id", name="uniq_subcloud_resource0resource_id0subcloud_id"
        ),
    )
    op.create_index("subcloud_resource_resource_id_idx", "subcloud_resource", ["resource_id"])
    op.create_index(
        "subcloud_resource_resource_id_subcloud_id_idx",
        "subcloud_resource",
        ["resource_id", "subcloud_id"],
    )

    op.create_table(
        "orch_job",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("endpoint_type", sa.String(255), nullable=False),
        sa.Column("source_resource_id", sa.String(255)),
        sa.Column("operation_type", sa.String(255)),
        sa.Column("resource_id", sa.Integer, sa.ForeignKey("resource.id")),
        sa.Column("resource_info", sa.Text),
        sa.Column("capabilities", sa.Text),
        *_common(),
    )
    op.create_index("orch_job_endpoint_type_idx", "orch_job", ["endpoint_type"])

    op.create_table(
        "orch_request",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("state", sa.String(128)),
        sa.Column("try_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("api_version", sa.String(128)),
        sa.Column("target_region_name", sa.String(255)),
        sa.Column("orch_job_id", sa.Integer, sa.ForeignKey("orch_job.id")),
        sa.Column("capabilities", sa.Text),
        *_common(),
        sa.UniqueConstraint(
            "target_region_name",
            "orch_job_id",
            "deleted",
            name="uniq_orch_request0target_region_name0orch_job_id0deleted",
        ),
    )
    op.create_index("orch_request_state_idx", "orch_request", ["state"])
    op.create_index("orch_request_updated_at_state_idx", "orch_request", ["updated_at", "state"])
    op.create_index("orch_request_deleted_at_idx", "orch_request", ["deleted_at"])
    op.create_index("orch_request_orch_job_id_idx", "orch_request", ["orch_job_id"])

    op.create_table(
        "service",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255)),
        sa.Column("binary", sa.String(255)),
        sa.Column("topic", sa.String(255)),
        sa.Column("disabled", sa.Boolean),
        sa.Column("disabled_reason", sa.String(255)),
        sa.Column("capabilities", sa.Text),
        *_common(),
    )


def downgrade() -> None:
    for table in (
        "service",
        "orch_request",
        "orch_job",
        "subcloud_resource",
        "resource",
        "subcloud_sync",
        "subcloud",
    ):
        op.drop_table(table)
