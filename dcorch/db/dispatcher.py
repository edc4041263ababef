"""The dispatcher: the one group-commit writer of the database.

Every write goes through one of its two lanes:

* **orders** (:meth:`Dispatcher.submit`): work orders of proxied commands and audit repairs; a
  batch (up to ``max_batch`` submissions) is **one** :func:`~dcorch.db.units_work.enqueue_work`
  transaction, each caller answered after its commit, so a 2xx from the proxy means durable work;
* **units** (:meth:`Dispatcher.write`): every other write, mostly the sync actors' bookkeeping,
  up to :data:`MAX_UNITS` per transaction (:func:`~dcorch.db.units_sync.run_batch`).

Orders go first: an operator's command waits at most for running bookkeeping, never behind the
work it set off. One orders transaction runs at a time (each locks its targets' ``subcloud_sync``
rows), beside ``writers`` bookkeeping ones on PostgreSQL; SQLite (``exclusive``) runs one in all.

A failed batch is re-run one submission (or unit) at a time, so a bad order fails only its
caller; ``job_uuid`` makes re-recording after an ambiguous commit a no-op. A dispatcher bug
answers the batch's callers and crashes :meth:`run` for its supervisor to restart; the lanes
belong to the object, so nothing queued is lost. A full orders lane gives
:class:`~dcorch.work.Overloaded` after ``enqueue_timeout`` (the proxy answers 503). Committed
orders batches are published on the :class:`~dcorch.db.commits.CommitFeed`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import outcome
import trio

from dcorch.db import units_sync
from dcorch.db.batching import Bell, Lane, Reply, run_batches
from dcorch.db.commits import CommitFeed, Committed
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.runner import Execute, Unit
from dcorch.db.schema import new_uuid
from dcorch.db.units_work import enqueue_work
from dcorch.settings import DispatcherSettings
from dcorch.work import EnqueueResult, Overloaded, WorkOrder

logger = logging.getLogger(__name__)

MAX_UNITS: Final = 500
"""Write units per bookkeeping transaction."""


@dataclass(eq=False, slots=True)
class _Submission:
    """One caller's work orders."""

    orders: tuple[WorkOrder, ...]
    reply: Reply[list[EnqueueResult]] = field(default_factory=Reply)
    arrived: float = field(default_factory=trio.current_time)


@dataclass(eq=False, slots=True)
class _Write:
    """One caller's write unit."""

    fn: Unit
    args: tuple[Any, ...]
    reply: Reply[Any] = field(default_factory=Reply)


