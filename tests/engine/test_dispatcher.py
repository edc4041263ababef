"""The dispatcher's group commit, overload and failure isolation, against a recording DB."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dcorch.engine.dispatcher import Dispatcher, Overloaded
from dcorch.settings import DispatcherSettings
from dcorch.work import EnqueueResult, WorkOrder


class RecordingDb:
    """Stands in for ``Database.enqueue_work``: records each transaction's orders."""

    def __init__(self) -> None:
        self.transactions: list[list[WorkOrder]] = []
        self.gate: trio.Event | None = None
        self.fail_ids: set[str] = set()
        self.next_id = 1

    async def enqueue_work(self, orders: list[WorkOrder]) -> list[EnqueueResult]:
        if self.gate is not None:
            await self.gate.wait()
        await trio.sleep(0.01)  # the commit takes time, so callers pile up behind it
        if any(order.source_resource_id in self.fail_ids for order in orders):
            raise LookupError("subcloud not found")
        self.transactions.append(list(orders))
        results = []
        for order in orders:
            results.append(EnqueueResult(self.next_id, self.next_id, (order.subcloud or "",)))
            self.next_id += 1
        return results


def _order(rid: str) -> WorkOrder:
    return WorkOrder("identity", "users", rid, "post", "{}")


async def test_concurrent_submissions_share_one_transaction(autojump_clock: object) -> None:
    db = RecordingDb()
    dispatcher = Dispatcher(db, DispatcherSettings(mailbox_size=100, max_batch=50))
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
    db = RecordingDb()
    dispatcher = Dispatcher(db, DispatcherSettings(mailbox_size=100, max_batch=7))
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
    db = RecordingDb()
    settings = DispatcherSettings(mailbox_size=2, enqueue_timeout=3.0, retry_after=4)
    dispatcher = Dispatcher(db, settings)
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
        assert dispatcher.statistics().current_buffer_used == 2
        nursery.cancel_scope.cancel()
    assert db.transactions == []


async def test_one_bad_submission_does_not_fail_the_others(autojump_clock: object) -> None:
    db = RecordingDb()
    db.fail_ids = {"bad"}
    dispatcher = Dispatcher(db, DispatcherSettings())
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
    db = RecordingDb()
    dispatcher = Dispatcher(db, DispatcherSettings())
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
    db = RecordingDb()
    dispatcher = Dispatcher(db, DispatcherSettings())
    done: list[str] = []

    async def submit(rid: str) -> None:
        await dispatcher.submit([_order(rid)])
        done.append(rid)

    async with trio.open_nursery() as nursery:
        for rid in ("a", "b", "c"):
            nursery.start_soon(submit, rid)
        await trio.testing.wait_all_tasks_blocked()
        # A run that dies before taking anything, then a fresh one (what a supervisor does).
        with trio.CancelScope() as scope:
            scope.cancel()
            await dispatcher.run()
        await nursery.start(dispatcher.run)
        await trio.sleep(1)  # virtual: every pending commit finishes
        assert len(done) == 3
        nursery.cancel_scope.cancel()
    assert sorted(done) == ["a", "b", "c"]
