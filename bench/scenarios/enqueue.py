"""Scenario 1: enqueue cost of one proxied command fanned out to N eligible subclouds.

Four paths write the same rows into the same seeded schema, interleaved within each repetition
(so drift of the VM hits all of them alike), with the work tables emptied before every run:

* ``old``   the real system before base: ORM object + commit per subcloud (capped, extrapolated);
* ``base``  the real system's base: sync ORM session, ``bulk_insert_mappings``, one transaction;
* ``ours``  ``await db.enqueue_work([order])`` through the database, timed by the caller;
* ``floor`` the raw driver writing only the orch_request rows (sqlite3 / asyncpg COPY).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from sqlalchemy import Connection, func, select, text

from bench.backends import Backend
from bench.progress import Progress
from bench.scenarios import baselines as bl
from bench.stats import median, ratio
from dcorch import constants as c
from dcorch.db import open_database
from dcorch.db.schema import subcloud
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.db.units_work import enqueue_work
from dcorch.work import WorkOrder

METHODS = ("floor", "ours", "base", "old")
ORDER = WorkOrder(
    c.ENDPOINT_TYPE_IDENTITY, c.RESOURCE_USERS, "bench-user-id", c.OPERATION_POST, '{"user": {}}'
)


@dataclass
class EnqueueResult:
    """One (backend, N, method) cell: every run's seconds, the median and its ratio to floor."""

    backend: str
    subclouds: int
    method: str
    times_s: list[float]
    median_s: float = 0.0
    ratio_to_floor: float = 0.0
    extrapolated: bool = False
    rows_written: int = 0
    notes: list[str] = field(default_factory=list)


def seed_to(conn: Connection, n: int) -> int:
    """Grow the eligible subclouds to ``n`` with dcorch's bulk seeding unit; returns the count."""
    have = int(conn.execute(select(func.count()).select_from(subcloud)).scalar_one())
    if have < n:
        seed_eligible_subclouds(conn, [f"subcloud{i}" for i in range(have + 1, n + 1)])
    return max(have, n)


def _analyze(conn: Connection) -> None:
    conn.execute(text("ANALYZE"))


async def run_enqueue(
    backend: Backend,
    sizes: list[int],
    runs: int,
    *,
    old_cap_rows: int,
    old_cap_seconds: float,
    progress: Progress | None = None,
) -> list[EnqueueResult]:
    """Measure the four paths at each size; ratios are computed from the measured medians."""
    engine = bl.sync_engine(backend.sync_url)
    caps = (old_cap_rows, old_cap_seconds)
    out: list[EnqueueResult] = []
    try:
        async with open_database(backend.url) as db:
            for n in sorted(sizes):
                await db.run(seed_to, n)
                if backend.name == "postgresql":
                    # Statistics after a bulk load (docs/database.md#pitfalls).
                    await db.run(_analyze)
                regions = [f"subcloud{i}" for i in range(1, n + 1)]
                cells = {m: EnqueueResult(backend.name, n, m, []) for m in METHODS}
                for _ in range(runs):
                    for method in METHODS:
                        await trio.to_thread.run_sync(bl.reset_work, engine)
                        seconds = await _one(
                            method, db, backend, engine, regions, cells[method], caps
                        )
                        cells[method].times_s.append(seconds)
                        if progress:
                            progress.step(f"{backend.name} N={n} {method}")
                await trio.to_thread.run_sync(bl.reset_work, engine)
                floor = median(cells["floor"].times_s)
                for cell in cells.values():
                    cell.median_s = median(cell.times_s)
                    cell.ratio_to_floor = ratio(cell.median_s, floor)
                out.extend(cells.values())
    finally:
        engine.dispose()
    return out