@dataclass(slots=True)
class DispatcherStatistics:
    """Counters for the bench, ``/metrics`` and tests."""

    order_batches: int = 0
    submissions: int = 0
    unit_batches: int = 0
    units: int = 0
    unit_fallbacks: int = 0
    untargeted: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(endpoint type, resource type, operation) -> committed orders that found no eligible
    subcloud (``dcorch_work_orders_untargeted_total``)."""


class Dispatcher:
    """Group-committing writer (see the module docstring).

    Args:
        execute: runs one unit in one transaction (:meth:`UnitRunner.execute`, or a wrapper).
        settings: the ``[dispatcher]`` section (orders lane).
        units_queue: bound of the units lane (``database.mailbox_size``).
        writers: bookkeeping transactions in flight at once.
        exclusive: one transaction at a time across both lanes (SQLite).
        feed: where committed pairs are published.
        observe_latency: called with each submission's queue-to-commit seconds.
    """

    def __init__(
        self,
        execute: Execute,
        settings: DispatcherSettings,
        *,
        units_queue: int = 256,
        writers: int = 1,
        exclusive: bool = True,
        feed: CommitFeed | None = None,
        observe_latency: Callable[[float], None] | None = None,
    ) -> None:
        self._execute = execute
        self._settings = settings
        self._writers = max(1, writers)
        self._exclusive = exclusive
        self._orders_busy = False
        self._units_busy = 0
        self.feed = feed or CommitFeed()
        self._observe = observe_latency
        self._bell = Bell()
        self._orders = Lane[_Submission](settings.mailbox_size, self._bell)
        self._units = Lane[_Write](units_queue, self._bell)
        self.stats = DispatcherStatistics()

    def __repr__(self) -> str:
        return f"<Dispatcher orders {self.orders_queued} units {self.units_queued} {self.stats}>"

    @property
    def orders_queued(self) -> int:
        return self._orders.queued

    @property
    def units_queued(self) -> int:
        return self._units.queued

    # -- callers ---------------------------------------------------------------------------

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        """Commit ``orders`` in one transaction (shared with concurrent callers).

        Raises:
            Overloaded: the orders lane stayed full for ``enqueue_timeout`` seconds.
            dcorch.db.errors.DatabaseError: the work could not be committed.
        """
        # Keys set once, before any attempt: a batch retried after an ambiguous failure (or
        # re-committed one by one) finds its jobs already written instead of writing them twice.
        keyed = tuple(
            order if order.job_uuid else dataclasses.replace(order, job_uuid=new_uuid())
            for order in orders
        )
        submission = _Submission(keyed)
        try:
            with trio.fail_after(self._settings.enqueue_timeout):
                await self._orders.put(submission)
        except trio.TooSlowError:
            raise Overloaded(self._settings.retry_after) from None
        return await submission.reply.wait()

    async def write(self, fn: Unit, args: tuple[Any, ...]) -> Any:
        """Run the write unit ``fn(conn, *args)``, committed together with other writes."""
        op = _Write(fn, args)
        await self._units.put(op)
        return await op.reply.wait()

    def close(self) -> None:
        """Refuse new work (queued work is still committed while :meth:`run` runs)."""
        self._orders.close()
        self._units.close()

    # -- the loop --------------------------------------------------------------------------

    async def run(  # noqa: ASYNC128 - run_batches calls started()
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit batches until cancelled, or until closed and drained (a supervised child)."""
        await run_batches(self._take, self._commit, self._writers + 1, task_status)

    async def _take(self) -> list[_Submission] | list[_Write]:
        """The next batch that may start: orders first; empty once closed and drained."""
        while True:
            idle = not self._orders_busy and self._units_busy == 0
            if not self._orders_busy and (idle or not self._exclusive):
                orders = self._orders.take(self._settings.max_batch)
                if orders:
                    self._orders_busy = True
                    return orders
            if self._units_busy < self._writers and (idle or not self._exclusive):
                units = self._units.take(MAX_UNITS)
                if units:
                    self._units_busy += 1
                    return units
            if not (self._orders.open or self._units.open):
                return []
            await self._bell.wait()  # rung by a put, and by every batch that ends

    async def _commit(self, batch: list[_Submission] | list[_Write]) -> None:
        try:
            if isinstance(batch[0], _Submission):
                try:
                    await self._commit_orders(batch)  # type: ignore[arg-type]
                finally:
                    self._orders_busy = False
            else:
                try:
                    await self._commit_units(batch)  # type: ignore[arg-type]
                finally:
                    self._units_busy -= 1
        except BaseException as exc:
            # A bug, a crash or shutdown: answer everyone still waiting before unwinding.
            stopped = exc if isinstance(exc, Exception) else None
            failure = outcome.Error(stopped or DatabaseUnavailable("the dispatcher stopped"))
            for op in batch:
                op.reply.resolve(failure)
            raise
        self._bell.ring()

    # -- orders ----------------------------------------------------------------------------

    async def _commit_orders(self, batch: list[_Submission]) -> None:
        committed: list[Committed] = []
        try:
            committed.append(await self._enqueue(batch))
        except Exception as exc:
            if len(batch) == 1:
                batch[0].reply.resolve(outcome.Error(exc))
                return
            # One caller's bad order must not fail the others: commit each on its own. This also
            # settles an ambiguous commit (connection lost in COMMIT): job_uuid makes it a no-op.
            logger.info("dispatcher.batch_failed size=%d error=%s", len(batch), type(exc).__name__)
            for submission in batch:
                try:
                    committed.append(await self._enqueue([submission]))
                except Exception as single:
                    submission.reply.resolve(outcome.Error(single))
        # Outside the error handling above: a failure to publish is the dispatcher's own bug.
        for item in committed:
            self.feed.publish(item)

    async def _enqueue(self, batch: list[_Submission]) -> Committed:
        """One transaction for every order of ``batch``; each caller answered after commit."""
        orders = tuple(order for submission in batch for order in submission.orders)
        results: list[EnqueueResult] = await self._execute(enqueue_work, (orders,), True)
        self.stats.order_batches += 1
        now = trio.current_time()
        offset = 0
        for submission in batch:
            mine = results[offset : offset + len(submission.orders)]
            offset += len(submission.orders)
            self.stats.submissions += 1
            if self._observe is not None:
                self._observe(now - submission.arrived)
            submission.reply.resolve(outcome.Value(list(mine)))
        for order, result in zip(orders, results, strict=True):
            if not result.target_regions:
                self._untargeted(order, result)
        return Committed.of(results, orders)

    def _untargeted(self, order: WorkOrder, result: EnqueueResult) -> None:
        """Say so when committed work reaches nobody: no subcloud was eligible for it.

        Not an error (docs/behaviour.md#eligible-subclouds: such subclouds catch up through
        their initial sync and audit), but silent work that reaches nobody hides a
        misconfiguration, such as subclouds whose initial sync keeps failing.
        """
        key = (order.endpoint_type, order.resource_type, order.operation_type)
        self.stats.untargeted[key] = self.stats.untargeted.get(key, 0) + 1
        logger.info(
            "dispatcher.no_eligible_targets endpoint=%s resource=%s operation=%s source=%s job=%d",
            order.endpoint_type,
            order.resource_type,
            order.operation_type,
            order.source_resource_id,
            result.orch_job_id,
        )

    # -- units -----------------------------------------------------------------------------

    async def _commit_units(self, batch: list[_Write]) -> None:
        self.stats.unit_batches += 1
        self.stats.units += len(batch)
        if len(batch) == 1:
            await self._unit_alone(batch[0])
            return
        ops = tuple((op.fn, op.args) for op in batch)
        try:
            values = await self._execute(units_sync.run_batch, (ops,), True)
        except DatabaseUnavailable as exc:
            for op in batch:
                op.reply.resolve(outcome.Error(exc))
            return
        except Exception:
            # One unit failed (a vanished subcloud, a conflict): give each its own transaction.
            self.stats.unit_fallbacks += 1
            for op in batch:
                await self._unit_alone(op)
            return
        for op, value in zip(batch, values, strict=True):
            op.reply.resolve(outcome.Value(value))

    async def _unit_alone(self, op: _Write) -> None:
        try:
            value = await self._execute(op.fn, op.args, True)
        except Exception as exc:
            op.reply.resolve(outcome.Error(exc))
        else:
            op.reply.resolve(outcome.Value(value))
