"""Batched reads of pending requests: one query answers many sync actors at once.

When a work order fans out to a thousand subclouds, their sync actors all ask for their pair's
pending requests within milliseconds, each a transaction and a thread crossing; merged, they
are a few ``IN (...)`` queries (:func:`dcorch.db.units_sync.pending_requests_many`). A read
issued after a write returned sees it: batches only take requests already queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import outcome
import trio

from dcorch.db import units_sync
from dcorch.db.batching import Bell, Lane, Reply, run_batches
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.rows import PendingRequest
from dcorch.db.runner import Execute

MAX_PAIRS: Final = 500
"""Pairs answered by one batched read."""


@dataclass(eq=False, slots=True)
class _Read:
    region: str
    endpoint_type: str
    states: tuple[str, ...]
    reply: Reply[list[PendingRequest]] = field(default_factory=Reply)


@dataclass(slots=True)
class ReadStatistics:
    batches: int = 0
    reads: int = 0


class PendingReads:
    """Merges concurrent ``pending_requests`` calls (see the module docstring)."""

    def __init__(self, execute: Execute, *, readers: int = 2, queue: int = 4096) -> None:
        self._execute = execute
        self._readers = max(1, readers)
        self._bell = Bell()
        self._lane = Lane[_Read](queue, self._bell)
        self.stats = ReadStatistics()

    async def pending(
        self, region: str, endpoint_type: str, states: tuple[str, ...]
    ) -> list[PendingRequest]:
        """Live requests of one pair in ``states``, oldest first."""
        op = _Read(region, endpoint_type, states)
        await self._lane.put(op)
        return await op.reply.wait()

    def close(self) -> None:
        self._lane.close()

    async def run(  # noqa: ASYNC128 - run_batches calls started()
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer batches until cancelled, or until closed and drained."""
        await run_batches(self._take, self._answer, self._readers, task_status)

    async def _take(self) -> list[_Read]:
        while True:
            batch = self._lane.take(MAX_PAIRS)
            if batch:
                return batch
            if not self._lane.open:
                return []
            await self._bell.wait()

    async def _answer(self, batch: list[_Read]) -> None:
        try:
            by_states: dict[tuple[str, ...], list[_Read]] = {}
            for op in batch:
                by_states.setdefault(op.states, []).append(op)
            for states, ops in by_states.items():
                self.stats.batches += 1
                self.stats.reads += len(ops)
                pairs = tuple(sorted({(op.region, op.endpoint_type) for op in ops}))
                try:
                    found = await self._execute(
                        units_sync.pending_requests_many, (pairs, states), False
                    )
                except Exception as exc:
                    for op in ops:
                        op.reply.resolve(outcome.Error(exc))
                    continue
                for op in ops:
                    op.reply.resolve(outcome.Value(list(found[(op.region, op.endpoint_type)])))
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else DatabaseUnavailable("reads stopped")
            for op in batch:
                op.reply.resolve(outcome.Error(failure))
            raise
