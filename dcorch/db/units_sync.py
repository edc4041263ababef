"""Units for group commit and batched reads (``dcorch.db.dispatcher``, ``dcorch.db.reads``).

With aiosqlite a transaction costs several thread crossings (checkout, ``BEGIN``, statements,
``COMMIT``, reset) and SQLite has one writer: at a thousand subclouds the actors' small writes
queued for tens of ms each. So callers share transactions (:func:`run_batch`) and queries too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from dcorch import constants as c
from dcorch.db import units_requests as ur
from dcorch.db import units_resources as rs
from dcorch.db import units_subclouds as us
from dcorch.db.errors import SubcloudNotFound, SubcloudSyncNotFound
from dcorch.db.rows import PendingRequest, RequestUpdate, SubcloudResourceRow, SubcloudSyncRow
from dcorch.db.schema import (
    new_uuid,
    orch_job,
    orch_request,
    resource,
    subcloud,
    subcloud_resource,
    subcloud_sync,
    utcnow,
)
from dcorch.db.units_requests import _joined, _pending
from dcorch.db.units_work import insert_ignore

Op = tuple[Callable[..., Any], tuple[Any, ...]]
"""A unit and its arguments: ``fn(conn, *args)``."""

READ_CHUNK = 400
"""Regions per ``IN (...)`` list (well under SQLite's bound-parameter limit)."""


def run_batch(conn: Connection, ops: Sequence[Op]) -> list[Any]:
    """Run several write units in the caller's single transaction; results in ``ops`` order.

    The units come from different callers (none with two in one batch), so they are independent
    and may run in any order: bulk-capable ones (:data:`BULK`) together in a few statements. All
    or nothing: if one raises, the group writer reruns each alone, so each gets its own outcome.
    """
    results: list[Any] = [None] * len(ops)
    groups: dict[Callable[..., Any], list[int]] = {}
    for i, (fn, args) in enumerate(ops):
        if fn in BULK:
            groups.setdefault(fn, []).append(i)
        else:
            results[i] = fn(conn, *args)
    for fn, indexes in groups.items():
        calls = [ops[i][1] for i in indexes]
        values = BULK[fn](conn, calls) if len(calls) > 1 else [fn(conn, *calls[0])]
        for i, value in zip(indexes, values, strict=True):
            results[i] = value
    return results


def _sequential(conn: Connection, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> Any:
    return [fn(conn, *args) for args in calls]


def _in_chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + READ_CHUNK] for i in range(0, len(values), READ_CHUNK)]


def update_requests_many(
    conn: Connection, calls: Sequence[tuple[Sequence[RequestUpdate]]]
) -> list[list[int]]:
    """:func:`units_requests.update_requests` for many callers: one UPDATE per value shape."""
    updates = [u for (batch,) in calls for u in batch]
    ids = [u.id for u in updates]
    if len(set(ids)) != len(ids):
        return [ur.update_requests(conn, batch) for (batch,) in calls]
    live: set[int] = set()
    for chunk in _in_chunks(ids):
        stmt = select(orch_request.c.id).where(
            orch_request.c.id.in_(chunk), orch_request.c.deleted == 0
        )
        live.update(conn.execute(stmt).scalars())
    now = utcnow()
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for u in updates:
        if u.id not in live:
            continue
        row: dict[str, Any] = {"b_id": u.id, "b_updated_at": now}
        if u.state is not None:
            row["b_state"] = u.state
            if u.state == c.ORCH_REQUEST_COMPLETED:
                row["b_deleted"] = 1
                row["b_deleted_at"] = now
        if u.try_count is not None:
            row["b_try_count"] = u.try_count
        elif u.try_count_increment:
            row["b_increment"] = u.try_count_increment
        if u.result is not None:
            row["b_capabilities"] = ur.result_capabilities(u.result)
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for keys, rows in shapes.items():
        values: dict[str, Any] = {}
        for key in keys:
            if key == "b_increment":
                values["try_count"] = orch_request.c.try_count + bindparam(key)
            elif key != "b_id":
                values[key[2:]] = bindparam(key)
        upd = (
            update(orch_request)
            .where(orch_request.c.id == bindparam("b_id"), orch_request.c.deleted == 0)
            .values(**values)
        )
        conn.execute(upd, rows)
    return [[u.id for u in batch if u.id in live] for (batch,) in calls]


