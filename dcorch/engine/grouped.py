"""Group commit and batched reads for the sync actors (stack.md 3.3 and 7).

Every database call is one transaction and one crossing to the asyncio thread, and SQLite has a
single writer. At a thousand subclouds the actors' small writes (request in progress, request
completed, mapping upsert, pair status) queued one behind the other, each paying a full
transaction; one work order took tens of seconds to reach every subcloud.

:class:`GroupedDatabase` sits between the engine and the database actor and speaks the same
:class:`~dcorch.engine.ports.EngineDatabase` interface, so drivers, audits and the status book are
unchanged:

* **Writes** are queued to one writer task, which takes everything queued (up to
  :data:`MAX_BATCH`) and runs it as ONE transaction (:func:`units_sync.run_batch`). Each caller
  still waits for the commit of its own write, so "written" means committed, as before. If any
  unit of a batch fails, the batch is rolled back and its units are run again one by one, so
  every caller gets exactly the outcome it would have had alone.
* **pending_requests** calls are merged the same way into one query for many pairs
  (:func:`units_sync.pending_requests_many`). A read issued after a write returned sees it.
* Everything else passes straight through.

While :meth:`run` is not running (before the manager starts, after it stops) every call goes
straight to the database, one transaction each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar, cast

import outcome
import trio

from dcorch import constants as c
from dcorch.db import units_requests as ur
from dcorch.db import units_resources as rs
from dcorch.db import units_subclouds as us
from dcorch.db import units_sync
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.rows import (
    PendingRequest,
    RequestUpdate,
    ResourceRow,
    SubcloudResourceRow,
    SubcloudRow,
    SubcloudSyncRow,
)
from dcorch.engine.batching import receive_batch
from dcorch.engine.ports import EngineDatabase
from dcorch.work import EnqueueResult, WorkOrder

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH: Final = 500
"""Units per group-commit transaction (and pairs per batched read)."""
QUEUE_SIZE: Final = 4096
"""Bound of the write and read queues (callers wait when they are full)."""


async def _capture(fn: Callable[..., Any], *args: Any) -> outcome.Outcome[Any]:
    """Like ``outcome.acapture`` but for ``Exception`` only: cancellation propagates."""
    try:
        return outcome.Value(await fn(*args))
    except Exception as exc:
        return outcome.Error(exc)


def _abandon(ops: Sequence[_Waiter]) -> None:
    """Resolve whatever a cancelled batch did not answer (its callers are going away too)."""
    gone = outcome.Error(DatabaseUnavailable("sync engine database queue stopped"))
    for op in ops:
        op.resolve(gone)


class UnitDatabase(EngineDatabase, Protocol):
    """The database actor's generic entry points (``dcorch.db.Database``)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run_readonly(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(eq=False, slots=True)
class _Waiter:
    """One caller's slot: set once with the outcome of its unit."""

    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[Any] | None = None

    def resolve(self, result: outcome.Outcome[Any]) -> None:
        if self.result is None:
            self.result = result
            self.done.set()

    async def wait(self) -> Any:
        await self.done.wait()
        assert self.result is not None
        return self.result.unwrap()


@dataclass(eq=False, slots=True)
class _Write(_Waiter):
    fn: Callable[..., Any] = units_sync.run_batch
    args: tuple[Any, ...] = ()


@dataclass(eq=False, slots=True)
class _Read(_Waiter):
    region: str = ""
    endpoint_type: str = ""
    states: tuple[str, ...] = ()


@dataclass(slots=True)
class GroupStatistics:
    """Counters (for the bench and tests)."""

    write_batches: int = 0
    writes: int = 0
    write_fallbacks: int = 0
    read_batches: int = 0
    reads: int = 0


