"""The real system's enqueue paths on a synchronous SQLAlchemy ORM session, and the raw floor.

dcorch (the OpenStack service) runs oslo.db sessions on pysqlite / a sync PostgreSQL driver; we
use psycopg 3 for the latter. The ORM classes are mapped imperatively onto dcorch-trio's own
tables so all paths write the very same rows into the very same schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, registry

from dcorch import constants as c
from dcorch.db import schema
from dcorch.work import WorkOrder


class OrmResource:
    """ORM class of ``resource`` (attributes come from the mapping)."""

    id: int


class OrmOrchJob:
    """ORM class of ``orch_job``."""

    id: int


class OrmOrchRequest:
    """ORM class of ``orch_request``."""


class OrmSubcloud:
    """ORM class of ``subcloud``."""

    region_name: str


_registry = registry()
_registry.map_imperatively(OrmResource, schema.resource)
_registry.map_imperatively(OrmOrchJob, schema.orch_job)
_registry.map_imperatively(OrmOrchRequest, schema.orch_request)
_registry.map_imperatively(OrmSubcloud, schema.subcloud)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sync_engine(url: str) -> Engine:
    """A sync engine configured like the real system's (SQLite: WAL, ``synchronous=NORMAL``)."""
    engine = create_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

    return engine


def _resource_and_job(session: Session, order: WorkOrder, now: datetime) -> int:
    """The resource and job steps as upstream does them: look up or add, then a new job.

    See docs/behaviour.md#recording-work.
    """
    res = (
        session.query(OrmResource)
        .filter_by(resource_type=order.resource_type, master_id=order.source_resource_id, deleted=0)
        .first()
    )
    if res is None:
        res = OrmResource()
        for key, value in {
            "uuid": schema.new_uuid(),
            "resource_type": order.resource_type,
            "master_id": order.source_resource_id,
            "created_at": now,
            "deleted": 0,
        }.items():
            setattr(res, key, value)
        session.add(res)
        session.flush()
    job = OrmOrchJob()
    for key, value in {
        "uuid": schema.new_uuid(),
        "user_id": "",
        "project_id": "",
        "endpoint_type": order.endpoint_type,
        "source_resource_id": order.source_resource_id,
        "operation_type": order.operation_type,
        "resource_id": res.id,
        "resource_info": order.resource_info,
        "created_at": now,
        "deleted": 0,
    }.items():
        setattr(job, key, value)
    session.add(job)
    session.flush()
    return int(job.id)


def base_enqueue(engine: Engine, order: WorkOrder) -> tuple[float, int]:
    """(b) base: resource, job, every subcloud, ``bulk_insert_mappings``, one transaction.

    Returns (seconds, rows). Like the real base it does no ``sync_request`` fan-out: the proxy
    notifies the engine separately there.
    """
    t0 = time.perf_counter()
    with Session(engine) as session, session.begin():
        now = _now()
        job_id = _resource_and_job(session, order, now)
        regions = [sc.region_name for sc in session.query(OrmSubcloud).all()]
        mappings = [_request_row(region, job_id, now) for region in regions]
        for m in mappings:  # the base validates every dict before inserting
            if not m.get("orch_job_id") or not m.get("target_region_name"):
                raise ValueError("orch_request mapping without job or region")
        session.bulk_insert_mappings(OrmOrchRequest, mappings)  # type: ignore[arg-type]
    return time.perf_counter() - t0, len(mappings)


def _request_row(region: str, job_id: int, now: Any) -> dict[str, Any]:
    """One queued ``orch_request`` as the ORM baselines write it."""
    return {
        "uuid": schema.new_uuid(),
        "state": c.ORCH_REQUEST_QUEUED,
        "try_count": 0,
        "target_region_name": region,
        "orch_job_id": job_id,
        "created_at": now,
        "deleted": 0,
    }


def old_enqueue(
    engine: Engine, order: WorkOrder, *, cap_rows: int, cap_seconds: float
) -> tuple[float, int, int]:
    """(a) old way: one ORM object, re-read job and commit per subcloud, stopped at a cap.

    Returns (seconds for all subclouds, rows actually written, subclouds). When the cap stopped
    it, the time is extrapolated: setup + measured seconds per row x all subclouds.
    """
    t0 = time.perf_counter()
    with Session(engine) as session:
        now = _now()
        job_id = _resource_and_job(session, order, now)
        regions = [sc.region_name for sc in session.query(OrmSubcloud).all()]
        session.commit()
        t_loop = time.perf_counter()
        written = 0
        for region in regions:
            session.query(OrmOrchJob).filter_by(id=job_id).one()  # the per-request re-read
            req = OrmOrchRequest()
            for key, value in _request_row(region, job_id, now).items():
                setattr(req, key, value)
            session.add(req)
            session.commit()
            written += 1
            if written >= cap_rows or time.perf_counter() - t_loop >= cap_seconds:
                break
        t_end = time.perf_counter()
    setup, loop = t_loop - t0, t_end - t_loop
    total = setup + (loop / written * len(regions) if written else 0.0)
    return total, written, len(regions)


def floor_records(regions: list[str], job_id: int) -> list[tuple[Any, ...]]:
    """The orch_request rows of one fan-out, built before the floor's clock starts."""
    now = _now()
    return [(schema.new_uuid(), c.ORCH_REQUEST_QUEUED, 0, r, job_id, now, 0) for r in regions]


def floor_sqlite(path: str, records: list[tuple[Any, ...]]) -> float:
    """(d) floor on SQLite: ``executemany`` in one transaction on a bare sqlite3 connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        cols = ", ".join(schema.ORCH_REQUEST_COPY_COLUMNS)
        sql = f"INSERT INTO orch_request ({cols}) VALUES ({', '.join('?' * len(records[0]))})"
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sql, records)
        conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def floor_postgres(dsn: str, records: list[tuple[Any, ...]]) -> float:
    """(d) floor on PostgreSQL: asyncpg ``copy_records_to_table`` in plain asyncio."""

    async def run() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "orch_request", records=records, columns=schema.ORCH_REQUEST_COPY_COLUMNS
                )
            return time.perf_counter() - t0
        finally:
            await conn.close()

    return asyncio.run(run())


def floor_job(engine: Engine) -> int:
    """An orch_job row for the floor's requests to reference (not timed)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                schema.orch_job.insert()
                .values(uuid=schema.new_uuid(), endpoint_type="identity", deleted=0)
                .returning(schema.orch_job.c.id)
            ).scalar_one()
        )


def reset_work(engine: Engine) -> None:
    """Remove every job, request and resource and clear sync_request: same sizes every run."""
    with engine.begin() as conn:
        for table in ("orch_request", "subcloud_resource", "orch_job", "resource"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("UPDATE subcloud_sync SET sync_request = 'none'"))
    if engine.dialect.name == "postgresql":
        # Dead tuples of the previous run would otherwise grow the tables run after run.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE orch_request, orch_job, resource, subcloud_sync"))