def update_subcloud_sync_many(
    conn: Connection, calls: Sequence[tuple[str, str, dict[str, Any]]]
) -> list[SubcloudSyncRow]:
    """:func:`units_subclouds.update_subcloud_sync` for many pairs: one UPDATE per field set."""
    pairs = [(region, ept) for region, ept, _ in calls]
    if len(set(pairs)) != len(pairs):
        return _sequential(conn, us.update_subcloud_sync, calls)  # type: ignore[no-any-return]
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for region, ept, fields in calls:
        row = {f"b_{k}": v for k, v in fields.items()}
        row["b_region"], row["b_endpoint_type"] = region, ept
        shapes.setdefault(tuple(sorted(fields)), []).append(row)
    for keys, rows in shapes.items():
        upd = (
            update(subcloud_sync)
            .where(
                subcloud_sync.c.subcloud_name == bindparam("b_region"),
                subcloud_sync.c.endpoint_type == bindparam("b_endpoint_type"),
            )
            .values(**{k: bindparam(f"b_{k}") for k in keys})
        )
        conn.execute(upd, rows)
    found: dict[tuple[str, str], SubcloudSyncRow] = {}
    for chunk in _in_chunks(sorted({r for r, _ in pairs})):
        stmt = select(subcloud_sync).where(subcloud_sync.c.subcloud_name.in_(chunk))
        for m in conn.execute(stmt).mappings():
            found[(m["subcloud_name"], m["endpoint_type"])] = us.sync_row(m)
    missing = [p for p in pairs if p not in found]
    if missing:
        raise SubcloudSyncNotFound(*missing[0])  # the group writer retries one by one
    return [found[p] for p in pairs]


def upsert_subcloud_resource_many(
    conn: Connection, calls: Sequence[tuple[str, str, str, str, str | None]]
) -> list[SubcloudResourceRow]:
    """:func:`units_resources.upsert_subcloud_resource` for many mappings in a few statements."""
    keys = [(region, rtype, mid) for region, rtype, mid, _, _ in calls]
    if len(set(keys)) != len(keys):
        return _sequential(conn, rs.upsert_subcloud_resource, calls)  # type: ignore[no-any-return]
    now = utcnow()
    sids: dict[str, int] = {}
    for chunk in _in_chunks(sorted({k[0] for k in keys})):
        stmt = select(subcloud.c.region_name, subcloud.c.id).where(
            subcloud.c.region_name.in_(chunk)
        )
        sids.update((region, int(sid)) for region, sid in conn.execute(stmt))
    for region, _, _ in keys:
        if region not in sids:
            raise SubcloudNotFound(region)  # the group writer retries one by one
    objects = sorted({(rtype, mid) for _, rtype, mid in keys})
    rids = _resource_ids(conn, objects)
    missing = [o for o in objects if o not in rids]
    if missing:
        conn.execute(
            insert_ignore(conn, resource, ("resource_type", "master_id", "deleted")),
            [
                {
                    "uuid": new_uuid(),
                    "resource_type": rtype,
                    "master_id": mid,
                    "created_at": now,
                    "deleted": 0,
                }
                for rtype, mid in missing
            ],
        )
        rids.update(_resource_ids(conn, missing))
    inserts = []
    updates: dict[bool, list[dict[str, Any]]] = {}
    for region, rtype, mid, sub_id, state in calls:
        sid, rid = sids[region], rids[(rtype, mid)]
        inserts.append(
            {
                "uuid": new_uuid(),
                "resource_id": rid,
                "subcloud_id": sid,
                "shared_config_state": c.SHARED_CONFIG_MANAGED if state is None else state,
                "created_at": now,
                "deleted": 0,
                "subcloud_resource_id": sub_id,
            }
        )
        row = {"b_rid": rid, "b_sid": sid, "b_sub_id": sub_id}
        if state is not None:
            row["b_state"] = state
        updates.setdefault(state is not None, []).append(row)
    conn.execute(insert_ignore(conn, subcloud_resource, ("resource_id", "subcloud_id")), inserts)
    for with_state, rows in updates.items():
        values: dict[str, Any] = {"subcloud_resource_id": bindparam("b_sub_id")}
        if with_state:
            values["shared_config_state"] = bindparam("b_state")
        upd = (
            update(subcloud_resource)
            .where(
                subcloud_resource.c.resource_id == bindparam("b_rid"),
                subcloud_resource.c.subcloud_id == bindparam("b_sid"),
            )
            .values(**values)
        )
        conn.execute(upd, rows)
    pairs = {(sids[region], rids[(rtype, mid)]) for region, rtype, mid in keys}
    found: dict[tuple[int, int], SubcloudResourceRow] = {}
    for chunk in _in_chunks(sorted({rid for _, rid in pairs})):
        stmt = rs._mapping_query().where(
            subcloud_resource.c.resource_id.in_(chunk),
            subcloud_resource.c.subcloud_id.in_(sorted({sid for sid, _ in pairs})),
        )
        for m in conn.execute(stmt).mappings():
            found[(m["subcloud_id"], m["resource_id"])] = rs._mapping_row(m)
    return [found[(sids[region], rids[(rtype, mid)])] for region, rtype, mid in keys]


