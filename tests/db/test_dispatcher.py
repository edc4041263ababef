"""The dispatcher: group commit, priority of work orders, overload, failure isolation, the
commit feed and restarts, against a recording store (exact virtual times)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dcorch.db import units_sync
from dcorch.db.commits import CommitFeed, Committed
from dcorch.db.dispatcher import Dispatcher
from dcorch.db.units_work import enqueue_work
from dcorch.settings import DispatcherSettings
from dcorch.work import EnqueueResult, Overloaded, WorkOrder


class RecordingStore:
    """Stands in for the unit runner: records each transaction (orders, or write units)."""

    def __init__(self) -> None:
        self.transactions: list[list[WorkOrder]] = []
        self.log: list[tuple[str, int]] = []
        """``("orders", n)`` or ``("units", n)`` per transaction, in commit order."""
        self.gate: trio.Event | None = None
        self.fail_ids: set[str] = set()
        self.next_id = 1

    async def execute(self, fn: Any, args: tuple[Any, ...], write: bool) -> Any:
        assert write
        if self.gate is not None:
            await self.gate.wait()
        await trio.sleep(0.01)  # the commit takes time, so callers pile up behind it
        if fn is enqueue_work:
            return self._enqueue(args[0])
        ops = args[0] if fn is units_sync.run_batch else ((fn, args),)
        values = [unit(None, *unit_args) for unit, unit_args in ops]
        self.log.append(("units", len(values)))
        return values if fn is units_sync.run_batch else values[0]

    def _enqueue(self, orders: tuple[WorkOrder, ...]) -> list[EnqueueResult]:
        if any(order.source_resource_id in self.fail_ids for order in orders):
            raise LookupError("subcloud not found")
        self.transactions.append(list(orders))
        self.log.append(("orders", len(orders)))
        results = []
        for order in orders:
            results.append(EnqueueResult(self.next_id, self.next_id, (order.subcloud or "",)))
            self.next_id += 1
        return results


async def _queue_three(nursery: trio.Nursery, dispatcher: Dispatcher, done: list[str]) -> None:
    """Submissions a, b and c queued (``done`` gets each id once it is answered)."""

    async def submit(rid: str) -> None:
        await dispatcher.submit([_order(rid)])
        done.append(rid)

    for rid in ("a", "b", "c"):
        nursery.start_soon(submit, rid)
    await trio.testing.wait_all_tasks_blocked()


def _echo(conn: object, value: str) -> str:
    """A write unit: returns its argument (the recording store passes no connection)."""
    return value


def _fails(conn: object, value: str) -> str:
    raise LookupError(f"no subcloud {value}")


def _order(rid: str) -> WorkOrder:
    return WorkOrder("identity", "users", rid, "post", "{}")


async def test_concurrent_submissions_share_one_transaction(autojump_clock: object) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings(mailbox_size=100, max_batch=50))
    results: dict[str, list[EnqueueResult]] = {}

    async def submit(rid: str) -> None:
        results[rid] = await dispatcher.submit([_order(rid)])

    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        db.gate = trio.Event()
        for i in range(30):
            nursery.start_soon(submit, f"u{i}")
        await trio.testing.wait_all_tasks_blocked()
        db.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)  # virtual: every pending commit finishes
        assert len(results) == 30
        nursery.cancel_scope.cancel()

    # The first submission may commit alone; everything queued behind it shares one transaction.
    assert sum(len(t) for t in db.transactions) == 30
    assert len(db.transactions) <= 2
    assert all(results[f"u{i}"][0].orch_job_id > 0 for i in range(30))
    ids = [r[0].orch_job_id for r in results.values()]
    assert len(set(ids)) == 30  # each caller got its own result


async def test_batch_is_capped_at_max_batch(autojump_clock: object) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings(mailbox_size=100, max_batch=7))
    db.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(dispatcher.submit, [_order(f"u{i}")])
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(dispatcher.run)
        db.gate.set()
        await trio.sleep(1)  # virtual: every pending commit finishes
        assert sum(len(t) for t in db.transactions) == 20
        nursery.cancel_scope.cancel()
    assert [len(t) for t in db.transactions] == [7, 7, 6]


async def test_full_mailbox_gives_overloaded_after_enqueue_timeout(autojump_clock: object) -> None:
    db = RecordingStore()
    settings = DispatcherSettings(mailbox_size=2, enqueue_timeout=3.0, retry_after=4)
    dispatcher = Dispatcher(db.execute, settings)
    async with trio.open_nursery() as nursery:
        # No run() task: nothing drains the mailbox, so the third caller must be refused.
        nursery.start_soon(dispatcher.submit, [_order("a")])
        nursery.start_soon(dispatcher.submit, [_order("b")])
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(Overloaded) as info:
            await dispatcher.submit([_order("c")])
        assert trio.current_time() - start == 3.0
        assert info.value.retry_after == 4
        assert dispatcher.orders_queued == 2
        nursery.cancel_scope.cancel()
    assert db.transactions == []


async def test_one_bad_submission_does_not_fail_the_others(autojump_clock: object) -> None:
    db = RecordingStore()
    db.fail_ids = {"bad"}
    dispatcher = Dispatcher(db.execute, DispatcherSettings())
    outcomes: dict[str, object] = {}

    async def submit(rid: str) -> None:
        try:
            outcomes[rid] = await dispatcher.submit([_order(rid)])
        except LookupError as exc:
            outcomes[rid] = exc

    async with trio.open_nursery() as nursery:
        db.gate = trio.Event()
        for rid in ("a", "bad", "c"):
            nursery.start_soon(submit, rid)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(dispatcher.run)
        db.gate.set()
        await trio.sleep(1)  # virtual: every pending commit finishes
        assert len(outcomes) == 3
        nursery.cancel_scope.cancel()
    assert isinstance(outcomes["bad"], LookupError)
    assert isinstance(outcomes["a"], list)
    assert isinstance(outcomes["c"], list)
    committed = [o.source_resource_id for t in db.transactions for o in t]
    assert sorted(committed) == ["a", "c"]


async def test_cancelled_caller_still_commits_and_does_not_crash(autojump_clock: object) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings())
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        db.gate = trio.Event()
        with trio.move_on_after(0.001):
            await dispatcher.submit([_order("gone")])
        db.gate.set()
        # The dispatcher is still alive and serves the next caller.
        result = await dispatcher.submit([_order("next")])
        nursery.cancel_scope.cancel()
    assert [o.source_resource_id for t in db.transactions for o in t] == ["gone", "next"]
    assert result[0].orch_job_id == 2


async def test_restarted_run_loses_no_queued_submission(autojump_clock: object) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings())
    done: list[str] = []

    async with trio.open_nursery() as nursery:
        await _queue_three(nursery, dispatcher, done)
        # A run that dies before taking anything, then a fresh one (what a supervisor does).
        with trio.CancelScope() as scope:
            scope.cancel()
            await dispatcher.run()
        await nursery.start(dispatcher.run)
        await trio.sleep(1)  # virtual: every pending commit finishes
        assert len(done) == 3
        nursery.cancel_scope.cancel()
    assert sorted(done) == ["a", "b", "c"]


async def test_write_units_share_one_transaction_and_a_bad_one_fails_alone(
    autojump_clock: object,
) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings())
    outcomes: dict[str, object] = {}

    async def write(unit: Any, value: str) -> None:
        try:
            outcomes[value] = await dispatcher.write(unit, (value,))
        except LookupError as exc:
            outcomes[value] = exc

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(write, _echo, f"w{i}")
        nursery.start_soon(write, _fails, "gone")
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(dispatcher.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert {k: v for k, v in outcomes.items() if k != "gone"} == {
        f"w{i}": f"w{i}" for i in range(10)
    }
    assert isinstance(outcomes["gone"], LookupError)
    # The batch of 11 rolled back (no log entry: run_batch raised), then each ran alone.
    assert db.log == [("units", 1)] * 10
    assert dispatcher.stats.unit_fallbacks == 1


async def test_work_orders_go_before_queued_bookkeeping(autojump_clock: object) -> None:
    db = RecordingStore()
    dispatcher = Dispatcher(db.execute, DispatcherSettings())
    answered: dict[str, float] = {}

    async def write(value: str) -> None:
        await dispatcher.write(_echo, (value,))
        answered[value] = trio.current_time()

    async def submit(rid: str) -> None:
        await dispatcher.submit([_order(rid)])
        answered[rid] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        db.gate = trio.Event()
        nursery.start_soon(write, "running")  # taken at once: the transaction in flight
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            nursery.start_soon(write, f"queued{i}")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(submit, "operator")  # arrives last, committed second
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        db.gate.set()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert db.log == [("units", 1), ("orders", 1), ("units", 3)]
    assert answered["operator"] - start == pytest.approx(0.02)
    assert answered["queued0"] > answered["operator"]


async def test_commits_are_published_and_never_lost_when_the_feed_is_full(
    autojump_clock: object,
) -> None:
    db = RecordingStore()
    feed = CommitFeed(size=1)
    dispatcher = Dispatcher(db.execute, DispatcherSettings(max_batch=1), feed=feed)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        for region in ("sc1", "sc2", "sc3"):
            order = WorkOrder("identity", "users", region, "post", subcloud=region)
            await dispatcher.submit([order])
        nursery.cancel_scope.cancel()
    assert (feed.published, feed.coalesced) == (3, 2)
    first = await feed.receive()
    merged = await feed.receive()
    assert first == Committed(frozenset({("sc1", "identity")}))
    assert merged == Committed(frozenset({("sc2", "identity"), ("sc3", "identity")}))
    assert feed.pending() == 0


class _FailingFeed(CommitFeed):
    """Publishes, then fails once: a bug of the dispatcher's own, after a commit."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def publish(self, committed: Committed) -> None:
        super().publish(committed)
        if not self.failures:
            self.failures += 1
            raise RuntimeError("injected dispatcher crash")


