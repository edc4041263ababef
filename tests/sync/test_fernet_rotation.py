"""The periodic fernet key rotation: its schedule, the work it records, and the command rotator.

Schedule tests run under ``MockClock`` against a real database (SQLite and PostgreSQL): nothing
before one interval, the rotation at exactly the interval with one ``fernet_repo`` ``put`` job
and one request per eligible subcloud, the next exactly one period later. The command tests
run real small scripts (real time: a child process is not virtual).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import Connection, select

from dcorch import constants as c
from dcorch.db import Database, open_database
from dcorch.db.schema import orch_job
from dcorch.remote.errors import MasterUnavailable
from dcorch.sim.state import Platform
from dcorch.sim.tokens import new_fernet_key
from dcorch.sync.fernet_rotation import CommandRotator, FernetRotation, RotationFailed
from dcorch.work import EnqueueResult, Overloaded, WorkOrder
from tests.db.conftest import (  # noqa: F401 - fixtures
    make_eligible,
    pg_server,
    pg_session_url,
    postgres_url,
)
from tests.sync.conftest import FAST_DB

INTERVAL = 168 * 3600.0
ELIGIBLE = ("sc1", "sc2")
NOT_ELIGIBLE = "sc3"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, db_url: str) -> str:
    return db_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Database]:
    """Two enabled subclouds and one registered but never managed."""
    async with open_database(store_url, database=FAST_DB) as database:
        await make_eligible(database, *ELIGIBLE)
        await database.add_subcloud(NOT_ELIGIBLE, software_version="24.09")
        yield database


class Master:
    """A master key repository and its rotator; notes when each rotation ran (trio time)."""

    def __init__(self) -> None:
        self.platform = Platform({}, {0: new_fernet_key(), 1: new_fernet_key()})
        self.times: list[float] = []
        self.failures_left = 0
        self.keys_down = False
        self.rotated = Progress()

    async def rotate(self) -> None:
        await trio.lowlevel.checkpoint()
        self.times.append(trio.current_time())
        self.rotated.step()
        if self.failures_left:
            self.failures_left -= 1
            raise RotationFailed("keystone-fernet-keys-rotate-active exited with status 1")
        self.platform.rotate_fernet_keys()

    async def keys(self) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        if self.keys_down:
            url = "http://master/v1/fernet_repo"
            raise MasterUnavailable("sysinv", url, "ConnectError", retry_at=0.0)
        return [{"id": i, "key": k} for i, k in sorted(self.platform.fernet_keys.items())]

    def info(self) -> dict[str, str]:
        """The resource_info a job for the current repository carries."""
        return {str(i): k for i, k in sorted(self.platform.fernet_keys.items())}


class Progress:
    """A counter a test can wait on without sleeping (sleeping would move the virtual clock)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = trio.Event()

    def step(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, count: int) -> None:
        while self.count < count:
            await self._changed.wait()


