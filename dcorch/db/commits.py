"""The commit feed: which (subcloud, endpoint type) pairs just received committed work.

The dispatcher publishes one :class:`Committed` per committed batch of work orders; the sync
manager consumes them to wake those pairs' sync actors and invalidate its master caches. It is
the only link from the write side to the engine: the dispatcher never calls or waits for it.

Bounded, yet never blocking the writer or losing a wake-up: on a full channel, pairs merge into
one pending set (one entry per pair), received once the consumer has drained the channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import trio

from dcorch.work import EnqueueResult, WorkOrder

Pair = tuple[str, str]
"""``(region_name, endpoint_type)``."""


@dataclass(frozen=True, slots=True)
class Committed:
    """Work was committed for these pairs (the master changed: cached answers are stale)."""

    pairs: frozenset[Pair]

    @classmethod
    def of(cls, results: Iterable[EnqueueResult], orders: Iterable[WorkOrder]) -> Committed:
        return cls(
            frozenset(
                (region, order.endpoint_type)
                for result, order in zip(results, orders, strict=True)
                for region in result.target_regions
            )
        )


class CommitFeed:
    """A bounded channel of :class:`Committed` with a never-blocking, coalescing publish."""

    def __init__(self, size: int = 256) -> None:
        self._send, self._receive = trio.open_memory_channel[Committed](max(1, size))
        self._overflow: set[Pair] = set()
        self._overflowed = False
        self.published = 0
        self.coalesced = 0

    def publish(self, committed: Committed) -> None:
        """Queue ``committed``; merged into the pending set if the channel is full."""
        self.published += 1
        try:
            self._send.send_nowait(committed)
        except trio.WouldBlock:
            self.coalesced += 1
            self._overflowed = True
            self._overflow.update(committed.pairs)

    def pending(self) -> int:
        """Items waiting to be received (the overflow counts as one)."""
        return self._send.statistics().current_buffer_used + int(self._overflowed)

    async def receive(self) -> Committed:
        """The next commit; the merged overflow once the channel is empty."""
        try:
            return self._receive.receive_nowait()
        except trio.WouldBlock:
            if self._overflowed:
                pairs, self._overflow, self._overflowed = self._overflow, set(), False
                return Committed(frozenset(pairs))
        return await self._receive.receive()
