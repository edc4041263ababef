"""The dispatcher: turns proxied commands into committed work with group commit.

Every proxied command is a :class:`Submission` put into one bounded mailbox. The dispatcher takes
the first waiting submission, then whatever else is already queued (up to ``max_batch``), and
writes all of their work orders in **one** transaction through ``Database.enqueue_work``. Each
caller gets its own result only after that commit, so a 2xx from the proxy means the work is
durable. Under load this turns N concurrent commands into a few transactions instead of N.

Overload: when the mailbox stays full for ``enqueue_timeout`` the caller gets :class:`Overloaded`
(the proxy answers 503 with Retry-After) instead of an ever-growing queue.

The mailbox belongs to the :class:`Dispatcher` object, not to the task running :meth:`run`, so
a crash-and-restart of that task by its supervisor loses no queued submission; the batch in
flight when it crashed is answered with the error first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import outcome
import trio

from dcorch.db.schema import new_uuid
from dcorch.engine.batching import receive_batch
from dcorch.metrics import Metrics
from dcorch.proxy.errors import Overloaded
from dcorch.settings import DispatcherSettings
from dcorch.work import EnqueueResult, WorkOrder

logger = logging.getLogger(__name__)

CommitListener = Callable[[Sequence[EnqueueResult], Sequence[WorkOrder]], None]


@dataclass(slots=True)
class Submission:
    """One caller's work orders and the one-shot channel its result goes back on."""

    orders: tuple[WorkOrder, ...]
    reply: trio.MemorySendChannel[outcome.Outcome[list[EnqueueResult]]]
    arrived: float = field(default_factory=trio.current_time)


class Dispatcher:
    """Group-committing writer of work orders (the proxy's ``WorkSink``)."""

    def __init__(
        self,
        db: Any,
        settings: DispatcherSettings,
        *,
        metrics: Metrics | None = None,
        on_committed: CommitListener | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._on_committed = on_committed
        self._send, self._receive = trio.open_memory_channel[Submission](settings.mailbox_size)
        self.batches = 0
        self.committed_submissions = 0

    def set_commit_listener(self, listener: CommitListener) -> None:
        """Who is told (synchronously, after each commit) which work was written."""
        self._on_committed = listener

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self._send.statistics()

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        """Write ``orders`` in one transaction (shared with concurrent callers) and return.

        Raises:
            Overloaded: the mailbox stayed full for ``enqueue_timeout`` seconds.
            dcorch.db.errors.DatabaseError: the work could not be committed.
        """
        reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[list[EnqueueResult]]](
            1
        )
        # Keys set once, before any attempt: a batch retried after an ambiguous failure (or
        # re-committed one by one) finds its jobs already written instead of writing them twice.
        keyed = tuple(
            order if order.job_uuid else dataclasses.replace(order, job_uuid=new_uuid())
            for order in orders
        )
        submission = Submission(keyed, reply_send)
        try:
            with trio.fail_after(self._settings.enqueue_timeout):
                await self._send.send(submission)
        except trio.TooSlowError:
            raise Overloaded(self._settings.retry_after) from None
        async with reply_receive:
            result = await reply_receive.receive()
        return result.unwrap()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox forever (a supervised child)."""
        task_status.started()
        while True:
            batch = await receive_batch(self._receive, self._settings.max_batch)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[Submission]) -> None:
        try:
            await self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                _reply(batch[0], outcome.Error(exc))
                return
            # One caller's bad order must not fail the others: commit each on its own.
            logger.info("dispatcher.batch_failed size=%d error=%s", len(batch), type(exc).__name__)
            for submission in batch:
                try:
                    await self._commit([submission])
                except Exception as single_exc:
                    _reply(submission, outcome.Error(single_exc))
        except BaseException as exc:
            # Cancelled (shutdown) or a crash: answer everyone in flight before unwinding.
            for submission in batch:
                _reply(submission, outcome.Error(RuntimeError("dispatcher stopped")))
            raise exc

    async def _commit(self, batch: list[Submission]) -> None:
        orders = [order for submission in batch for order in submission.orders]
        results: list[EnqueueResult] = await self._db.enqueue_work(orders)
        self.batches += 1
        now = trio.current_time()
        offset = 0
        for submission in batch:
            mine = results[offset : offset + len(submission.orders)]
            offset += len(submission.orders)
            self._metrics.enqueue_latency.observe(now - submission.arrived)
            self.committed_submissions += 1
            _reply(submission, outcome.Value(list(mine)))
        if self._on_committed is not None:
            try:
                self._on_committed(results, orders)
            except Exception:
                # The work is committed and acknowledged; a failed wake-up is recovered by the
                # engine's safety sweep, so it must not make the batch look failed (and be
                # written twice by the one-by-one fallback).
                logger.exception("dispatcher.commit_listener_failed")


def _reply(submission: Submission, result: outcome.Outcome[list[EnqueueResult]]) -> None:
    # A caller that went away (client disconnected) must not crash the dispatcher.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        submission.reply.send_nowait(result)