class NotingSink:
    """The database's work sink, noting each commit (what the test waits for)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.committed = Progress()

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        results = await self._db.submit(orders)
        self.committed.step()
        return results


@contextmanager
def frozen(clock: trio.testing.MockClock) -> Iterator[None]:
    """No autojump while the test reads the database.

    A database call waits on a real thread, so the autojump clock would see every task idle
    and leap to the next deadline: the next rotation, a week on, would run during the read.
    """
    clock.autojump_threshold = math.inf
    try:
        yield
    finally:
        clock.autojump_threshold = 0


def _jobs(conn: Connection) -> list[tuple[Any, ...]]:
    stmt = select(
        orch_job.c.id,
        orch_job.c.endpoint_type,
        orch_job.c.source_resource_id,
        orch_job.c.operation_type,
        orch_job.c.resource_info,
    ).order_by(orch_job.c.id)
    return [tuple(row) for row in conn.execute(stmt)]


async def _requested(db: Database) -> dict[tuple[str, str], str]:
    return {
        (s.subcloud_name, s.endpoint_type): s.sync_request for s in await db.list_subcloud_syncs()
    }


async def test_rotation_runs_every_interval_and_queues_one_put_per_eligible_subcloud(
    store: Database, autojump_clock: trio.testing.MockClock
) -> None:
    master = Master()
    sink = NotingSink(store)
    rotation = FernetRotation(master, master.keys, sink, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(rotation.run)
        await trio.sleep_until(t0 + INTERVAL - 1.0)
        with frozen(autojump_clock):
            assert master.times == []
            assert await store.run_readonly(_jobs) == []

        await sink.committed.reach(1)
        with frozen(autojump_clock):
            assert master.times == [t0 + INTERVAL]
            [job] = await store.run_readonly(_jobs)
            assert job[1:4] == (c.ENDPOINT_TYPE_PLATFORM, "keys", c.OPERATION_PUT)
            assert json.loads(job[4]) == master.info()  # the rotated repository: ids 0, 1, 2
            assert sorted(master.info()) == ["0", "1", "2"]
            for region in ELIGIBLE:
                [request] = await store.pending_requests(region, c.ENDPOINT_TYPE_PLATFORM)
                assert (request.orch_job_id, request.state) == (job[0], c.ORCH_REQUEST_QUEUED)
                assert (request.resource_type, request.master_id) == (
                    c.RESOURCE_FERNET_REPO,
                    "keys",
                )
                assert await store.pending_requests(region, c.ENDPOINT_TYPE_IDENTITY) == []
            assert await store.pending_requests(NOT_ELIGIBLE, c.ENDPOINT_TYPE_PLATFORM) == []
            assert rotation.stats.last is not None
            assert sorted(rotation.stats.last.target_regions) == list(ELIGIBLE)
            requested = await _requested(store)
            assert {k for k, v in requested.items() if v == c.SYNC_REQUEST_REQUESTED} == {
                (region, c.ENDPOINT_TYPE_PLATFORM) for region in ELIGIBLE
            }

        await trio.sleep_until(t0 + 2 * INTERVAL - 1.0)
        assert master.times == [t0 + INTERVAL]
        await sink.committed.reach(2)
        with frozen(autojump_clock):
            assert master.times == [t0 + INTERVAL, t0 + 2 * INTERVAL]
            jobs = await store.run_readonly(_jobs)
            assert len(jobs) == 2
            assert json.loads(jobs[1][4]) == master.info()
            assert sorted(master.info()) == ["0", "2", "3"]  # key 1 is gone
            for region in ELIGIBLE:
                pending = await store.pending_requests(region, c.ENDPOINT_TYPE_PLATFORM)
                assert [r.orch_job_id for r in pending] == [jobs[0][0], jobs[1][0]]
        nursery.cancel_scope.cancel()
    assert (rotation.stats.rotations, rotation.stats.failures) == (2, 0)


async def test_a_failed_rotation_queues_nothing_and_the_next_period_tries_again(
    store: Database, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    master = Master()
    master.failures_left = 1
    before = master.info()
    sink = NotingSink(store)
    rotation = FernetRotation(master, master.keys, sink, interval=INTERVAL)
    with caplog.at_level(logging.WARNING, logger="dcorch.sync.fernet_rotation"):
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            await nursery.start(rotation.run)
            await master.rotated.reach(1)
            with frozen(autojump_clock):
                await trio.testing.wait_all_tasks_blocked()  # the loop is asleep again
                assert master.times == [t0 + INTERVAL]
                assert rotation.stats.failures == 1
                assert master.info() == before
                assert await store.run_readonly(_jobs) == []
                assert "fernet_rotation.failed step=command" in caplog.text
                assert "exited with status 1" in caplog.text
                assert all(v == c.SYNC_REQUEST_NONE for v in (await _requested(store)).values())

            # The master's sysinv is down after the next rotation: rotated, still nothing queued.
            master.keys_down = True
            await master.rotated.reach(2)
            with frozen(autojump_clock):
                await trio.testing.wait_all_tasks_blocked()
                assert master.times == [t0 + INTERVAL, t0 + 2 * INTERVAL]
                assert rotation.stats.failures == 2
                assert master.info() != before
                assert await store.run_readonly(_jobs) == []
                assert "fernet_rotation.failed step=keys" in caplog.text

            master.keys_down = False
            await sink.committed.reach(1)
            with frozen(autojump_clock):
                assert master.times[-1] == t0 + 3 * INTERVAL
                [job] = await store.run_readonly(_jobs)
                assert json.loads(job[4]) == master.info()
            nursery.cancel_scope.cancel()
    assert (rotation.stats.rotations, rotation.stats.failures) == (1, 2)


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def test_the_command_rotator_runs_the_command_and_the_work_follows(
    tmp_path: Path, db: Database
) -> None:
    await make_eligible(db, *ELIGIBLE)
    marker = tmp_path / "rotated"
    master = Master()
    script = _script(tmp_path, "rotate", 'echo "$1" >> "$2"\n')
    rotator = CommandRotator((script, "--active", str(marker)), timeout=30.0)

    async def keys() -> list[dict[str, Any]]:
        return await master.keys()

    rotation = FernetRotation(rotator, keys, db, interval=INTERVAL)
    result = await rotation.rotate_once()
    assert marker.read_text() == "--active\n"  # ran once, with its arguments
    assert result is not None
    assert sorted(result.target_regions) == list(ELIGIBLE)
    [job] = await db.run_readonly(_jobs)
    assert json.loads(job[4]) == master.info()


async def test_a_failing_command_is_logged_with_its_status_and_stderr_and_queues_nothing(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await make_eligible(db, *ELIGIBLE)
    master = Master()
    script = _script(
        tmp_path, "rotate", 'echo "noise" ; echo "fernet repository locked" >&2\nexit 3\n'
    )
    rotation = FernetRotation(
        CommandRotator((script,), timeout=30.0), master.keys, db, interval=1.0
    )
    with caplog.at_level(logging.WARNING, logger="dcorch.sync.fernet_rotation"):
        assert await rotation.rotate_once() is None
    assert await db.run_readonly(_jobs) == []
    assert rotation.stats.failures == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "step=command" in line
    assert "exited with status 3" in line
    assert "fernet repository locked" in line
    assert "noise" not in line  # stdout is not the error


async def test_a_hanging_command_is_stopped_at_its_timeout() -> None:
    rotator = CommandRotator(("sleep", "30"), timeout=0.3)
    start = trio.current_time()
    with pytest.raises(RotationFailed, match=r"sleep did not finish within 0\.3 s"):
        await rotator.rotate()
    assert trio.current_time() - start < 5.0  # terminated, not waited for


async def test_a_missing_or_empty_command_is_a_failed_rotation(tmp_path: Path) -> None:
    with pytest.raises(RotationFailed, match="could not be started"):
        await CommandRotator((str(tmp_path / "no-such-command"),), timeout=5.0).rotate()
    with pytest.raises(RotationFailed, match="no rotation command"):
        await CommandRotator((), timeout=5.0).rotate()


async def test_a_command_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    script = _script(tmp_path, "rotate", "kill -9 $$\n")
    with pytest.raises(RotationFailed, match="killed by signal 9"):
        await CommandRotator((script,), timeout=5.0).rotate()


async def test_the_interval_must_be_positive(db: Database) -> None:
    master = Master()
    with pytest.raises(ValueError, match="positive"):
        FernetRotation(master, master.keys, db, interval=0.0)


class RecordingSink:
    """A work sink that records orders, or refuses them like a full dispatcher."""

    def __init__(self, *, overloaded: bool = False) -> None:
        self.orders: list[WorkOrder] = []
        self.overloaded = overloaded

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        await trio.lowlevel.checkpoint()
        if self.overloaded:
            raise Overloaded(retry_after=1)
        self.orders.extend(orders)
        return [EnqueueResult(len(self.orders), 1, ELIGIBLE) for _ in orders]


async def test_a_rotation_that_overruns_its_period_skips_it_instead_of_running_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    master = Master()
    slow = {1}  # the first rotation takes two and a half periods

    class SlowMaster:
        async def rotate(self) -> None:
            await master.rotate()
            if master.rotated.count in slow:
                await trio.sleep(2.5 * INTERVAL)

    sink = RecordingSink()
    rotation = FernetRotation(SlowMaster(), master.keys, sink, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(rotation.run)
        await master.rotated.reach(2)
        nursery.cancel_scope.cancel()
    # Due at 1, ran until 3.5: the slots at 2 and 3 are gone, the next is at 4.
    assert master.times == [t0 + INTERVAL, t0 + 4 * INTERVAL]


async def test_keys_that_are_no_repository_or_a_refused_commit_queue_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    master = Master()
    sink = RecordingSink()
    shapes: list[list[dict[str, Any]]] = [
        [],
        [{"id": 0}],
        [{"key": "k"}],
        [{"id": "zero", "key": "k"}],
    ]
    for shape in shapes:

        async def keys(shape: list[dict[str, Any]] = shape) -> list[dict[str, Any]]:
            await trio.lowlevel.checkpoint()
            return shape

        rotation = FernetRotation(master, keys, sink, interval=INTERVAL)
        with caplog.at_level(logging.WARNING, logger="dcorch.sync.fernet_rotation"):
            assert await rotation.rotate_once() is None
        assert rotation.stats.failures == 1
    assert sink.orders == []
    assert caplog.text.count("step=keys") == len(shapes)

    refused = FernetRotation(master, master.keys, RecordingSink(overloaded=True), interval=1.0)
    with caplog.at_level(logging.WARNING, logger="dcorch.sync.fernet_rotation"):
        assert await refused.rotate_once() is None
    assert "step=enqueue" in caplog.text
    assert "work sink is full" in caplog.text
    assert "FernetRotation every 1 s" in repr(refused)