async def test_a_crash_ends_run_and_a_restart_commits_what_was_queued(
    autojump_clock: object,
) -> None:
    db = RecordingStore()
    feed = _FailingFeed()
    dispatcher = Dispatcher(db.execute, DispatcherSettings(max_batch=1), feed=feed)
    done: list[str] = []

    async with trio.open_nursery() as nursery:
        await _queue_three(nursery, dispatcher, done)
        with pytest.raises(RuntimeError, match="injected dispatcher crash"):
            await dispatcher.run()
        assert len(done) == 1  # answered before the crash: it was committed
        await nursery.start(dispatcher.run)  # what the supervisor does
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert sorted(done) == ["a", "b", "c"]
    assert feed.published == 3


async def test_postgresql_mode_runs_bookkeeping_beside_one_orders_transaction(
    autojump_clock: object,
) -> None:
    """Not exclusive: bookkeeping runs ``writers`` at a time beside the orders, whose batches
    stay one at a time (each locks every target's subcloud_sync row)."""
    db = RecordingStore()
    running: dict[str, int] = {"orders": 0, "units": 0}
    peak: dict[str, int] = {"orders": 0, "units": 0, "both": 0}

    async def execute(fn: Any, args: tuple[Any, ...], write: bool) -> Any:
        lane = "orders" if fn is enqueue_work else "units"
        running[lane] += 1
        peak[lane] = max(peak[lane], running[lane])
        peak["both"] = max(peak["both"], running["orders"] + running["units"])
        try:
            return await db.execute(fn, args, write)
        finally:
            running[lane] -= 1

    settings = DispatcherSettings(max_batch=1)
    dispatcher = Dispatcher(execute, settings, writers=2, exclusive=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        for i in range(4):
            nursery.start_soon(dispatcher.submit, [_order(f"o{i}")])
            nursery.start_soon(dispatcher.write, _echo, (f"w{i}",))
            await trio.sleep(0.004)  # arrivals while earlier commits (0.01 s) are in flight
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert peak == {"orders": 1, "units": 2, "both": 3}
    assert sum(n for kind, n in db.log if kind == "orders") == 4
