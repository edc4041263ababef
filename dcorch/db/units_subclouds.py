"""Units of work on ``subcloud`` and ``subcloud_sync`` (docs/behaviour.md#subcloud-lifecycle).

Also see docs/behaviour.md#initial-sync. Each unit is a plain sync function ``fn(conn, ...)``
run in one transaction (``conn.run_sync``), alike on SQLite and PostgreSQL. A read preceding a
write of the same row uses ``SELECT ... FOR UPDATE`` (ignored by SQLite, whose writers are
serialised), so a read-modify-write never loses an update (docs/behaviour.md#get-then-save-races).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from dcorch import constants as c
from dcorch.db.errors import SubcloudAlreadyExists, SubcloudNotFound, SubcloudSyncNotFound
from dcorch.db.rows import GivenEndpoints, SubcloudRow, SubcloudSyncRow
from dcorch.db.schema import (
    new_uuid,
    orch_request,
    subcloud,
    subcloud_resource,
    subcloud_sync,
    utcnow,
)

SUBCLOUD_SYNC_FIELDS = frozenset(
    {
        "sync_request",
        "sync_status_reported",
        "sync_status_report_time",
        "audit_status",
        "last_audit_time",
    }
)
"""Columns :func:`update_subcloud_sync` may write."""


def _capabilities(m: RowMapping) -> dict[str, Any]:
    try:
        caps = json.loads(m["capabilities"] or "{}")
    except ValueError:
        return {}
    return caps if isinstance(caps, dict) else {}


def subcloud_row(m: RowMapping) -> SubcloudRow:
    """Build a :class:`SubcloudRow` from a ``subcloud`` mapping."""
    caps = _capabilities(m)
    endpoints = caps.get("endpoints")
    return SubcloudRow(
        id=m["id"],
        uuid=m["uuid"],
        region_name=m["region_name"],
        software_version=m["software_version"] or "",
        management_state=m["management_state"],
        availability_status=m["availability_status"],
        initial_sync_state=m["initial_sync_state"] or c.INITIAL_SYNC_NONE,
        subsequent_sync=bool(m["subsequent_sync"]),
        management_ip=m["management_ip"] or "",
        endpoint_types=tuple(caps.get("endpoint_types", ())),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        endpoints=GivenEndpoints.from_mapping(endpoints if isinstance(endpoints, dict) else {}),
    )


def sync_row(m: RowMapping) -> SubcloudSyncRow:
    """Build a :class:`SubcloudSyncRow` from a ``subcloud_sync`` mapping."""
    return SubcloudSyncRow(
        id=m["id"],
        subcloud_id=m["subcloud_id"],
        subcloud_name=m["subcloud_name"],
        endpoint_type=m["endpoint_type"],
        sync_request=m["sync_request"],
        sync_status_reported=m["sync_status_reported"],
        sync_status_report_time=m["sync_status_report_time"],
        audit_status=m["audit_status"],
        last_audit_time=m["last_audit_time"],
        updated_at=m["updated_at"],
    )


def _fetch(conn: Connection, region: str, *, for_update: bool = False) -> RowMapping:
    stmt = select(subcloud).where(subcloud.c.region_name == region)
    if for_update:
        stmt = stmt.with_for_update()
    m = conn.execute(stmt).mappings().first()
    if m is None:
        raise SubcloudNotFound(region)
    return m


def add_subcloud(
    conn: Connection,
    region: str,
    software_version: str,
    management_ip: str,
    endpoint_types: Sequence[str],
    endpoints: Mapping[str, str] | None = None,
) -> SubcloudRow:
    """Insert a subcloud (offline, unmanaged, initial sync none) and one sync row per endpoint.

    ``endpoints`` (service -> URL, validated by the caller) are kept in ``capabilities``.
    """
    now = utcnow()
    values: dict[str, Any] = {"endpoint_types": list(endpoint_types)}
    if endpoints:
        values["endpoints"] = dict(endpoints)
    caps = json.dumps(values)
    try:
        # A savepoint keeps the transaction usable after the duplicate (PostgreSQL aborts it).
        with conn.begin_nested():
            sid = conn.execute(
                insert(subcloud)
                .values(
                    uuid=new_uuid(),
                    region_name=region,
                    software_version=software_version,
                    management_ip=management_ip,
                    availability_status=c.AVAILABILITY_OFFLINE,
                    initial_sync_state=c.INITIAL_SYNC_NONE,
                    subsequent_sync=False,
                    capabilities=caps,
                    created_at=now,
                )
                .returning(subcloud.c.id)
            ).scalar_one()
    except IntegrityError:
        raise SubcloudAlreadyExists(region) from None
    if endpoint_types:
        conn.execute(
            insert(subcloud_sync),
            [_new_sync_row(sid, region, ept, now) for ept in endpoint_types],
        )
    return subcloud_row(_fetch(conn, region))


def get_subcloud(conn: Connection, region: str) -> SubcloudRow:
    """The subcloud of that region, or :class:`SubcloudNotFound`."""
    return subcloud_row(_fetch(conn, region))


def list_subclouds(conn: Connection) -> list[SubcloudRow]:
    """Every subcloud, in id order."""
    rows = conn.execute(select(subcloud).order_by(subcloud.c.id)).mappings()
    return [subcloud_row(m) for m in rows]


def update_subcloud_states(
    conn: Connection,
    region: str,
    management_state: str | None,
    availability_status: str | None,
) -> SubcloudRow:
    """Store new states and derive ``initial_sync_state`` (docs/behaviour.md#subcloud-lifecycle).

    Unchanged states (only the given ones compared) are a no-op. Managed+online requests an
    initial sync (``subsequent_sync`` kept: a re-connect skips ID reconciliation); any other
    combination resets it to ``none``, and unmanaged also clears ``subsequent_sync``.
    """
    m = _fetch(conn, region, for_update=True)
    if (management_state is None or management_state == m["management_state"]) and (
        availability_status is None or availability_status == m["availability_status"]
    ):
        return subcloud_row(m)
    mgmt = management_state if management_state is not None else m["management_state"]
    avail = availability_status if availability_status is not None else m["availability_status"]
    values: dict[str, Any] = {"management_state": mgmt, "availability_status": avail}
    if mgmt == c.MANAGEMENT_MANAGED and avail == c.AVAILABILITY_ONLINE:
        values["initial_sync_state"] = c.INITIAL_SYNC_REQUESTED
    elif mgmt == c.MANAGEMENT_UNMANAGED:
        values["initial_sync_state"] = c.INITIAL_SYNC_NONE
        values["subsequent_sync"] = False
    else:
        values["initial_sync_state"] = c.INITIAL_SYNC_NONE
    conn.execute(update(subcloud).where(subcloud.c.id == m["id"]).values(**values))
    return subcloud_row(_fetch(conn, region))


def set_initial_sync_state(
    conn: Connection,
    region: str,
    from_state: str,
    to_state: str,
    subsequent_sync: bool | None,
) -> bool:
    """Compare-and-set of ``initial_sync_state``; True if this call made the change.

    ``subsequent_sync`` is written only on success, so an initial sync ending after an unmanage
    cannot set it behind the unmanage's back (docs/behaviour.md#get-then-save-races).
    """
    values: dict[str, Any] = {"initial_sync_state": to_state}
    if subsequent_sync is not None:
        values["subsequent_sync"] = subsequent_sync
    result = conn.execute(
        update(subcloud)
        .where(subcloud.c.region_name == region, subcloud.c.initial_sync_state == from_state)
        .values(**values)
    )
    return result.rowcount == 1


def update_subcloud(
    conn: Connection,
    region: str,
    software_version: str | None,
    management_ip: str | None,
    endpoints: Mapping[str, str] | None = None,
) -> SubcloudRow:
    """Change the software version, management IP and/or given endpoints of a subcloud.

    ``endpoints`` replaces the given URLs as a whole (``{}``: back to the template); the rest of
    ``capabilities`` (``endpoint_types``) is kept.
    """
    m = _fetch(conn, region, for_update=True)
    values: dict[str, Any] = {}
    if software_version is not None:
        values["software_version"] = software_version
    if management_ip is not None:
        values["management_ip"] = management_ip
    if endpoints is not None:
        caps = _capabilities(m)
        caps.pop("endpoints", None)
        if endpoints:
            caps["endpoints"] = dict(endpoints)
        values["capabilities"] = json.dumps(caps)
    if values:
        conn.execute(update(subcloud).where(subcloud.c.id == m["id"]).values(**values))
    return subcloud_row(_fetch(conn, region))


def delete_subcloud(conn: Connection, region: str) -> None:
    """Hard-delete a subcloud with its sync rows, mappings and orch_requests.

    Children deleted explicitly, not by ``ON DELETE CASCADE`` (SQLite needs ``foreign_keys=ON``);
    the next purge removes orphaned jobs. The real system forgets the orch_requests
    (docs/behaviour.md#subcloud-lifecycle, docs/behaviour.md#orphaned-requests-after-delete).
    """
    sid = _fetch(conn, region, for_update=True)["id"]
    conn.execute(delete(subcloud_resource).where(subcloud_resource.c.subcloud_id == sid))
    conn.execute(delete(subcloud_sync).where(subcloud_sync.c.subcloud_id == sid))
    conn.execute(delete(orch_request).where(orch_request.c.target_region_name == region))
    conn.execute(delete(subcloud).where(subcloud.c.id == sid))


def _new_sync_row(sid: int, region: str, endpoint_type: str, now: datetime) -> dict[str, Any]:
    return {
        "subcloud_id": sid,
        "subcloud_name": region,
        "endpoint_type": endpoint_type,
        "sync_request": c.SYNC_REQUEST_NONE,
        "sync_status_reported": c.SYNC_STATUS_NONE,
        "audit_status": c.AUDIT_NONE,
        "created_at": now,
    }


def add_sync_endpoint_types(
    conn: Connection, region: str, endpoint_types: Sequence[str]
) -> SubcloudRow:
    """Add endpoint types to a subcloud's capabilities, each with a fresh sync row.

    Types it already syncs are left alone (their rows keep their state), new ones are appended
    in the given order (docs/behaviour.md#subcloud-lifecycle).
    """
    m = _fetch(conn, region, for_update=True)
    caps = _capabilities(m)
    types = [str(e) for e in caps.get("endpoint_types", ())]
    have = set(
        conn.execute(
            select(subcloud_sync.c.endpoint_type).where(subcloud_sync.c.subcloud_id == m["id"])
        ).scalars()
    )
    now = utcnow()
    missing = [e for e in dict.fromkeys(endpoint_types) if e not in have]
    if missing:
        conn.execute(
            insert(subcloud_sync), [_new_sync_row(m["id"], region, e, now) for e in missing]
        )
    added = [e for e in dict.fromkeys(endpoint_types) if e not in types]
    if added:
        caps["endpoint_types"] = types + added
        conn.execute(
            update(subcloud).where(subcloud.c.id == m["id"]).values(capabilities=json.dumps(caps))
        )
    return subcloud_row(_fetch(conn, region))


def remove_sync_endpoint_types(
    conn: Connection, region: str, endpoint_types: Sequence[str]
) -> SubcloudRow:
    """Drop endpoint types from a subcloud's capabilities and delete their sync rows.

    Types it does not sync are ignored, as upstream does. Their orch_requests stay: the proxies
    record work for the pairs a subcloud syncs, and a re-added type picks up what was left.
    """
    m = _fetch(conn, region, for_update=True)
    gone = set(endpoint_types)
    conn.execute(
        delete(subcloud_sync).where(
            subcloud_sync.c.subcloud_id == m["id"], subcloud_sync.c.endpoint_type.in_(gone)
        )
    )
    caps = _capabilities(m)
    types = [str(e) for e in caps.get("endpoint_types", ())]
    if gone & set(types):
        caps["endpoint_types"] = [e for e in types if e not in gone]
        conn.execute(
            update(subcloud).where(subcloud.c.id == m["id"]).values(capabilities=json.dumps(caps))
        )
    return subcloud_row(_fetch(conn, region))


def request_sync(conn: Connection, endpoint_type: str) -> list[tuple[str, str]]:
    """Every managed subcloud's pair of that endpoint type: ``sync_request = 'requested'``.

    Pairs in progress are left as they are (upstream's ``sync_request``); all the managed pairs
    are returned, so the caller can wake them.
    """
    managed = (
        select(subcloud_sync.c.id, subcloud_sync.c.subcloud_name)
        .join(subcloud, subcloud.c.id == subcloud_sync.c.subcloud_id)
        .where(
            subcloud.c.management_state == c.MANAGEMENT_MANAGED,
            subcloud_sync.c.endpoint_type == endpoint_type,
        )
        .order_by(subcloud_sync.c.subcloud_name)
    )
    rows = conn.execute(managed).all()
    if rows:
        conn.execute(
            update(subcloud_sync)
            .where(
                subcloud_sync.c.id.in_([r.id for r in rows]),
                subcloud_sync.c.sync_request.not_in(
                    (c.SYNC_REQUEST_REQUESTED, c.SYNC_REQUEST_IN_PROGRESS)
                ),
            )
            .values(sync_request=c.SYNC_REQUEST_REQUESTED)
        )
    return [(r.subcloud_name, endpoint_type) for r in rows]


def list_subcloud_syncs(conn: Connection, region: str | None) -> list[SubcloudSyncRow]:
    """Sync rows of one subcloud (or all), ordered by region then endpoint type."""
    stmt = select(subcloud_sync).order_by(
        subcloud_sync.c.subcloud_name, subcloud_sync.c.endpoint_type
    )
    if region is not None:
        _fetch(conn, region)
        stmt = stmt.where(subcloud_sync.c.subcloud_name == region)
    return [sync_row(m) for m in conn.execute(stmt).mappings()]


def update_subcloud_sync(
    conn: Connection, region: str, endpoint_type: str, fields: Mapping[str, Any]
) -> SubcloudSyncRow:
    """Write some columns of one pair's sync row and return the new row."""
    where = (
        subcloud_sync.c.subcloud_name == region,
        subcloud_sync.c.endpoint_type == endpoint_type,
    )
    result = conn.execute(update(subcloud_sync).where(*where).values(**fields))
    if result.rowcount == 0:
        _fetch(conn, region)
        raise SubcloudSyncNotFound(region, endpoint_type)
    return sync_row(conn.execute(select(subcloud_sync).where(*where)).mappings().one())
