"""Enqueue latency at scale: one WorkOrder fanned out to N eligible subclouds.

Run: ``.venv/bin/python -m bench.db_bench [--runs 5] [--sizes 1000,5000,10000]``

For each backend (SQLite file; PostgreSQL at 127.0.0.1:5432 in a throwaway database when it
answers) and each N it prints the median wall time of ``Database.enqueue_work([order])`` as a Trio
caller sees it (mailbox, asyncio bridge, resource + job + N requests + the sync_request fan-out,
commit), next to the plain driver inserting the same N orch_request rows in one transaction
(sqlite3 ``executemany`` / asyncpg ``copy_records_to_table`` in plain asyncio), and the ratio.
PostgreSQL is ``ANALYZE``d after seeding (stack.md 3.4).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import trio
from sqlalchemy import Connection, delete, func, insert, select, text

from dcorch.db import migrate, open_database
from dcorch.db.schema import (
    ORCH_REQUEST_COPY_COLUMNS,
    orch_job,
    orch_request,
    subcloud,
    subcloud_sync,
)
from dcorch.work import WorkOrder

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ORDER = WorkOrder("identity", "users", "bench-user", "post", '{"user": {"name": "x"}}')


def _seed_to(conn: Connection, n: int) -> None:
    have = int(conn.execute(select(func.count()).select_from(subcloud)).scalar_one())
    if have >= n:
        return
    rows = [
        {
            "uuid": str(uuid.uuid4()),
            "region_name": f"subcloud{i}",
            "management_state": "managed",
            "availability_status": "online",
            "initial_sync_state": "completed",
            "subsequent_sync": True,
            "capabilities": '{"endpoint_types": ["platform", "identity"]}',
            "deleted": 0,
        }
        for i in range(have + 1, n + 1)
    ]
    conn.execute(insert(subcloud), rows)
    new = conn.execute(
        select(subcloud.c.id, subcloud.c.region_name).where(subcloud.c.id > have)
    ).all()
    conn.execute(
        insert(subcloud_sync),
        [
            {"subcloud_id": sid, "subcloud_name": region, "endpoint_type": ept, "deleted": 0}
            for sid, region in new
            for ept in ("platform", "identity")
        ],
    )


def _reset_work(conn: Connection) -> None:
    conn.execute(delete(orch_request))
    conn.execute(delete(orch_job))
    conn.execute(text("UPDATE subcloud_sync SET sync_request = 'none'"))


def _analyze(conn: Connection) -> None:
    conn.execute(text("ANALYZE"))


def _a_job(conn: Connection) -> int:
    """One orch_job row the raw inserts can reference."""
    return int(
        conn.execute(
            insert(orch_job)
            .values(uuid=str(uuid.uuid4()), endpoint_type="identity", deleted=0)
            .returning(orch_job.c.id)
        ).scalar_one()
    )


async def _dcorch_runs(url: str, n: int, runs: int, pg: bool) -> tuple[list[float], int]:
    times: list[float] = []
    async with open_database(url) as db:
        await db.run(_seed_to, n)
        if pg:
            await db.run(_analyze)
        for _ in range(runs):
            await db.run(_reset_work)
            t0 = time.perf_counter()
            [result] = await db.enqueue_work([ORDER])
            times.append(time.perf_counter() - t0)
            assert len(result.target_regions) == n, (len(result.target_regions), n)
        await db.run(_reset_work)
        job_id = await db.run(_a_job)
    return times, job_id


def _records(n: int, job_id: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        (str(uuid.uuid4()), "queued", 0, f"subcloud{i}", job_id, now, 0) for i in range(1, n + 1)
    ]


def _raw_sqlite(path: str, n: int, job_id: int, runs: int) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    cols = ", ".join(ORCH_REQUEST_COPY_COLUMNS)
    sql = f"INSERT INTO orch_request ({cols}) VALUES ({', '.join('?' * 7)})"
    times = []
    for _ in range(runs):
        conn.execute("DELETE FROM orch_request")
        records = _records(n, job_id)
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sql, records)
        conn.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    conn.execute("DELETE FROM orch_request")
    conn.close()
    return times


def _raw_pg(dsn: str, n: int, job_id: int, runs: int) -> list[float]:
    async def main() -> list[float]:
        conn = await asyncpg.connect(dsn)
        times = []
        try:
            for _ in range(runs):
                await conn.execute("DELETE FROM orch_request")
                records = _records(n, job_id)
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "orch_request", records=records, columns=ORCH_REQUEST_COPY_COLUMNS
                    )
                times.append(time.perf_counter() - t0)
            await conn.execute("DELETE FROM orch_request")
        finally:
            await conn.close()
        return times

    return asyncio.run(main())


def _pg_admin(sql: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(main())


def _bench_backend(
    name: str, url: str, raw: Callable[[int, int, int], list[float]], sizes: list[int], runs: int
) -> list[tuple[str, int, float, float]]:
    migrate.upgrade(url)
    rows = []
    for n in sizes:
        times, job_id = trio.run(_dcorch_runs, url, n, runs, name == "postgresql")
        raw_times = raw(n, job_id, runs)
        rows.append((name, n, statistics.median(times), statistics.median(raw_times)))
        print(f"  {name} N={n}: done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,5000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        rows += _bench_backend(
            "sqlite",
            f"sqlite+aiosqlite:///{path}",
            lambda n, job, runs: _raw_sqlite(path, n, job, runs),
            sizes,
            args.runs,
        )
    try:
        _pg_admin("SELECT 1")
    except Exception as exc:  # unreachable server: SQLite only
        print(f"PostgreSQL skipped: {exc}")
    else:
        name = f"dcorch_bench_{uuid.uuid4().hex[:8]}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
            rows += _bench_backend(
                "postgresql",
                f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
                lambda n, job, runs: _raw_pg(dsn, n, job, runs),
                sizes,
                args.runs,
            )
        finally:
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print()
    print(f"one enqueue_work([order]) vs plain driver insert, median of {args.runs} runs")
    print("| backend | eligible subclouds | dcorch enqueue (ms) | plain driver (ms) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for backend, n, ours, raw in rows:
        print(f"| {backend} | {n} | {ours * 1e3:.1f} | {raw * 1e3:.1f} | {ours / raw:.2f}x |")


if __name__ == "__main__":
    main()
