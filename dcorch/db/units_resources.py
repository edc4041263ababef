"""Units on ``resource`` and ``subcloud_resource``: the master object <-> subcloud object map.

Sync handlers write them after changing an object in a subcloud; the audit reads them to compare
both sides. Keyed by (region, resource type, master id), so callers never handle internal ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, select, update

from dcorch import constants as c
from dcorch.db.errors import SubcloudNotFound
from dcorch.db.rows import ResourceRow, SubcloudResourceRow
from dcorch.db.schema import new_uuid, resource, subcloud, subcloud_resource, utcnow
from dcorch.db.units_work import insert_ignore


def _subcloud_id(conn: Connection, region: str) -> int:
    sid = conn.execute(select(subcloud.c.id).where(subcloud.c.region_name == region)).scalar()
    if sid is None:
        raise SubcloudNotFound(region)
    return int(sid)


def _mapping_query() -> Any:
    return (
        select(
            subcloud_resource.c.id,
            subcloud_resource.c.uuid,
            subcloud_resource.c.subcloud_id,
            subcloud.c.region_name,
            subcloud_resource.c.resource_id,
            resource.c.resource_type,
            resource.c.master_id,
            subcloud_resource.c.subcloud_resource_id,
            subcloud_resource.c.shared_config_state,
            subcloud_resource.c.created_at,
            subcloud_resource.c.updated_at,
        )
        .select_from(subcloud_resource)
        .join(resource, resource.c.id == subcloud_resource.c.resource_id)
        .join(subcloud, subcloud.c.id == subcloud_resource.c.subcloud_id)
    )


def _mapping_row(m: RowMapping) -> SubcloudResourceRow:
    return SubcloudResourceRow(
        id=m["id"],
        uuid=m["uuid"],
        subcloud_id=m["subcloud_id"],
        region_name=m["region_name"],
        resource_id=m["resource_id"],
        resource_type=m["resource_type"],
        master_id=m["master_id"],
        subcloud_resource_id=m["subcloud_resource_id"] or "",
        shared_config_state=m["shared_config_state"] or c.SHARED_CONFIG_MANAGED,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def get_subcloud_resource(
    conn: Connection, region: str, resource_type: str, master_id: str
) -> SubcloudResourceRow | None:
    """The mapping of one master object in one subcloud, or None."""
    stmt = _mapping_query().where(
        subcloud.c.region_name == region,
        resource.c.resource_type == resource_type,
        resource.c.master_id == master_id,
        resource.c.deleted == 0,
    )
    m = conn.execute(stmt).mappings().first()
    return None if m is None else _mapping_row(m)


def list_subcloud_resources(
    conn: Connection, region: str, resource_type: str | None
) -> list[SubcloudResourceRow]:
    """Mappings of one subcloud (optionally of one resource type), in id order."""
    stmt = _mapping_query().where(subcloud.c.region_name == region, resource.c.deleted == 0)
    if resource_type is not None:
        stmt = stmt.where(resource.c.resource_type == resource_type)
    return [_mapping_row(m) for m in conn.execute(stmt.order_by(subcloud_resource.c.id)).mappings()]


def _resource_id(conn: Connection, resource_type: str, master_id: str, now: datetime) -> int:
    """Find or create the live resource row (race-safe, like enqueue's step 1)."""
    where = (
        resource.c.resource_type == resource_type,
        resource.c.master_id == master_id,
        resource.c.deleted == 0,
    )
    rid = conn.execute(select(resource.c.id).where(*where)).scalar()
    if rid is None:
        conn.execute(
            insert_ignore(conn, resource, ("resource_type", "master_id", "deleted")).values(
                uuid=new_uuid(),
                resource_type=resource_type,
                master_id=master_id,
                created_at=now,
                deleted=0,
            )
        )
        rid = conn.execute(select(resource.c.id).where(*where)).scalar_one()
    return int(rid)


def upsert_subcloud_resource(
    conn: Connection,
    region: str,
    resource_type: str,
    master_id: str,
    subcloud_resource_id: str,
    shared_config_state: str | None,
) -> SubcloudResourceRow:
    """Create or update the mapping; ``shared_config_state`` None keeps the stored value."""
    now = utcnow()
    sid = _subcloud_id(conn, region)
    rid = _resource_id(conn, resource_type, master_id, now)
    values: dict[str, Any] = {"subcloud_resource_id": subcloud_resource_id}
    if shared_config_state is not None:
        values["shared_config_state"] = shared_config_state
    insert_values = {
        "uuid": new_uuid(),
        "resource_id": rid,
        "subcloud_id": sid,
        "shared_config_state": c.SHARED_CONFIG_MANAGED,
        "created_at": now,
        "deleted": 0,
        **values,
    }
    conn.execute(
        insert_ignore(conn, subcloud_resource, ("resource_id", "subcloud_id")).values(
            **insert_values
        )
    )
    conn.execute(
        update(subcloud_resource)
        .where(subcloud_resource.c.resource_id == rid, subcloud_resource.c.subcloud_id == sid)
        .values(**values)
    )
    found = get_subcloud_resource(conn, region, resource_type, master_id)
    assert found is not None
    return found


def delete_subcloud_resource(
    conn: Connection, region: str, resource_type: str, master_id: str
) -> bool:
    """Remove the mapping; True if there was one."""
    row = get_subcloud_resource(conn, region, resource_type, master_id)
    if row is None:
        return False
    conn.execute(delete(subcloud_resource).where(subcloud_resource.c.id == row.id))
    return True


def list_resources(conn: Connection, resource_type: str) -> list[ResourceRow]:
    """Live resource rows of one type, in id order."""
    stmt = (
        select(resource)
        .where(resource.c.resource_type == resource_type, resource.c.deleted == 0)
        .order_by(resource.c.id)
    )
    return [
        ResourceRow(
            id=m["id"],
            uuid=m["uuid"],
            resource_type=m["resource_type"],
            master_id=m["master_id"],
            created_at=m["created_at"],
        )
        for m in conn.execute(stmt).mappings()
    ]