async def _one(
    method: str,
    db: Any,
    backend: Backend,
    engine: Any,
    regions: list[str],
    cell: EnqueueResult,
    caps: tuple[int, float],
) -> float:
    n = len(regions)
    if method == "ours":
        t0 = time.perf_counter()
        [result] = await db.enqueue_work([ORDER])
        seconds = time.perf_counter() - t0
        if len(result.target_regions) != n:
            raise AssertionError(f"ours targeted {len(result.target_regions)} of {n}")
        cell.rows_written = n
        return seconds
    if method == "base":
        seconds, rows = await trio.to_thread.run_sync(bl.base_enqueue, engine, ORDER)
        if rows != n:
            raise AssertionError(f"base wrote {rows} of {n}")
        cell.rows_written = rows
        return float(seconds)
    if method == "old":
        total, written, subclouds = await trio.to_thread.run_sync(
            lambda: bl.old_enqueue(engine, ORDER, cap_rows=caps[0], cap_seconds=caps[1])
        )
        cell.extrapolated = cell.extrapolated or written < subclouds
        cell.rows_written = written
        return float(total)
    job_id = await trio.to_thread.run_sync(bl.floor_job, engine)
    records = bl.floor_records(regions, job_id)
    floor_fn = bl.floor_sqlite if backend.name == "sqlite" else bl.floor_postgres
    cell.rows_written = n
    return float(await trio.to_thread.run_sync(floor_fn, backend.raw, records))


def _profiled_unit(conn: Connection, orders: tuple[WorkOrder, ...], prof: cProfile.Profile) -> Any:
    prof.enable()
    try:
        return enqueue_work(conn, orders)
    finally:
        prof.disable()


def _statement_timer(conn: Connection, orders: tuple[WorkOrder, ...]) -> list[tuple[str, float]]:
    """Run the unit recording each statement's wall time (cursor execute to result)."""
    from sqlalchemy import event

    timings: list[tuple[str, float]] = []
    starts: list[float] = []

    def before(*_a: Any) -> None:
        starts.append(time.perf_counter())

    def after(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        timings.append((" ".join(statement.split())[:90], time.perf_counter() - starts.pop()))

    event.listen(conn, "before_cursor_execute", before)
    event.listen(conn, "after_cursor_execute", after)
    try:
        t0 = time.perf_counter()
        enqueue_work(conn, orders)
        timings.append(("(whole unit incl. COPY/python)", time.perf_counter() - t0))
    finally:
        event.remove(conn, "before_cursor_execute", before)
        event.remove(conn, "after_cursor_execute", after)
    return timings


async def profile_enqueue(backend: Backend, n: int, *, top: int = 18) -> str:
    """Where the time of ``ours`` goes at ``n``: per-statement times and a cProfile of the unit.

    The profiler is enabled on the asyncio thread inside the unit itself, so it sees the Core
    statements, the driver awaits (via the greenlet) and our Python, not the Trio side.
    """
    engine = bl.sync_engine(backend.sync_url)
    lines: list[str] = []
    try:
        async with open_database(backend.url) as db:
            await db.run(seed_to, n)
            if backend.name == "postgresql":
                await db.run(_analyze)
            await trio.to_thread.run_sync(bl.reset_work, engine)
            await db.enqueue_work([ORDER])  # warm caches and statement compilation
            await trio.to_thread.run_sync(bl.reset_work, engine)
            t0 = time.perf_counter()
            timings = await db.run(_statement_timer, (ORDER,))
            caller = time.perf_counter() - t0
            lines.append(f"{backend.name} N={n}: caller-side {caller * 1e3:.1f} ms")
            lines += [f"  {sec * 1e3:8.2f} ms  {stmt}" for stmt, sec in timings]
            await trio.to_thread.run_sync(bl.reset_work, engine)
            prof = cProfile.Profile()
            await db.run(_profiled_unit, (ORDER,), prof)
            await trio.to_thread.run_sync(bl.reset_work, engine)
    finally:
        engine.dispose()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    body = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    return "\n".join(
        lines + ["  cProfile of the unit (cumulative):"] + ["  " + b for b in body[-top - 1 :]]
    )
