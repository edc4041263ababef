"""Units on ``orch_request``: pending work of a pair, state changes, cleanup and purge.

Every query is per pair (region, endpoint type), seeks on ``orch_request_pending_idx``, where
upstream's were global (docs/behaviour.md#global-failed-request-cleanup: one pair's audit
soft-deleted every subcloud's failed requests and scanned the table for the latest failure).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, exists, func, select, update

from dcorch import constants as c
from dcorch.db.rows import PendingRequest, PurgeCounts, RequestUpdate, SubcloudBacklog
from dcorch.db.schema import (
    orch_job,
    orch_request,
    resource,
    subcloud,
    subcloud_resource,
    utcnow,
)


def _joined() -> Any:
    return (
        select(
            orch_request.c.id,
            orch_request.c.uuid,
            orch_request.c.state,
            orch_request.c.try_count,
            orch_request.c.target_region_name,
            orch_request.c.orch_job_id,
            orch_request.c.created_at,
            orch_request.c.updated_at,
            orch_request.c.capabilities,
            orch_job.c.endpoint_type,
            orch_job.c.operation_type,
            orch_job.c.source_resource_id,
            orch_job.c.resource_info,
            orch_job.c.resource_id,
            resource.c.resource_type,
            resource.c.master_id,
        )
        .select_from(orch_request)
        .join(orch_job, orch_job.c.id == orch_request.c.orch_job_id)
        .join(resource, resource.c.id == orch_job.c.resource_id)
    )


def _pending(m: RowMapping) -> PendingRequest:
    return PendingRequest(
        id=m["id"],
        uuid=m["uuid"],
        state=m["state"],
        try_count=m["try_count"],
        target_region_name=m["target_region_name"],
        orch_job_id=m["orch_job_id"],
        endpoint_type=m["endpoint_type"],
        resource_type=m["resource_type"] or "",
        operation_type=m["operation_type"] or "",
        source_resource_id=m["source_resource_id"] or "",
        resource_info=m["resource_info"] or "",
        resource_id=m["resource_id"],
        master_id=m["master_id"] or "",
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        result=_result(m["capabilities"]),
    )


RESULT_KEY = "result"
"""Where a request's result is kept in ``orch_request.capabilities`` (JSON), a column upstream
defines and never fills: no schema change (as ``subcloud.capabilities`` keeps endpoint types)."""


def _result(capabilities: str | None) -> str | None:
    """The stored result; None for none, or for text we did not write (imported rows)."""
    if not capabilities:
        return None
    try:
        caps = json.loads(capabilities)
    except ValueError:
        return None
    value = caps.get(RESULT_KEY) if isinstance(caps, dict) else None
    return value if isinstance(value, str) else None


def result_capabilities(result: str) -> str:
    """The ``orch_request.capabilities`` text that records ``result``."""
    return json.dumps({RESULT_KEY: result})


def pending_requests(
    conn: Connection, region: str, endpoint_type: str, states: Sequence[str], limit: int | None
) -> list[PendingRequest]:
    """Live requests of one pair in the given states, in ``orch_request.id`` order (one query)."""
    stmt = (
        _joined()
        .where(
            orch_request.c.target_region_name == region,
            orch_request.c.deleted == 0,
            orch_request.c.state.in_(list(states)),
            orch_job.c.endpoint_type == endpoint_type,
        )
        .order_by(orch_request.c.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_pending(m) for m in conn.execute(stmt).mappings()]


def update_requests(conn: Connection, updates: Sequence[RequestUpdate]) -> list[int]:
    """Apply state/try_count changes to live requests; returns the ids that were updated.

    Missing ids were soft-deleted (or never existed); skipped, as upstream's "the row vanished".
    """
    now = utcnow()
    done: list[int] = []
    for u in updates:
        values: dict[str, Any] = {"updated_at": now}
        if u.state is not None:
            values["state"] = u.state
            if u.state == c.ORCH_REQUEST_COMPLETED:
                values["deleted"] = 1
                values["deleted_at"] = now
        if u.try_count is not None:
            values["try_count"] = u.try_count
        elif u.try_count_increment:
            values["try_count"] = orch_request.c.try_count + u.try_count_increment
        if u.result is not None:
            values["capabilities"] = result_capabilities(u.result)
        result = conn.execute(
            update(orch_request)
            .where(orch_request.c.id == u.id, orch_request.c.deleted == 0)
            .values(**values)
        )
        if result.rowcount:
            done.append(u.id)
    return done


def later_delete_exists(conn: Connection, region: str, resource_id: int, after_id: int) -> bool:
    """Whether a delete of ``resource_id`` for ``region`` was recorded after request ``after_id``
    and is queued, in progress or completed (completed rows are soft deleted, until the purge).

    Seeks ``orch_request_pending_idx`` on (region, deleted, id > after_id): only the requests
    recorded after that one are read.
    """
    stmt = (
        select(orch_request.c.id)
        .select_from(orch_request.join(orch_job, orch_job.c.id == orch_request.c.orch_job_id))
        .where(
            orch_request.c.target_region_name == region,
            orch_request.c.deleted.in_((0, 1)),
            orch_request.c.id > after_id,
            orch_request.c.state.in_(
                (c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_IN_PROGRESS, c.ORCH_REQUEST_COMPLETED)
            ),
            orch_job.c.resource_id == resource_id,
            orch_job.c.operation_type == c.OPERATION_DELETE,
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def completed_requests(conn: Connection, region: str, limit: int) -> list[PendingRequest]:
    """The region's ``limit`` latest completed requests not yet purged, in id order."""
    stmt = (
        _joined()
        .where(
            orch_request.c.target_region_name == region,
            orch_request.c.deleted == 1,
            orch_request.c.state == c.ORCH_REQUEST_COMPLETED,
        )
        .order_by(orch_request.c.id.desc())
        .limit(limit)
    )
    return [_pending(m) for m in reversed(conn.execute(stmt).mappings().all())]


