"""The database: cancellation, retries, reconnection, error translation, shutdown."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
import trio
from sqlalchemy import Connection, func, insert, select, text

from dcorch.db import Database, DatabaseUnavailable, IntegrityConflict, open_database
from dcorch.db.schema import orch_job, orch_request, service
from dcorch.settings import DatabaseSettings
from dcorch.work import WorkOrder
from tests.db.conftest import FAST, make_eligible

BIG = 2000


def _seed_eligible(conn: Connection, n: int) -> None:
    """Bulk-create ``n`` eligible subclouds with their identity sync rows (fast seeding)."""
    rows = [
        {
            "uuid": f"00000000-0000-4000-8000-{i:012d}",
            "region_name": f"sc{i}",
            "management_state": "managed",
            "availability_status": "online",
            "initial_sync_state": "completed",
            "subsequent_sync": True,
            "capabilities": '{"endpoint_types": ["identity"]}',
            "deleted": 0,
        }
        for i in range(n)
    ]
    from dcorch.db.schema import subcloud, subcloud_sync

    conn.execute(insert(subcloud), rows)
    ids = conn.execute(select(subcloud.c.id, subcloud.c.region_name)).all()
    conn.execute(
        insert(subcloud_sync),
        [
            {"subcloud_id": sid, "subcloud_name": region, "endpoint_type": "identity"}
            for sid, region in ids
        ],
    )


def _counts(conn: Connection) -> tuple[int, int]:
    jobs = conn.execute(select(func.count()).select_from(orch_job)).scalar_one()
    reqs = conn.execute(select(func.count()).select_from(orch_request)).scalar_one()
    return int(jobs), int(reqs)


async def test_cancelled_caller_leaves_no_half_transaction(db: Database) -> None:
    await db.run(_seed_eligible, BIG)
    orders = [WorkOrder("identity", "users", f"u{i}", "post") for i in range(5)]
    with trio.move_on_after(0.01) as scope:
        await db.enqueue_work(orders)
    assert scope.cancelled_caught
    assert db.statistics().in_flight == 1  # the unit is still running, shielded
    # Writable at once, and the cancelled unit either fully committed or fully absent.
    with trio.fail_after(10):
        await db.enqueue_work([WorkOrder("identity", "users", "after", "post")])
    jobs, reqs = await db.run(_counts)
    assert (jobs, reqs) in {(1, BIG), (6, 6 * BIG)}


async def test_cancelled_caller_waiting_for_a_mailbox_slot(db_url: str) -> None:
    settings = DatabaseSettings(mailbox_size=0, pool_size=1, max_overflow=0)
    async with open_database(db_url, database=settings) as db:
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(db.add_subcloud, f"sc{i}")
            nursery.cancel_scope.cancel()
        # Some adds may have gone through; the actor is healthy either way.
        await db.add_subcloud("last")
        assert (await db.get_subcloud("last")).region_name == "last"
        assert db.statistics().in_flight == 0


def _lock_briefly(path: str, started: threading.Event, hold: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    started.set()
    time.sleep(hold)
    conn.execute("COMMIT")
    conn.close()


async def test_sqlite_lock_is_retried_until_released(sqlite_url: str) -> None:
    db_url = sqlite_url
    path = db_url.split(":///", 1)[1]
    settings = DatabaseSettings(
        sqlite_busy_timeout_ms=20, retry_attempts=30, retry_backoff=0.01, retry_backoff_max=0.05
    )
    async with open_database(db_url, database=settings) as db:
        started = threading.Event()
        locker = threading.Thread(target=_lock_briefly, args=(path, started, 0.4))
        locker.start()
        await trio.to_thread.run_sync(started.wait)
        await db.add_subcloud("sc1")  # waits out the lock through retries
        await trio.to_thread.run_sync(locker.join)
        assert db.statistics().retries >= 1
        assert (await db.get_subcloud("sc1")).region_name == "sc1"


async def test_persistent_lock_becomes_database_unavailable(sqlite_url: str) -> None:
    db_url = sqlite_url
    path = db_url.split(":///", 1)[1]
    settings = DatabaseSettings(sqlite_busy_timeout_ms=10, retry_attempts=3, retry_backoff=0.01)
    async with open_database(db_url, database=settings) as db:
        started = threading.Event()
        locker = threading.Thread(target=_lock_briefly, args=(path, started, 1.0))
        locker.start()
        await trio.to_thread.run_sync(started.wait)
        with pytest.raises(DatabaseUnavailable, match=r"^add_subcloud failed after 3 attempts"):
            await db.add_subcloud("sc1")
        await trio.to_thread.run_sync(locker.join)
        await db.add_subcloud("sc1")


def _kill_others(conn: Connection) -> int:
    sql = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return int(conn.execute(text(sql)).scalar_one())


@pytest.mark.postgres
async def test_postgres_connections_dropped_by_the_server(postgres_url: str) -> None:
    url = postgres_url
    async with open_database(url, database=FAST) as db, open_database(url) as killer:
        await make_eligible(db, "a")
        async with trio.open_nursery() as nursery:  # put several connections in the pool
            for _ in range(3):
                nursery.start_soon(db.list_subclouds)
        assert await killer.run(_kill_others) >= 1
        # Every pooled connection of `db` is dead now; the next units must just work.
        await db.enqueue_work([WorkOrder("identity", "users", "u1", "post")])
        assert len(await db.pending_requests("a", "identity")) == 1


def _insert_service(conn: Connection, sid: str) -> None:
    conn.execute(insert(service).values(id=sid, host="h"))


def _boom(conn: Connection) -> Any:
    raise KeyError("bug in a unit")


async def test_errors_are_typed_and_bugs_pass_through(db: Database) -> None:
    await db.run(_insert_service, "s1")
    with pytest.raises(IntegrityConflict):
        await db.run(_insert_service, "s1")
    with pytest.raises(KeyError, match="bug in a unit"):
        await db.run(_boom)
    assert db.statistics().retries == 0
    assert repr(db).startswith(f"<Database {db.backend} orders 0 writes 0 in-flight 0 units ")


async def test_closed_database_raises_unavailable(db_url: str) -> None:
    async with open_database(db_url, database=FAST) as db:
        pass
    with pytest.raises(DatabaseUnavailable, match=r"^the database is closed$"):
        await db.list_subclouds()


async def test_many_concurrent_units(db: Database) -> None:
    await make_eligible(db, "a")
    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(db.enqueue_work, [WorkOrder("identity", "users", f"u{i}", "post")])
            nursery.start_soon(db.pending_requests, "a", "identity")
    assert len(await db.pending_requests("a", "identity")) == 40
