"""Queues that batch loops drain, and the loop itself: the heart of every group commit.

A caller :meth:`Lane.put` s its request and waits for its :class:`~dcorch.db.reply.Reply`; a
loop (:func:`run_batches`) waits once for *something* to arrive, then takes whatever is queued
(:meth:`Lane.take`, never waiting), so a lone request's latency stays one hop while everything
that queued up during the previous transaction rides along in the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sized
from typing import Generic, TypeVar

import trio

from dcorch.db.errors import DatabaseUnavailable

T = TypeVar("T")
B = TypeVar("B", bound=Sized)


class Bell:
    """Wakes the loop: rung by every :meth:`Lane.put`, waited on when every lane is empty."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Wait for the next ring (call only right after finding the lanes empty)."""
        self._event = trio.Event()
        await self._event.wait()


class Lane(Generic[T]):
    """One bounded queue of requests."""

    def __init__(self, size: int, bell: Bell) -> None:
        self._send, self._receive = trio.open_memory_channel[T](max(1, size))
        self._bell = bell
        self.open = True

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the lane is full.

        Raises:
            DatabaseUnavailable: the lane is closed (the database is shutting down).
        """
        try:
            await self._send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise DatabaseUnavailable("the database is closed") from None
        self._bell.ring()

    def take(self, max_items: int) -> list[T]:
        """Whatever is queued right now, up to ``max_items`` (never waits)."""
        batch: list[T] = []
        while len(batch) < max_items:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.open = False
                break
        return batch

    def close(self) -> None:
        """Refuse new requests; queued ones are still taken."""
        self._send.close()
        self._bell.ring()


async def run_batches(
    next_batch: Callable[[], Awaitable[B]],
    handle: Callable[[B], Awaitable[None]],
    concurrency: int,
    task_status: trio.TaskStatus[None],
) -> None:
    """Handle batches, ``concurrency`` at a time, until ``next_batch`` returns an empty one.

    ``handle`` answers its batch's callers whatever happens. When it raises (a bug), its slot
    is not given back, so nothing more is taken, and the error ends the loop as itself (not in
    an exception group) for the supervisor that restarts it.
    """
    slots = trio.Semaphore(max(1, concurrency))

    async def one(batch: B) -> None:
        await handle(batch)
        slots.release()

    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await slots.acquire()
                batch = await next_batch()
                if not batch:
                    return
                nursery.start_soon(one, batch)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
