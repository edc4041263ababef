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
    RECORD_BATCH,
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
        self.taken: list[int] = []
        """Size of each batch as it came (``batches`` fills in as they end)."""
        self._then = then
        self._changed = trio.Event()

    async def __call__(self, reports: Sequence[StatusReport]) -> None:
        at = trio.current_time()
        self.taken.append(len(reports))
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


async def test_casting_never_waits_for_the_database(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Deliveries are recorded in batches behind the casts: a stuck database holds up no cast,
    and what waits for it is one report per pair, the newest delivered."""
    caster, delivered = RecordingCaster(), Delivered()
    delivered.gate = trio.Event()  # the database does not answer
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered)
    await nursery.start(outbox.run)
    for i in range(1200):
        outbox.put(report(f"sc{i}", "identity", OUT))
    await caster.until(casts=1200)
    assert trio.current_time() == 0.0
    [first] = delivered.taken  # the recorder is stuck on its first batch, casting went on
    assert first >= 1
    assert len(outbox.unrecorded()) == 1200 - first

    outbox.put(report("sc0", "identity", IN))  # sc0's OUT is in the stuck batch
    outbox.put(report("sc1199", "identity", IN))  # sc1199's OUT still waits: replaced
    await caster.until(casts=1202)
    waiting = outbox.unrecorded()
    assert len(waiting) == 1201 - first
    assert waiting[-2:] == [report("sc0", "identity", IN), report("sc1199", "identity", IN)]

    delivered.gate.set()
    await delivered.until(1201)
    assert trio.current_time() == 0.0
    assert max(delivered.taken) <= RECORD_BATCH
    assert len(delivered.taken) <= 1 + -(-1201 // RECORD_BATCH)  # batches, not one per cast
    assert (outbox.recorded, outbox.record_batches) == (1201, len(delivered.taken))
    recorded = [(r, e, st) for _, r, e, st, _ in delivered.seen]
    delivered_order = [cast.report[:3] for cast in caster.casts]
    delivered_order.remove(("sc1199", "identity", OUT))  # replaced before it was recorded
    assert recorded == delivered_order  # each pair's records in its delivery order
    assert outbox.unrecorded() == []


async def test_a_shutdown_records_what_was_delivered_or_leaves_it_unclaimed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopping while the recorder waits for the database: the batch in hand goes back and the
    stopping task records it (shielded) if the database answers within ``flush_timeout``; if not,
    nothing is claimed: the rows keep the old report, so the next start re-sends it."""
    caster, delivered = RecordingCaster(), Delivered()
    delivered.gate = trio.Event()
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered, flush_timeout=5.0)
    reports = [report(f"sc{i}", "identity", OUT) for i in range(3)]

    async def database_answers_at(t: float) -> None:
        await trio.sleep_until(t)
        assert delivered.gate is not None
        delivered.gate.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(database_answers_at, 2.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(outbox.run)
            for r in reports:
                outbox.put(r)
            await caster.until(casts=3)
            nursery.cancel_scope.cancel()  # shutdown at t = 0, a batch in the recorder's hands
    assert trio.current_time() == 2.0  # the stop waited for the database, not longer
    assert outbox.unrecorded() == []
    assert sorted(r for _, r, *_ in delivered.seen[-3:]) == ["sc0", "sc1", "sc2"]

    # The database hangs: the stop gives up at flush_timeout and claims nothing.
    delivered.gate = trio.Event()
    outbox.put(report("sc9", "identity", IN))
    async with trio.open_nursery() as nursery:
        await nursery.start(outbox.run)
        await caster.until(casts=4)
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 7.0
    assert outbox.unrecorded() == [report("sc9", "identity", IN)]


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


async def test_a_batch_of_deliveries_is_group_committed(store: Database) -> None:
    regions = [f"sc{i}" for i in range(1, 41)]
    for region in regions[1:]:
        await store.add_subcloud(region, endpoint_types=("identity",))
    caster, delivered = RecordingCaster(), Delivered(then=DeliveryRecord(store))
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=delivered)
    delivered.gate = trio.Event()  # hold the first batch so the rest queue up behind it
    before = store.dispatcher.stats.unit_batches
    async with trio.open_nursery() as nursery:
        await nursery.start(outbox.run)
        for region in regions:
            outbox.put(report(region, "identity", OUT))
        with trio.fail_after(10):
            await caster.until(casts=40)
            delivered.gate.set()
            await delivered.until(40)
        nursery.cancel_scope.cancel()
    rows = {
        s.subcloud_name: s
        for s in await store.list_subcloud_syncs()
        if s.endpoint_type == "identity"
    }
    assert {r: rows[r].sync_status_reported for r in regions} == dict.fromkeys(regions, OUT)
    assert all(rows[r].sync_status_report_time is not None for r in regions)
    assert len(delivered.taken) <= 3
    assert store.dispatcher.stats.unit_batches - before <= 4  # not one transaction per cast


async def test_a_crash_between_delivery_and_record_resends_and_loses_nothing(
    store: Database,
) -> None:
    """Killed after the broker took a report but before its record was written: the row keeps
    the old report, so the restarted engine sends it again (dcmanager hears it twice); no
    delivered report is ever lost, and the database never claims an undelivered one."""
    caster, stuck = RecordingCaster(), Delivered(then=DeliveryRecord(store))
    stuck.gate = trio.Event()  # the database never gets the record
    outbox = StatusOutbox(caster, backoff=EXACT, on_delivered=stuck, flush_timeout=0.05)
    book = StatusBook(store, RpcStatusReporter(outbox), "sc1", dedup_seconds=3600)
    book.load(await store.list_subcloud_syncs("sc1"))
    assert await book.update("identity", False, True, managed=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(outbox.run)
        with trio.fail_after(10):
            await caster.until(casts=1)
        nursery.cancel_scope.cancel()  # the crash: the record never reached the database
    assert caster.reports() == [("sc1", "identity", OUT, True)]
    assert outbox.unrecorded() == [report("sc1", "identity", OUT)]
    row = {s.endpoint_type: s for s in await store.list_subcloud_syncs("sc1")}["identity"]
    assert (row.sync_status_reported, row.sync_status_report_time) == ("none", None)

    # The restart: a new process (book, outbox, broker link) on the same database.
    caster2, delivered2 = RecordingCaster(), Delivered(then=DeliveryRecord(store))
    outbox2 = StatusOutbox(caster2, backoff=EXACT, on_delivered=delivered2)
    book2 = StatusBook(store, RpcStatusReporter(outbox2), "sc1", dedup_seconds=3600)
    book2.load(await store.list_subcloud_syncs("sc1"))
    assert await book2.update("identity", False, True, managed=True)  # re-sent
    async with trio.open_nursery() as nursery:
        await nursery.start(outbox2.run)
        with trio.fail_after(10):
            await delivered2.until(1)
        nursery.cancel_scope.cancel()
    assert caster2.reports() == [("sc1", "identity", OUT, True)]
    row = {s.endpoint_type: s for s in await store.list_subcloud_syncs("sc1")}["identity"]
    assert row.sync_status_reported == OUT
    book3 = StatusBook(store, RpcStatusReporter(outbox2), "sc1", dedup_seconds=3600)
    book3.load(await store.list_subcloud_syncs("sc1"))
    assert not await book3.update("identity", False, True, managed=True)  # recorded: not again