class GroupedDatabase:
    """The engine's view of the database with group commit (see the module docstring).

    Args:
        db: the database actor.
        writers: write transactions in flight at once (1 on SQLite, its single writer; a few on
            PostgreSQL).
        readers: batched reads in flight at once.
    """

    def __init__(self, db: UnitDatabase, *, writers: int = 1, readers: int = 2) -> None:
        self._db = db
        self._writers = max(1, writers)
        self._readers = max(1, readers)
        self._writes: trio.MemorySendChannel[_Write] | None = None
        self._reads: trio.MemorySendChannel[_Read] | None = None
        self.statistics = GroupStatistics()

    def __repr__(self) -> str:
        state = "running" if self._writes is not None else "direct"
        return f"<GroupedDatabase {state} {self.statistics}>"

    @property
    def raw(self) -> UnitDatabase:
        """The database actor underneath."""
        return self._db

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the queues until cancelled; queued callers then get DatabaseUnavailable."""
        write_send, write_recv = trio.open_memory_channel[_Write](QUEUE_SIZE)
        read_send, read_recv = trio.open_memory_channel[_Read](QUEUE_SIZE)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_writes, write_recv)
                nursery.start_soon(self._serve_reads, read_recv)
                self._writes, self._reads = write_send, read_send
                task_status.started()
        finally:
            self._writes = self._reads = None
            for recv in (write_recv, read_recv):
                recv_any = cast(trio.MemoryReceiveChannel[_Waiter], recv)
                while True:
                    try:
                        _abandon([recv_any.receive_nowait()])
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break

    # -- the queues -------------------------------------------------------------------------

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        send = self._writes
        if send is None:
            return await self._db.run(fn, *args)
        op = _Write(fn=fn, args=args)
        try:
            await send.send(op)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return await self._db.run(fn, *args)
        value: T = await op.wait()
        return value

    async def _serve_writes(self, recv: trio.MemoryReceiveChannel[_Write]) -> None:
        limiter = trio.Semaphore(self._writers)
        async with trio.open_nursery() as nursery:
            while True:
                await limiter.acquire()
                # Take the batch only once a writer is free: what queued meanwhile joins it.
                batch = await receive_batch(recv, MAX_BATCH)
                nursery.start_soon(self._commit, batch, limiter)

    async def _commit(self, batch: list[_Write], limiter: trio.Semaphore) -> None:
        try:
            self.statistics.write_batches += 1
            self.statistics.writes += len(batch)
            if len(batch) == 1:
                op = batch[0]
                op.resolve(await _capture(self._db.run, op.fn, *op.args))
                return
            ops = tuple((op.fn, op.args) for op in batch)
            res = await _capture(self._db.run, units_sync.run_batch, ops)
            if isinstance(res, outcome.Value):
                for op, value in zip(batch, res.value, strict=True):
                    op.resolve(outcome.Value(value))
                return
            if isinstance(res, outcome.Error) and isinstance(res.error, DatabaseUnavailable):
                for op in batch:
                    op.resolve(res)
                return
            # One unit failed (a vanished subcloud, a conflict): give each its own transaction.
            self.statistics.write_fallbacks += 1
            for op in batch:
                op.resolve(await _capture(self._db.run, op.fn, *op.args))
        finally:
            _abandon(batch)
            limiter.release()

    async def _serve_reads(self, recv: trio.MemoryReceiveChannel[_Read]) -> None:
        limiter = trio.Semaphore(self._readers)
        async with trio.open_nursery() as nursery:
            while True:
                await limiter.acquire()
                batch = await receive_batch(recv, MAX_BATCH)
                nursery.start_soon(self._read_batch, batch, limiter)

    async def _read_batch(self, batch: list[_Read], limiter: trio.Semaphore) -> None:
        try:
            by_states: dict[tuple[str, ...], list[_Read]] = {}
            for op in batch:
                by_states.setdefault(op.states, []).append(op)
            for states, ops in by_states.items():
                self.statistics.read_batches += 1
                self.statistics.reads += len(ops)
                pairs = sorted({(op.region, op.endpoint_type) for op in ops})
                res = await _capture(
                    self._db.run_readonly, units_sync.pending_requests_many, tuple(pairs), states
                )
                for op in ops:
                    if isinstance(res, outcome.Value):
                        op.resolve(outcome.Value(list(res.value[(op.region, op.endpoint_type)])))
                    else:
                        op.resolve(res)
        finally:
            _abandon(batch)
            limiter.release()

    # -- batched -----------------------------------------------------------------------------

    async def pending_requests(
        self,
        region: str,
        endpoint_type: str,
        *,
        states: Sequence[str] = c.ORCH_REQUEST_PENDING_STATES,
        limit: int | None = None,
    ) -> list[PendingRequest]:
        send = self._reads
        if send is None or limit is not None:
            return await self._db.pending_requests(
                region, endpoint_type, states=states, limit=limit
            )
        op = _Read(region=region, endpoint_type=endpoint_type, states=tuple(states))
        try:
            await send.send(op)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return await self._db.pending_requests(region, endpoint_type, states=states)
        rows: list[PendingRequest] = await op.wait()
        return rows

    async def update_requests(self, updates: Sequence[RequestUpdate]) -> list[int]:
        return await self._write(ur.update_requests, tuple(updates))

    async def update_subcloud_sync(
        self, region_name: str, endpoint_type: str, **fields: Any
    ) -> SubcloudSyncRow:
        unknown = sorted(set(fields) - us.SUBCLOUD_SYNC_FIELDS)
        if unknown:
            raise ValueError(f"not a subcloud_sync field: {', '.join(unknown)}")
        return await self._write(us.update_subcloud_sync, region_name, endpoint_type, fields)

    async def set_initial_sync_state(
        self, region: str, from_state: str, to_state: str, *, subsequent_sync: bool | None = None
    ) -> bool:
        return await self._write(
            us.set_initial_sync_state, region, from_state, to_state, subsequent_sync
        )

    async def soft_delete_failed_requests(
        self, region: str, endpoint_type: str, older_than: datetime
    ) -> int:
        return await self._write(ur.soft_delete_failed_requests, region, endpoint_type, older_than)

    async def upsert_subcloud_resource(
        self,
        region: str,
        resource_type: str,
        master_id: str,
        subcloud_resource_id: str,
        *,
        shared_config_state: str | None = None,
    ) -> SubcloudResourceRow:
        return await self._write(
            rs.upsert_subcloud_resource,
            region,
            resource_type,
            master_id,
            subcloud_resource_id,
            shared_config_state,
        )

    async def delete_subcloud_resource(
        self, region: str, resource_type: str, master_id: str
    ) -> bool:
        return await self._write(rs.delete_subcloud_resource, region, resource_type, master_id)

    # -- straight through --------------------------------------------------------------------

    async def get_subcloud(self, region: str) -> SubcloudRow:
        return await self._db.get_subcloud(region)

    async def list_subclouds(self) -> list[SubcloudRow]:
        return await self._db.list_subclouds()

    async def list_subcloud_syncs(self, region: str | None = None) -> list[SubcloudSyncRow]:
        return await self._db.list_subcloud_syncs(region)

    async def enqueue_work(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        return await self._db.enqueue_work(orders)

    async def get_subcloud_resource(
        self, region: str, resource_type: str, master_id: str
    ) -> SubcloudResourceRow | None:
        return await self._db.get_subcloud_resource(region, resource_type, master_id)

    async def list_subcloud_resources(
        self, region: str, resource_type: str | None = None
    ) -> list[SubcloudResourceRow]:
        return await self._db.list_subcloud_resources(region, resource_type)

    async def list_resources(self, resource_type: str) -> list[ResourceRow]:
        return await self._db.list_resources(resource_type)
