"""Bulk registration of already-eligible subclouds, for tests, the bench and the harness.

One API call per subcloud would dominate a scale test: this writes many regions' ``subcloud``
and ``subcloud_sync`` rows in one transaction, as a completed initial sync leaves them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, insert, select, text

from dcorch import constants
from dcorch.db.schema import subcloud, subcloud_sync


def seed_eligible_subclouds(
    conn: Connection,
    regions: Sequence[str],
    endpoint_types: Sequence[str] = constants.SYNC_ENDPOINT_TYPES,
    *,
    audited_at: datetime | None = None,
) -> int:
    """Insert eligible subclouds with one sync row per endpoint type; returns how many.

    With ``audited_at`` the pairs also look audited and reported in-sync at that time, so the
    engine starts them without an audit storm (next audit ``engine.audit_interval`` later).
    """
    if not regions:
        return 0
    capabilities = json.dumps({"endpoint_types": list(endpoint_types)})
    conn.execute(
        insert(subcloud),
        [
            {
                "uuid": str(uuid.uuid4()),
                "region_name": region,
                "software_version": "24.09",
                "management_ip": "127.0.0.1",
                "management_state": constants.MANAGEMENT_MANAGED,
                "availability_status": constants.AVAILABILITY_ONLINE,
                "initial_sync_state": constants.INITIAL_SYNC_COMPLETED,
                "subsequent_sync": True,
                "capabilities": capabilities,
                "deleted": 0,
            }
            for region in regions
        ],
    )
    wanted = set(regions)
    ids = [
        (row.id, row.region_name)
        for row in conn.execute(select(subcloud.c.id, subcloud.c.region_name))
        if row.region_name in wanted
    ]
    audit_fields: dict[str, object] = {}
    if audited_at is not None:
        audit_fields = {
            "audit_status": constants.AUDIT_COMPLETED,
            "last_audit_time": audited_at,
            "sync_request": constants.SYNC_REQUEST_COMPLETED,
            "sync_status_reported": constants.SYNC_STATUS_IN_SYNC,
            "sync_status_report_time": audited_at,
        }
    conn.execute(
        insert(subcloud_sync),
        [
            {
                "subcloud_id": sid,
                "subcloud_name": region,
                "endpoint_type": endpoint_type,
                "deleted": 0,
                **audit_fields,
            }
            for sid, region in ids
            for endpoint_type in endpoint_types
        ],
    )
    if conn.dialect.name == "postgresql":
        # Fresh statistics, or the planner picks nested loops (docs/database.md#pitfalls).
        conn.execute(text("ANALYZE subcloud"))
        conn.execute(text("ANALYZE subcloud_sync"))
    return len(ids)
