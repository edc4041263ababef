"""The enqueue unit: work orders become resource, orch_job and orch_request rows.

See docs/behaviour.md#recording-work. One call records one or many orders in one transaction
(so the dispatcher can group commit), in statements that do not grow with orders or subclouds:

1. resources: one ``SELECT`` per resource type, one ``INSERT ... ON CONFLICT DO NOTHING`` for the
   missing ones, one re-``SELECT`` of those (why: see :func:`_resolve_resources`);
2. targets: per endpoint type one query for eligible subclouds (HEAD rule b303d0ab: managed,
   online, initial sync done, with a sync row of that type, or it never runs), one for named ones;
3. orch_jobs: one insert with ``RETURNING`` in parameter order (insertmanyvalues);
4. orch_requests: one executemany (SQLite) or one asyncpg ``COPY`` (PostgreSQL);
5. ``subcloud_sync.sync_request = 'requested'`` for targeted pairs not yet requested, one
   ``UPDATE`` per endpoint type; unlike HEAD, even ``in-progress`` ones: actors re-read pending
   requests after each run, so it runs again (no lost wake-up, docs/behaviour.md#lost-wake-up).

An unknown named subcloud raises :class:`SubcloudNotFound`: no order of the batch commits.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dcorch import constants as c
from dcorch.db.errors import SubcloudNotFound
from dcorch.db.schema import (
    ORCH_REQUEST_COPY_COLUMNS,
    new_uuid,
    orch_job,
    orch_request,
    resource,
    subcloud,
    subcloud_sync,
    utcnow,
)
from dcorch.work import EnqueueResult, WorkOrder

_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy's SQLite dialect writes a DateTime (so raw inserts read back the same)."""

_CHUNK = 500
"""Largest ``IN`` list sent at once (SQLite's default variable limit is far above)."""


