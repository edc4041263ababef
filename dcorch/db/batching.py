"""Requests, replies and the loop that batches them: the heart of every group commit.

A caller :meth:`Lane.put` s its request and waits on its :class:`Reply` (the database's one
request/reply idiom). A loop (:func:`run_batches`) waits for *something*, then takes whatever is
queued (:meth:`Lane.take`, never waiting): a lone request's latency stays one hop, and all that
queued during the previous transaction rides along in the next. Replies are resolved once with
an :class:`outcome.Outcome`; a cancelled caller just stops waiting (resolving it is harmless).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sized
from typing import Generic, TypeVar

import outcome
import trio

from dcorch.db.errors import DatabaseUnavailable

T = TypeVar("T")
B = TypeVar("B", bound=Sized)


class Reply(Generic[T]):
    """Set once with the outcome of one request; later outcomes are ignored."""

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None

    def resolve(self, result: outcome.Outcome[T]) -> None:
        """Deliver ``result`` unless an outcome was already delivered."""
        if self._result is None:
            self._result = result
            self._done.set()

    async def wait(self) -> T:
        """The value, or the error raised, of the request."""
        await self._done.wait()
        assert self._result is not None
        return self._result.unwrap()


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

    ``handle`` answers its callers whatever happens. If it raises (a bug), nothing more is taken,
    batches in flight are cancelled (callers answered) and the error ends the loop, as itself.
    """
    slots = trio.Semaphore(max(1, concurrency))
    crashed: list[Exception] = []

    async def one(batch: B, nursery: trio.Nursery) -> None:
        try:
            await handle(batch)
        except Exception as exc:
            crashed.append(exc)
            nursery.cancel_scope.cancel()
        else:
            slots.release()

    async def take_all(nursery: trio.Nursery) -> None:
        while True:
            await slots.acquire()
            batch = await next_batch()
            if not batch:
                return
            nursery.start_soon(one, batch, nursery)

    async with trio.open_nursery() as nursery:
        task_status.started()
        await take_all(nursery)
    if crashed:
        raise crashed[0]
