"""The status outbox under MockClock: per-pair order and coalescing, exact backoff, never blocking.

Its deliveries recorded in ``subcloud_sync`` run on SQLite and PostgreSQL (real time: the
database answers from its own thread).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

from actors import Backoff
from dcorch import constants as c
from dcorch.db import Database, open_database
from dcorch.rpc.contract import CastUndeliverable
from dcorch.rpc.status_outbox import (
    DCMANAGER_STATE_TOPIC,
    STATUS_METHOD,
    OnDelivered,
    RpcStatusReporter,
    StatusOutbox,
    StatusReport,
)
from dcorch.sync.status import DeliveryRecord, StatusBook
from tests.db.conftest import (  # noqa: F401 - fixtures
    FAST,
    pg_server,
    pg_session_url,
    postgres_url,
    sqlite_template,
    sqlite_url,
)
from tests.rpc.recording_caster import RecordingCaster

EXACT = Backoff(base=1.0, cap=8.0, jitter=0.0)
IN, OUT = c.SYNC_STATUS_IN_SYNC, c.SYNC_STATUS_OUT_OF_SYNC


def report(region: str, ept: str, status: str, alarmable: bool = True) -> StatusReport:
    return StatusReport(region, ept, status, alarmable)


class Delivered:
    """``on_delivered``: notes what the outbox says dcmanager has, then passes it on.

    ``gate``: each batch waits on it first (the database is slow or hangs).
    """

    def __init__(self, fail_first: int = 0, then: OnDelivered | None = None) -> None:
        self.seen: list[tuple[float, str, str, str, bool]] = []
        self.batches: list[list[StatusReport]] = []
        self.fail_first = fail_first
        self.gate: trio.Event | None = None
        self.calls = 0
        self._then = then
        self._changed = trio.Event()

    async def __call__(self, reports: Sequence[StatusReport]) -> None:
        at = trio.current_time()
        self.calls += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_first:
                self.fail_first -= 1
                raise RuntimeError("database unavailable")
            if self._then is not None:
                await self._then(reports)
        finally:  # noted once handled, so until() returns after the record is written
            self.batches.append(list(reports))
            self.seen.extend(
                (at, r.region, r.endpoint_type, r.status, r.alarmable) for r in reports
            )
            self._changed.set()
            self._changed = trio.Event()

    async def until(self, count: int) -> None:
        while len(self.seen) < count:
            await self._changed.wait()


async def test_report_returns_at_once_and_casts_upstreams_kwargs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster, delivered = RecordingCaster(), Delivered()
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered, ctxt={"is_admin": True})
    await nursery.start(outbox.run)
    reporter = RpcStatusReporter(outbox)
    assert await reporter.report("subcloud1", "identity", OUT, True) is False  # queued
    await caster.until(casts=1)
    [cast] = caster.casts
    assert (cast.topic, cast.method) == (DCMANAGER_STATE_TOPIC, STATUS_METHOD)
    assert (cast.topic, cast.method) == ("dcmanager-state", "update_subcloud_endpoint_status")
    assert cast.kwargs == {
        "subcloud_name": None,
        "subcloud_region": "subcloud1",
        "endpoint_type": "identity",
        "sync_status": "out-of-sync",
        "alarmable": True,
    }
    assert cast.ctxt == {"is_admin": True}
    assert cast.at == 0.0
    await delivered.until(1)
    assert delivered.seen == [(0.0, "subcloud1", "identity", OUT, True)]
    assert (outbox.delivered, outbox.failures, outbox.waiting()) == (1, 0, [])


async def test_backoff_times_are_exact_and_reset_by_a_delivery(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster, delivered = RecordingCaster(), Delivered()
    caster.fail_next = 6
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered)
    await nursery.start(outbox.run)
    outbox.put(report("sc1", "platform", IN))
    await caster.until(attempts=6)
    assert (outbox.failures, outbox.retry_at) == (6, 31.0)  # backing off after the 6th
    await caster.until(casts=1)
    # Refused at 0, 1, 3, 7, 15, 23 (waits 1, 2, 4, 8 capped, 8, 8), taken at 31.
    assert [a.at for a in caster.attempts] == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0]
    assert [cast.at for cast in caster.casts] == [31.0]
    await delivered.until(1)
    assert delivered.seen == [(31.0, "sc1", "platform", IN, True)]  # recorded only now
    assert (outbox.failures, outbox.retry_at, outbox.refused) == (0, None, 6)

    await trio.sleep(19.0)  # t = 50: the next report goes at once, the backoff starts over
    caster.fail_next = 1
    outbox.put(report("sc1", "platform", OUT))
    await caster.until(casts=2)
    assert [a.at for a in caster.attempts[7:]] == [50.0, 51.0]


async def test_jittered_backoff_is_the_backoffs_delays_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    jittered = Backoff(base=1.0, cap=30.0, jitter=0.5)
    caster = RecordingCaster()
    caster.fail_next = 5
    outbox = StatusOutbox(caster, backoff=jittered, rng=random.Random(42))
    await nursery.start(outbox.run)
    outbox.put(report("sc1", "identity", IN))
    await caster.until(casts=1)
    rng, at, expected = random.Random(42), 0.0, [0.0]
    for n in range(5):
        at += jittered.delay(n, rng)
        expected.append(at)
    assert [a.at for a in caster.attempts] == pytest.approx(expected)
    waits = [b - a for a, b in itertools.pairwise(expected)]
    assert all(2**n <= w <= 1.5 * 2**n for n, w in enumerate(waits))  # jitter within bounds
    assert len(set(waits)) == 5


async def test_a_pair_keeps_its_newest_status_and_pairs_keep_their_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster = RecordingCaster()
    caster.down = True
    outbox = StatusOutbox(caster, backoff=EXACT)
    await nursery.start(outbox.run)
    outbox.put(report("sc1", "identity", OUT))
    outbox.put(report("sc1", "platform", IN))
    outbox.put(report("sc1", "identity", IN))
    outbox.put(report("sc2", "identity", OUT))
    outbox.put(report("sc1", "identity", OUT, alarmable=False))
    assert outbox.coalesced == 2
    assert [r.pair for r in outbox.waiting()] == [
        ("sc1", "identity"),
        ("sc1", "platform"),
        ("sc2", "identity"),
    ]
    await caster.until(attempts=4)  # refused at 0, 1, 3, 7: always the first in line
    assert {a.report for a in caster.attempts} == {("sc1", "identity", OUT, False)}
    assert len(outbox.waiting()) == 3  # nothing lost, nothing added
    caster.down = False
    await caster.until(casts=3)
    assert caster.reports() == [
        ("sc1", "identity", OUT, False),
        ("sc1", "platform", IN, True),
        ("sc2", "identity", OUT, True),
    ]
    assert [cast.at for cast in caster.casts] == [15.0, 15.0, 15.0]
    assert outbox.waiting() == []


async def test_a_refused_report_never_follows_a_newer_one_of_its_pair(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster = RecordingCaster()
    outbox = StatusOutbox(caster, backoff=EXACT)
    await nursery.start(outbox.run)

    # Refused while a newer status of the pair came: the old one is dropped.
    caster.gate, caster.fail_next = trio.Event(), 1
    outbox.put(report("sc1", "identity", OUT))
    await caster.until(attempts=1)
    outbox.put(report("sc1", "identity", IN))
    caster.gate.set()
    caster.gate = None
    await caster.until(casts=1)
    assert caster.reports() == [("sc1", "identity", IN, True)]
    assert [a.report[2] for a in caster.attempts] == [OUT, IN]

    # Taken while a newer one waited: both go, in the order they were made.
    caster.gate = trio.Event()
    outbox.put(report("sc1", "identity", OUT))
    await caster.until(attempts=3)
    outbox.put(report("sc1", "identity", IN))
    caster.gate.set()
    caster.gate = None
    await caster.until(casts=3)
    assert [r[2] for r in caster.reports()] == [IN, OUT, IN]


async def test_reports_never_wait_for_the_broker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster = RecordingCaster()
    caster.gate = trio.Event()  # the broker hangs: the cast in hand never returns
    outbox = StatusOutbox(caster, backoff=EXACT)
    await nursery.start(outbox.run)
    reporter = RpcStatusReporter(outbox)
    await reporter.report("sc0", "identity", OUT, True)
    await caster.until(attempts=1)
    for i in range(1000):
        assert await reporter.report(f"sc{i % 100}", "identity", IN, True) is False
    assert trio.current_time() == 0.0
    assert len(outbox.waiting()) == 100  # one per pair: its bound
    caster.gate.set()
    await caster.until(casts=101)
    assert caster.casts[0].report == ("sc0", "identity", OUT, True)
    assert {cast.report[2] for cast in caster.casts[1:]} == {IN}


async def test_a_failed_record_does_not_stop_the_deliveries(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    caster, delivered = RecordingCaster(), Delivered(fail_first=1)
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered)
    await nursery.start(outbox.run)
    outbox.put(report("sc1", "identity", IN))
    outbox.put(report("sc2", "identity", IN))
    await caster.until(casts=2)
    await delivered.until(2)
    assert [d[1] for d in delivered.seen] == ["sc1", "sc2"]


async def test_a_crash_or_a_shutdown_loses_no_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caster = RecordingCaster()
    caster.crash_next = RuntimeError("transport bug")
    outbox = StatusOutbox(caster, backoff=EXACT)
    outbox.put(report("sc1", "identity", OUT))
    with pytest.raises(RuntimeError, match="transport bug"):
        await outbox.run()  # the supervisor would restart it
    assert outbox.waiting() == [report("sc1", "identity", OUT)]

    caster.down = True
    with trio.move_on_after(2.5):  # stopped during its backoff after two refusals
        await outbox.run()
    assert [a.at for a in caster.attempts] == [0.0, 0.0, 1.0]
    assert outbox.waiting() == [report("sc1", "identity", OUT)]

    caster.down = False
    async with trio.open_nursery() as nursery:
        await nursery.start(outbox.run)
        await caster.until(casts=1)
        nursery.cancel_scope.cancel()
    assert caster.reports() == [("sc1", "identity", OUT, True)]


def test_undeliverable_is_a_connection_error() -> None:
    assert issubclass(CastUndeliverable, ConnectionError)


# -- what the database records (SQLite and PostgreSQL) ------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    async with open_database(url, database=FAST) as database:
        await database.add_subcloud("sc1", software_version="24.09", management_ip="10.0.0.1")
        yield database


async def test_the_database_records_deliveries_not_queued_reports(store: Database) -> None:
    """A queued report counts for the dedup in the process; the row only says what was delivered,
    so a restart before the delivery re-sends it, and after it does not."""
    caster, delivered = RecordingCaster(), Delivered(then=DeliveryRecord(store))
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered)
    book = StatusBook(store, RpcStatusReporter(outbox), "sc1", dedup_seconds=3600)
    book.load(await store.list_subcloud_syncs("sc1"))

    assert await book.update("identity", True, True, managed=True, sync_request="completed")
    assert not await book.update("identity", True, True, managed=True)  # dedup: queued = sent
    row = {s.endpoint_type: s for s in await store.list_subcloud_syncs("sc1")}["identity"]
    assert (row.sync_request, row.sync_status_reported, row.sync_status_report_time) == (
        "completed",
        "none",
        None,
    )

    # "Restart" before the delivery: the new book re-sends, the outbox holds one report.
    again = StatusBook(store, RpcStatusReporter(outbox), "sc1", dedup_seconds=3600)
    again.load(await store.list_subcloud_syncs("sc1"))
    assert await again.update("identity", True, True, managed=True)
    assert outbox.waiting() == [report("sc1", "identity", IN)]

    async with trio.open_nursery() as nursery:
        await nursery.start(outbox.run)
        with trio.fail_after(10):
            await delivered.until(1)
        nursery.cancel_scope.cancel()
    assert caster.reports() == [("sc1", "identity", IN, True)]
    row = {s.endpoint_type: s for s in await store.list_subcloud_syncs("sc1")}["identity"]
    assert row.sync_status_reported == IN
    assert row.sync_status_report_time is not None

    # After the delivery a restart does not re-send within the hour.
    after = StatusBook(store, RpcStatusReporter(outbox), "sc1", dedup_seconds=3600)
    after.load(await store.list_subcloud_syncs("sc1"))
    assert not await after.update("identity", True, True, managed=True)
    assert outbox.waiting() == []


async def test_a_delivery_for_a_deleted_subcloud_records_nothing(store: Database) -> None:
    record = DeliveryRecord(store)
    await store.delete_subcloud("sc1")
    await record([report("sc1", "identity", IN)])  # nothing left to record, and no error
    await store.add_subcloud("sc2", endpoint_types=("platform",))
    await record([report("sc2", "identity", IN)])
    assert [
        (s.endpoint_type, s.sync_status_reported) for s in await store.list_subcloud_syncs()
    ] == [("platform", "none")]