def enqueue_work(conn: Connection, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
    """Record ``orders`` in the current transaction; results are in the orders' order.

    An already recorded ``job_uuid`` returns its existing job: a retried enqueue is idempotent.
    """
    if not orders:
        return []
    done = _recorded_jobs(conn, [o.job_uuid for o in orders if o.job_uuid is not None])
    fresh = [o for o in orders if o.job_uuid is None or o.job_uuid not in done]
    written = iter(_record(conn, fresh) if fresh else [])
    return [
        done[o.job_uuid] if o.job_uuid is not None and o.job_uuid in done else next(written)
        for o in orders
    ]


def _recorded_jobs(conn: Connection, job_uuids: list[str]) -> dict[str, EnqueueResult]:
    found: dict[str, EnqueueResult] = {}
    for chunk in _chunks(sorted(set(job_uuids))):
        jobs = conn.execute(
            select(orch_job.c.id, orch_job.c.uuid, orch_job.c.resource_id).where(
                orch_job.c.uuid.in_(chunk)
            )
        ).all()
        for job_id, job_uuid, resource_id in jobs:
            regions = conn.execute(
                select(orch_request.c.target_region_name)
                .where(orch_request.c.orch_job_id == job_id)
                .order_by(orch_request.c.id)
            ).scalars()
            found[job_uuid] = EnqueueResult(job_id, resource_id, tuple(regions))
    return found


def _record(conn: Connection, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
    now = utcnow()
    resource_ids = _resolve_resources(conn, orders, now)
    named = _named_subclouds(conn, {o.subcloud for o in orders if o.subcloud is not None})
    eligible = {
        ept: _eligible_subclouds(conn, ept)
        for ept in sorted({o.endpoint_type for o in orders if o.subcloud is None})
    }
    job_rows: list[dict[str, Any]] = [
        {
            "uuid": o.job_uuid or new_uuid(),
            "user_id": "",
            "project_id": "",
            "endpoint_type": o.endpoint_type,
            "source_resource_id": o.source_resource_id,
            "operation_type": o.operation_type,
            "resource_id": resource_ids[(o.resource_type, o.source_resource_id)],
            "resource_info": o.resource_info,
            "created_at": now,
            "deleted": 0,
        }
        for o in orders
    ]
    job_ids = list(
        conn.execute(
            insert(orch_job).returning(orch_job.c.id, sort_by_parameter_order=True), job_rows
        ).scalars()
    )
    results: list[EnqueueResult] = []
    requests: list[tuple[Any, ...]] = []
    named_pairs: dict[str, set[int]] = defaultdict(set)
    broadcast: set[str] = set()
    for order, job_id, job in zip(orders, job_ids, job_rows, strict=True):
        if order.subcloud is not None:
            sid = named[order.subcloud]
            targets: Sequence[tuple[int, str]] = [(sid, order.subcloud)]
            named_pairs[order.endpoint_type].add(sid)
        else:
            targets = eligible[order.endpoint_type]
            if targets:
                broadcast.add(order.endpoint_type)
        uuids = _uuids(len(targets))
        requests.extend(
            (u, c.ORCH_REQUEST_QUEUED, 0, region, job_id, now, 0)
            for u, (_, region) in zip(uuids, targets, strict=True)
        )
        results.append(
            EnqueueResult(
                orch_job_id=job_id,
                resource_id=job["resource_id"],
                target_regions=tuple(region for _, region in targets),
            )
        )
    _insert_requests(conn, requests)
    for ept in sorted(broadcast):
        _mark_requested(conn, ept, subcloud_sync.c.subcloud_id.in_(_eligible_ids(ept)))
        named_pairs.pop(ept, None)  # the broadcast covers every targeted pair of this type
    for ept, ids in sorted(named_pairs.items()):
        for chunk in _chunks(sorted(ids)):
            _mark_requested(conn, ept, subcloud_sync.c.subcloud_id.in_(chunk))
    return results


def _resolve_resources(
    conn: Connection, orders: Sequence[WorkOrder], now: Any
) -> dict[tuple[str, str], int]:
    keys = {(o.resource_type, o.source_resource_id) for o in orders}
    found = _find_resources(conn, keys)
    # Upstream's resource step (docs/behaviour.md#recording-work) inserts first for create/patch,
    # looks up first otherwise; with ON CONFLICT DO NOTHING both end with one live row per key, so
    # one lookup-then-insert serves both (and a concurrent creator cannot make it fail).
    missing = sorted(keys - found.keys())
    if missing:
        rows = [
            {
                "uuid": new_uuid(),
                "resource_type": t,
                "master_id": m,
                "created_at": now,
                "deleted": 0,
            }
            for t, m in missing
        ]
        conn.execute(insert_ignore(conn, resource, ("resource_type", "master_id", "deleted")), rows)
        found.update(_find_resources(conn, set(missing)))
    return found


def _find_resources(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    by_type: dict[str, list[str]] = defaultdict(list)
    for rtype, master_id in keys:
        by_type[rtype].append(master_id)
    found: dict[tuple[str, str], int] = {}
    for rtype, master_ids in sorted(by_type.items()):
        for chunk in _chunks(sorted(master_ids)):
            stmt = select(resource.c.id, resource.c.master_id).where(
                resource.c.resource_type == rtype,
                resource.c.deleted == 0,
                resource.c.master_id.in_(chunk),
            )
            for rid, master_id in conn.execute(stmt):
                found[(rtype, master_id)] = rid
    return found


def insert_ignore(conn: Connection, table: Any, conflict_cols: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))


def _named_subclouds(conn: Connection, regions: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(regions)):
        stmt = select(subcloud.c.region_name, subcloud.c.id).where(
            subcloud.c.region_name.in_(chunk)
        )
        found.update((region, sid) for region, sid in conn.execute(stmt))
    unknown = sorted(regions - found.keys())
    if unknown:
        raise SubcloudNotFound(unknown[0])
    return found


def _eligible_filter() -> Any:
    return and_(
        subcloud.c.management_state == c.MANAGEMENT_MANAGED,
        subcloud.c.availability_status == c.AVAILABILITY_ONLINE,
        subcloud.c.initial_sync_state == c.INITIAL_SYNC_COMPLETED,
    )


def _eligible_ids(endpoint_type: str) -> Any:
    """Ids of eligible subclouds owning a sync row of that endpoint type (a subquery)."""
    # Correlated on (subcloud_name, endpoint_type), the unique index of subcloud_sync, as the
    # real system joins; on subcloud_id SQLite would scan the table once per subcloud (O(N^2)).
    has_pair = exists().where(
        subcloud_sync.c.subcloud_name == subcloud.c.region_name,
        subcloud_sync.c.endpoint_type == endpoint_type,
    )
    return select(subcloud.c.id).where(_eligible_filter(), has_pair)


def _eligible_subclouds(conn: Connection, endpoint_type: str) -> list[tuple[int, str]]:
    stmt = (
        select(subcloud.c.id, subcloud.c.region_name)
        .where(subcloud.c.id.in_(_eligible_ids(endpoint_type)))
        .order_by(subcloud.c.id)
    )
    return [(sid, region) for sid, region in conn.execute(stmt)]


def _mark_requested(conn: Connection, endpoint_type: str, which: Any) -> None:
    conn.execute(
        update(subcloud_sync)
        .where(
            subcloud_sync.c.endpoint_type == endpoint_type,
            subcloud_sync.c.sync_request != c.SYNC_REQUEST_REQUESTED,
            which,
        )
        .values(sync_request=c.SYNC_REQUEST_REQUESTED)
    )


def _insert_requests(conn: Connection, records: list[tuple[Any, ...]]) -> None:
    if not records:
        return
    if conn.dialect.driver == "asyncpg":
        # COPY is 2-2.5x faster than executemany. Earlier statements of this unit already opened
        # the transaction on the asyncpg side, so the COPY rolls back with it
        # (docs/database.md#pitfalls, "COPY before any SQLAlchemy statement").
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.run_async(  # type: ignore[attr-defined]
            lambda pg: pg.copy_records_to_table(
                "orch_request", records=records, columns=ORCH_REQUEST_COPY_COLUMNS
            )
        )
        return
    # SQLite: the same tuples straight to the driver's executemany. Core's insert() would
    # build a dict and run the DateTime processor per row, which cost as much as the insert
    # itself at 5,000 rows; the text form below is the one SQLAlchemy stores and reads back.
    created = records[0][5].strftime(_SQLITE_DATETIME)
    columns = ", ".join(ORCH_REQUEST_COPY_COLUMNS)
    marks = ", ".join("?" * len(ORCH_REQUEST_COPY_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO orch_request ({columns}) VALUES ({marks})",
        [(*r[:5], created, *r[6:]) for r in records],
    )


def _uuids(n: int) -> list[str]:
    """``n`` time-ordered (version 7, RFC 9562) uuids as text, consecutive within one call.

    Random uuid4s land all over the unique index of ``orch_request.uuid``: every insert touches a
    cold B-tree page and bulk inserts slow as the table grows (SQLite, 50,000 rows: 1.2 s to 2.0 s
    over four batches; with these a steady 1.0-1.1 s). A millisecond timestamp prefix and a
    counter append each batch at the end; ``str(uuid.uuid4())`` also costs ~2 µs each.
    """
    millis = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
    head = f"{(millis << 16) | (0x7 << 12) | (int.from_bytes(os.urandom(2), 'big') & 0xFFF):016x}"
    prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-"
    start = int.from_bytes(os.urandom(8), "big") >> 2
    mask = (1 << 62) - 1
    variant = 0b10 << 62
    out = []
    for i in range(n):
        low = f"{variant | ((start + i) & mask):016x}"
        out.append(f"{prefix}{low[:4]}-{low[4:]}")
    return out


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