def _resource_ids(
    conn: Connection, objects: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Live resource ids of (type, master id) objects (absent ones are left out)."""
    wanted = set(objects)
    out: dict[tuple[str, str], int] = {}
    for chunk in _in_chunks(sorted({mid for _, mid in objects})):
        stmt = select(resource.c.id, resource.c.resource_type, resource.c.master_id).where(
            resource.c.master_id.in_(chunk), resource.c.deleted == 0
        )
        for rid, rtype, mid in conn.execute(stmt):
            if (rtype, mid) in wanted:
                out[(rtype, mid)] = int(rid)
    return out


BULK: dict[Callable[..., Any], Callable[[Connection, Any], list[Any]]] = {
    ur.update_requests: update_requests_many,
    us.update_subcloud_sync: update_subcloud_sync_many,
    rs.upsert_subcloud_resource: upsert_subcloud_resource_many,
}
"""Units whose calls from many callers run as one bulk call (same results, fewer statements)."""


def pending_requests_many(
    conn: Connection, pairs: Sequence[tuple[str, str]], states: Sequence[str]
) -> dict[tuple[str, str], list[PendingRequest]]:
    """:func:`units_requests.pending_requests` for many (region, endpoint type) pairs at once.

    Each pair asked ([] if none), in id order; one statement per :data:`READ_CHUNK` regions.
    """
    out: dict[tuple[str, str], list[PendingRequest]] = {p: [] for p in pairs}
    regions = sorted({r for r, _ in pairs})
    endpoint_types = sorted({e for _, e in pairs})
    for i in range(0, len(regions), READ_CHUNK):
        stmt = (
            _joined()
            .where(
                orch_request.c.target_region_name.in_(regions[i : i + READ_CHUNK]),
                orch_request.c.deleted == 0,
                orch_request.c.state.in_(list(states)),
                orch_job.c.endpoint_type.in_(endpoint_types),
            )
            .order_by(orch_request.c.id)
        )
        for m in conn.execute(stmt).mappings():
            bucket = out.get((m["target_region_name"], m["endpoint_type"]))
            if bucket is not None:
                bucket.append(_pending(m))
    return out