def _naive_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def _failed_of_pair(region: str, endpoint_type: str) -> tuple[Any, ...]:
    job_of_type = select(orch_job.c.id).where(orch_job.c.endpoint_type == endpoint_type)
    return (
        orch_request.c.target_region_name == region,
        orch_request.c.deleted == 0,
        orch_request.c.state == c.ORCH_REQUEST_FAILED,
        orch_request.c.orch_job_id.in_(job_of_type),
    )


def soft_delete_failed_requests(
    conn: Connection, region: str, endpoint_type: str, older_than: datetime
) -> int:
    """Soft-delete one pair's failed requests last changed at or before ``older_than``."""
    now = utcnow()
    changed = func.coalesce(orch_request.c.updated_at, orch_request.c.created_at)
    result = conn.execute(
        update(orch_request)
        .where(*_failed_of_pair(region, endpoint_type), changed <= _naive_utc(older_than))
        .values(deleted=1, deleted_at=now)
    )
    return int(result.rowcount)


def get_most_recent_failed_request(
    conn: Connection, region: str, endpoint_type: str
) -> PendingRequest | None:
    """The live failed request of one pair changed most recently, or None."""
    stmt = (
        _joined()
        .where(*_failed_of_pair(region, endpoint_type))
        .order_by(orch_request.c.updated_at.desc(), orch_request.c.id.desc())
        .limit(1)
    )
    m = conn.execute(stmt).mappings().first()
    return None if m is None else _pending(m)


def count_requests_by_state(conn: Connection) -> dict[str, int]:
    """Live (not soft-deleted) requests per state."""
    stmt = (
        select(orch_request.c.state, func.count())
        .where(orch_request.c.deleted == 0)
        .group_by(orch_request.c.state)
    )
    return {state: int(n) for state, n in conn.execute(stmt)}


def subcloud_backlogs(conn: Connection, regions: Sequence[str] | None) -> list[SubcloudBacklog]:
    """Every subcloud (or the named ones) with its queued and in-progress requests, by id.

    Two statements whatever the subcloud count: the subclouds, and one grouped count of live
    work (on ``orch_request_state_idx``: few rows are queued or in progress at any time).
    """
    work_states = [c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_IN_PROGRESS]
    counts = select(orch_request.c.target_region_name, func.count()).where(
        orch_request.c.deleted == 0, orch_request.c.state.in_(work_states)
    )
    rows = select(
        subcloud.c.region_name,
        subcloud.c.management_state,
        subcloud.c.availability_status,
        subcloud.c.initial_sync_state,
    ).order_by(subcloud.c.id)
    if regions is not None:
        names = sorted(set(regions))
        counts = counts.where(orch_request.c.target_region_name.in_(names))
        rows = rows.where(subcloud.c.region_name.in_(names))
    grouped = conn.execute(counts.group_by(orch_request.c.target_region_name))
    work = {str(region): int(n) for region, n in grouped}
    return [
        SubcloudBacklog(
            region, management, availability, initial or c.INITIAL_SYNC_NONE, work.get(region, 0)
        )
        for region, management, availability, initial in conn.execute(rows)
    ]


def request_regions(conn: Connection, resource_type: str, master_id: str) -> list[str]:
    """Target regions of every request (completed ones too) of one master resource's jobs.

    One entry per ``orch_request``, in id order: what a proxied change was recorded for.
    """
    stmt = (
        select(orch_request.c.target_region_name)
        .join(orch_job, orch_job.c.id == orch_request.c.orch_job_id)
        .join(resource, resource.c.id == orch_job.c.resource_id)
        .where(resource.c.resource_type == resource_type, resource.c.master_id == master_id)
        .order_by(orch_request.c.id)
    )
    return [str(region) for region in conn.execute(stmt).scalars()]


def purge_deleted(conn: Connection, age_days: float) -> PurgeCounts:
    """Purge old soft-deleted requests, then orphan jobs and resources, in one transaction.

    Per docs/behaviour.md#purge. Live data is never touched: a job with any request row (live or
    soft-deleted) stays, and so does a resource referenced by a job or a subcloud mapping.
    """
    cutoff = utcnow() - timedelta(days=age_days)
    requests = conn.execute(
        delete(orch_request).where(orch_request.c.deleted != 0, orch_request.c.deleted_at < cutoff)
    ).rowcount
    jobs = conn.execute(
        delete(orch_job).where(~exists().where(orch_request.c.orch_job_id == orch_job.c.id))
    ).rowcount
    resources = conn.execute(
        delete(resource).where(
            ~exists().where(orch_job.c.resource_id == resource.c.id),
            ~exists().where(subcloud_resource.c.resource_id == resource.c.id),
        )
    ).rowcount
    return PurgeCounts(orch_requests=int(requests), orch_jobs=int(jobs), resources=int(resources))
