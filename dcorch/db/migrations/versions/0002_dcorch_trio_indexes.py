"""dcorch-trio extras: the indexes the hot per-subcloud queries need.

Upstream eacc4b8f; see docs/behaviour.md#tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

* subcloud_sync(subcloud_name): the per-subcloud reads of the sync actors and the initial sync.
* subcloud_resource(subcloud_id): mapping lookups and the delete-subcloud cleanup.
* orch_request(target_region_name, deleted, id, state): "live requests of a region in id order"
  is an index range scan with no sort; state is filtered inside the index.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("subcloud_sync_subcloud_name_idx", "subcloud_sync", ["subcloud_name"])
    op.create_index("subcloud_resource_subcloud_id_idx", "subcloud_resource", ["subcloud_id"])
    op.create_index(
        "orch_request_pending_idx",
        "orch_request",
        ["target_region_name", "deleted", "id", "state"],
    )


def downgrade() -> None:
    op.drop_index("orch_request_pending_idx", table_name="orch_request")
    op.drop_index("subcloud_resource_subcloud_id_idx", table_name="subcloud_resource")
    op.drop_index("subcloud_sync_subcloud_name_idx", table_name="subcloud_sync")
