"""The public face of the database actor: :func:`open_database` and :class:`Database`.

Usage::

    async with open_database(settings) as db:          # or a URL string
        await db.add_subcloud("subcloud1", management_ip="10.0.0.1")
        results = await db.enqueue_work([order])

Every method is one unit of work: one mailbox message, one transaction, one crossing to the
asyncio thread, plain frozen values back. Method names are the contract other actors code
against; the units themselves live in ``units_*.py`` and can also be run with :meth:`run`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, final

import outcome
import trio

from dcorch import constants as c
from dcorch.db import migrate
from dcorch.db import units_requests as ur
from dcorch.db import units_resources as rs
from dcorch.db import units_subclouds as us
from dcorch.db.actor import Call, DatabaseStatistics, UnitRunner
from dcorch.db.bridge import AsyncioThreadBridge
from dcorch.db.engine import create_engine_for, is_sqlite
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.rows import (
    PendingRequest,
    PurgeCounts,
    RequestUpdate,
    ResourceRow,
    SubcloudResourceRow,
    SubcloudRow,
    SubcloudSyncRow,
)
from dcorch.db.units_work import enqueue_work as _enqueue_work
from dcorch.settings import DatabaseSettings, Settings
from dcorch.work import EnqueueResult, WorkOrder

T = TypeVar("T")


@asynccontextmanager
async def open_database(
    target: Settings | str,
    *,
    database: DatabaseSettings | None = None,
    check_schema: bool = True,
) -> AsyncIterator[Database]:
    """Start the database actor and its asyncio thread; stop both on exit.

    Args:
        target: the process settings (URL from ``Settings.database_url``) or a database URL.
        database: database tunables; defaults to ``target.database`` or the built-in defaults.
        check_schema: refuse to start (:class:`SchemaOutOfDate`) unless the database is at the
            code's migration head. Only migration tooling should turn this off.

    On exit the mailbox is closed, calls already taken finish (they are shielded), and the
    engine is disposed on its own loop before the thread stops.
    """
    if isinstance(target, Settings):
        url, dbs = target.database_url, database or target.database
    else:
        url, dbs = target, database or DatabaseSettings()
    bridge = AsyncioThreadBridge()
    await bridge.start()
    try:
        # Built on the asyncio thread that will use it.
        engine = await bridge.run_sync(create_engine_for, url, dbs)
        try:
            runner = UnitRunner(bridge, engine, dbs, sqlite=is_sqlite(url))
            if check_schema:
                current = await runner.execute(migrate.revision_of, (), write=False)
                await trio.to_thread.run_sync(migrate.check_revision, current)
            send, recv = trio.open_memory_channel[Call](dbs.mailbox_size)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.serve, recv)
                with send:
                    yield Database(send, runner, url, dbs.mailbox_size)
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(engine.dispose)
    finally:
        with trio.CancelScope(shield=True):
            await bridge.stop()


@final
class Database:
    """Handle to the running database actor (create it with :func:`open_database`)."""

    def __init__(
        self,
        mailbox: trio.MemorySendChannel[Call],
        runner: UnitRunner,
        url: str,
        mailbox_size: int,
    ) -> None:
        self._mailbox = mailbox
        self._runner = runner
        self._mailbox_size = mailbox_size
        self.backend = "sqlite" if is_sqlite(url) else "postgresql"
        """``sqlite`` or ``postgresql``."""

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Database {s.backend} mailbox {s.mailbox_used}/{s.mailbox_size} "
            f"in-flight {s.in_flight} units {s.units_run} retries {s.retries}>"
        )

    def statistics(self) -> DatabaseStatistics:
        """Mailbox depth, units in flight and counters (never blocks)."""
        return DatabaseStatistics(
            backend=self.backend,
            mailbox_used=self._mailbox.statistics().current_buffer_used,
            mailbox_size=self._mailbox_size,
            in_flight=int(self._runner.limiter.borrowed_tokens),
            units_run=self._runner.units_run,
            retries=self._runner.retries,
        )

    # -- generic ---------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` (a sync Core unit) in one write transaction."""
        return await self._call(fn, args, write=True)

    async def run_readonly(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`run` for units that only read (they run beside a SQLite writer)."""
        return await self._call(fn, args, write=False)

    async def _call(self, fn: Callable[..., T], args: tuple[Any, ...], *, write: bool) -> T:
        reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome[Any]](1)
        try:
            await self._mailbox.send(Call(fn, args, write, reply_send))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            reply_send.close()
            raise DatabaseUnavailable("database actor is closed") from None
        with reply_recv:
            try:
                res = await reply_recv.receive()
            except trio.EndOfChannel:
                raise DatabaseUnavailable("database actor stopped before replying") from None
        value: T = res.unwrap()
        return value

    # -- subclouds ---------------------------------------------------------------------------

    async def add_subcloud(
        self,
        region_name: str,
        *,
        software_version: str = "",
        management_ip: str = "",
        endpoint_types: Sequence[str] = c.SYNC_ENDPOINT_TYPES,
    ) -> SubcloudRow:
        """Create a subcloud and its sync rows; :class:`SubcloudAlreadyExists` if present."""
        return await self.run(
            us.add_subcloud, region_name, software_version, management_ip, tuple(endpoint_types)
        )

    async def get_subcloud(self, region_name: str) -> SubcloudRow:
        """The subcloud of that region; :class:`SubcloudNotFound` if absent."""
        return await self.run_readonly(us.get_subcloud, region_name)

    async def list_subclouds(self) -> list[SubcloudRow]:
        """All subclouds in id order."""
        return await self.run_readonly(us.list_subclouds)

    async def update_subcloud_states(
        self,
        region_name: str,
        *,
        management_state: str | None = None,
        availability_status: str | None = None,
    ) -> SubcloudRow:
        """Store new states; derives ``initial_sync_state`` as spec 7/9 (unchanged: no-op)."""
        return await self.run(
            us.update_subcloud_states, region_name, management_state, availability_status
        )

    async def set_initial_sync_state(
        self,
        region_name: str,
        from_state: str,
        to_state: str,
        *,
        subsequent_sync: bool | None = None,
    ) -> bool:
        """CAS of ``initial_sync_state``; ``subsequent_sync`` is written only if it succeeds."""
        return await self.run(
            us.set_initial_sync_state, region_name, from_state, to_state, subsequent_sync
        )

    async def update_subcloud(
        self,
        region_name: str,
        *,
        software_version: str | None = None,
        management_ip: str | None = None,
    ) -> SubcloudRow:
        """Change the software version and/or management IP."""
        return await self.run(us.update_subcloud, region_name, software_version, management_ip)

    async def delete_subcloud(self, region_name: str) -> None:
        """Delete a subcloud with its sync rows, resource mappings and orch_requests."""
        await self.run(us.delete_subcloud, region_name)

    async def list_subcloud_syncs(self, region_name: str | None = None) -> list[SubcloudSyncRow]:
        """Sync rows of one subcloud (or all), by region then endpoint type."""
        return await self.run_readonly(us.list_subcloud_syncs, region_name)

    async def update_subcloud_sync(
        self, region_name: str, endpoint_type: str, **fields: Any
    ) -> SubcloudSyncRow:
        """Write columns of one pair's sync row (see ``SUBCLOUD_SYNC_FIELDS``)."""
        unknown = sorted(set(fields) - us.SUBCLOUD_SYNC_FIELDS)
        if unknown:
            raise ValueError(f"not a subcloud_sync field: {', '.join(unknown)}")
        return await self.run(us.update_subcloud_sync, region_name, endpoint_type, fields)

    # -- work ----------------------------------------------------------------------------------

    async def enqueue_work(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        """Record work orders (one transaction for all of them); see ``units_work``."""
        return await self.run(_enqueue_work, tuple(orders))

    async def pending_requests(
        self,
        region_name: str,
        endpoint_type: str,
        *,
        states: Sequence[str] = c.ORCH_REQUEST_PENDING_STATES,
        limit: int | None = None,
    ) -> list[PendingRequest]:
        """Live requests of one pair in ``states``, oldest (lowest id) first."""
        return await self.run_readonly(
            ur.pending_requests, region_name, endpoint_type, tuple(states), limit
        )

    async def update_requests(self, updates: Sequence[RequestUpdate]) -> list[int]:
        """Apply request updates in one transaction; returns the ids actually updated."""
        return await self.run(ur.update_requests, tuple(updates))

    async def soft_delete_failed_requests(
        self, region_name: str, endpoint_type: str, older_than: datetime
    ) -> int:
        """Soft-delete one pair's failed requests not changed since ``older_than``."""
        return await self.run(
            ur.soft_delete_failed_requests, region_name, endpoint_type, older_than
        )

    async def get_most_recent_failed_request(
        self, region_name: str, endpoint_type: str
    ) -> PendingRequest | None:
        """One pair's most recently changed live failed request."""
        return await self.run_readonly(
            ur.get_most_recent_failed_request, region_name, endpoint_type
        )

    async def count_requests_by_state(self) -> dict[str, int]:
        """Live requests per state."""
        return await self.run_readonly(ur.count_requests_by_state)

    async def purge_deleted(self, age_days: float) -> PurgeCounts:
        """Remove old soft-deleted requests, then orphan jobs, then orphan resources."""
        return await self.run(ur.purge_deleted, age_days)

    # -- resources -----------------------------------------------------------------------------

    async def get_subcloud_resource(
        self, region_name: str, resource_type: str, master_id: str
    ) -> SubcloudResourceRow | None:
        """The mapping of a master object in one subcloud, or None."""
        return await self.run_readonly(
            rs.get_subcloud_resource, region_name, resource_type, master_id
        )

    async def list_subcloud_resources(
        self, region_name: str, resource_type: str | None = None
    ) -> list[SubcloudResourceRow]:
        """Mappings of one subcloud, optionally of one resource type."""
        return await self.run_readonly(rs.list_subcloud_resources, region_name, resource_type)

    async def upsert_subcloud_resource(
        self,
        region_name: str,
        resource_type: str,
        master_id: str,
        subcloud_resource_id: str,
        *,
        shared_config_state: str | None = None,
    ) -> SubcloudResourceRow:
        """Create or update a mapping (the resource row is created if needed)."""
        return await self.run(
            rs.upsert_subcloud_resource,
            region_name,
            resource_type,
            master_id,
            subcloud_resource_id,
            shared_config_state,
        )

    async def delete_subcloud_resource(
        self, region_name: str, resource_type: str, master_id: str
    ) -> bool:
        """Remove a mapping; True if it existed."""
        return await self.run(rs.delete_subcloud_resource, region_name, resource_type, master_id)

    async def list_resources(self, resource_type: str) -> list[ResourceRow]:
        """Live resources of one type."""
        return await self.run_readonly(rs.list_resources, resource_type)
