"""The database: :func:`open_database` and its one face, :class:`Database`.

Usage::

    async with open_database(settings) as db:          # or a URL string
        await db.add_subcloud("subcloud1", management_ip="10.0.0.1")
        results = await db.enqueue_work([order])

Every method is one unit of work (a function of ``units_*.py``) returning frozen values. Reads run
at once on a pool connection; writes are grouped into few transactions by the dispatcher
(:mod:`dcorch.db.dispatcher`), work orders first; :mod:`dcorch.db.reads` merges
``pending_requests`` calls. Both are supervised tasks of the database's own actor system, so a
crash loses nothing queued. ``docs/database.md`` explains the threads and transactions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, final

import trio
from sqlalchemy import Connection

from actors import ActorSystem, NodeSnapshot, TaskSpec, open_actor_system
from dcorch import constants as c
from dcorch.db import migrate
from dcorch.db import units_requests as ur
from dcorch.db import units_resources as rs
from dcorch.db import units_subclouds as us
from dcorch.db.bridge import AsyncioThreadBridge
from dcorch.db.commits import CommitFeed, Committed
from dcorch.db.dispatcher import Dispatcher
from dcorch.db.engine import create_engine_for, is_sqlite
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.reads import PendingReads
from dcorch.db.rows import (
    PendingRequest,
    PurgeCounts,
    RequestUpdate,
    ResourceRow,
    SubcloudBacklog,
    SubcloudResourceRow,
    SubcloudRow,
    SubcloudSyncRow,
)
from dcorch.db.runner import DatabaseStatistics, Execute, UnitRunner
from dcorch.settings import ActorSettings, DatabaseSettings, DispatcherSettings, Settings
from dcorch.supervision import restart_policy
from dcorch.work import EnqueueResult, WorkOrder

P = ParamSpec("P")
T = TypeVar("T")

POSTGRESQL_WRITERS = 4
"""Bookkeeping transactions in flight at once on PostgreSQL (SQLite has a single writer)."""


@dataclass(frozen=True, slots=True)
class DatabaseSeams:
    """Where tests inject faults into the store (production passes none).

    Attributes:
        wrap_execute: wraps the unit executor, e.g. to fail a unit once or commit, then raise.
        feed: the commit feed the dispatcher publishes to (a test subclass may fail).
    """

    wrap_execute: Callable[[Execute], Execute] | None = None
    feed: CommitFeed | None = None


NO_SEAMS: Final = DatabaseSeams()
"""Production: nothing injected."""


@asynccontextmanager
async def open_database(
    target: Settings | str,
    *,
    database: DatabaseSettings | None = None,
    dispatcher: DispatcherSettings | None = None,
    check_schema: bool = True,
    observe_latency: Callable[[float], None] | None = None,
    seams: DatabaseSeams = NO_SEAMS,
) -> AsyncIterator[Database]:
    """Start the database thread, the dispatcher and the batched reads; stop them on exit.

    Args:
        target: the process settings (URL from ``Settings.database_url``) or a database URL.
        database: database tunables; defaults to ``target.database`` or the built-in defaults.
        dispatcher: the dispatcher's tunables; defaults like ``database``.
        check_schema: unless the database is at the code's migration head, refuse to start
            (:class:`SchemaOutOfDate`); off for migration tooling and for the DB-sync agent,
            whose database is keystone's (``docs/dbsync.md``).
        observe_latency: told each work order submission's seconds from queue to commit.
        seams: fault injection for tests.

    On exit new work is refused, queued work is committed, running units finish (shielded), and
    the engine is disposed on its own loop before the thread stops.
    """
    if isinstance(target, Settings):
        url = target.database_url
        dbs = database or target.database
        dps = dispatcher or target.dispatcher
        supervision = target.actors
    else:
        url, dbs, dps = target, database or DatabaseSettings(), dispatcher or DispatcherSettings()
        supervision = ActorSettings()
    bridge = AsyncioThreadBridge()
    await bridge.start()
    try:
        # Built on the asyncio thread that will use it.
        engine = await bridge.run_sync(create_engine_for, url, dbs)
        try:
            runner = UnitRunner(bridge, engine, dbs)
            execute: Execute = runner.execute
            if seams.wrap_execute is not None:
                execute = seams.wrap_execute(execute)
            if check_schema:
                current = await runner.execute(migrate.revision_of, (), False)
                await trio.to_thread.run_sync(migrate.check_revision, current)
            sqlite = is_sqlite(url)
            writer = Dispatcher(
                execute,
                dps,
                units_queue=dbs.mailbox_size,
                writers=1 if sqlite else POSTGRESQL_WRITERS,
                exclusive=sqlite,
                feed=seams.feed,
                observe_latency=observe_latency,
            )
            reads = PendingReads(execute)
            async with open_actor_system(
                TaskSpec(name="dispatcher", fn=writer.run),
                TaskSpec(name="reads", fn=reads.run),
                name="database",
                **restart_policy(supervision),
            ) as system:
                db = Database(runner, execute, writer, reads, system, sqlite=sqlite)
                try:
                    yield db
                finally:
                    db.close()
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(engine.dispose)
    finally:
        with trio.CancelScope(shield=True):
            await bridge.stop()


@final
class Database:
    """Handle to the running database (create it with :func:`open_database`)."""

    def __init__(
        self,
        runner: UnitRunner,
        execute: Execute,
        dispatcher: Dispatcher,
        reads: PendingReads,
        system: ActorSystem,
        *,
        sqlite: bool,
    ) -> None:
        self._runner = runner
        self._execute = execute
        self._system = system
        self.dispatcher = dispatcher
        """The group-commit writer (statistics, and the commit feed the engine consumes)."""
        self.reads = reads
        """The batched pending-request reads (statistics)."""
        self.backend = "sqlite" if sqlite else "postgresql"
        """``sqlite`` or ``postgresql``."""
        self._closed = False

    def close(self) -> None:
        """Refuse new calls; what is queued is still committed (``open_database`` closes it)."""
        self._closed = True
        self.dispatcher.close()
        self.reads.close()

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Database {s.backend} orders {s.orders_queued} writes {s.writes_queued} "
            f"in-flight {s.in_flight} units {s.units_run} retries {s.retries}>"
        )

    @property
    def commits(self) -> CommitFeed:
        """Pairs that received committed work, for the sync manager (see ``db.commits``)."""
        return self.dispatcher.feed

    def statistics(self) -> DatabaseStatistics:
        """Queue depths, units in flight and counters (never blocks)."""
        return DatabaseStatistics(
            backend=self.backend,
            orders_queued=self.dispatcher.orders_queued,
            writes_queued=self.dispatcher.units_queued,
            in_flight=int(self._runner.limiter.borrowed_tokens),
            units_run=self._runner.units_run,
            retries=self._runner.retries,
        )

    def snapshot(self) -> NodeSnapshot:
        """The database's supervision tree (dispatcher and reads: restarts, states)."""
        return self._system.snapshot()

    # -- generic ---------------------------------------------------------------------------

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run the write unit ``fn(conn, *args, **kwargs)``, committed by the dispatcher."""
        unit = partial(fn, **kwargs) if kwargs else fn
        value: T = await self.dispatcher.write(unit, args)
        return value

    async def run_readonly(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run the read-only unit ``fn(conn, *args, **kwargs)`` in its own transaction."""
        if self._closed:
            raise DatabaseUnavailable("the database is closed")
        unit = partial(fn, **kwargs) if kwargs else fn
        value: T = await self._execute(unit, args, False)
        return value

    # -- subclouds ---------------------------------------------------------------------------

    async def add_subcloud(
        self,
        region_name: str,
        *,
        software_version: str = "",
        management_ip: str = "",
        endpoint_types: Sequence[str] = c.SYNC_ENDPOINT_TYPES,
        endpoints: Mapping[str, str] | None = None,
    ) -> SubcloudRow:
        """Create a subcloud and its sync rows; :class:`SubcloudAlreadyExists` if present.

        ``endpoints``: service (``keystone``, ``sysinv``, ``dcdbsync``) -> URL given for it.
        """
        return await self.run(
            us.add_subcloud,
            region_name,
            software_version,
            management_ip,
            tuple(endpoint_types),
            dict(endpoints or {}),
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
        """Store new states; derives ``initial_sync_state`` (unchanged: no-op).

        See docs/behaviour.md#subcloud-lifecycle.
        """
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
        endpoints: Mapping[str, str] | None = None,
    ) -> SubcloudRow:
        """Change the software version, management IP and/or given endpoints (``{}``: none)."""
        return await self.run(
            us.update_subcloud,
            region_name,
            software_version,
            management_ip,
            None if endpoints is None else dict(endpoints),
        )

    async def delete_subcloud(self, region_name: str) -> None:
        """Delete a subcloud with its sync rows, resource mappings and orch_requests."""
        await self.run(us.delete_subcloud, region_name)

    async def add_sync_endpoint_types(
        self, region_name: str, endpoint_types: Sequence[str]
    ) -> SubcloudRow:
        """Sync these endpoint types too: capabilities and a fresh sync row for each new one."""
        return await self.run(us.add_sync_endpoint_types, region_name, tuple(endpoint_types))

    async def remove_sync_endpoint_types(
        self, region_name: str, endpoint_types: Sequence[str]
    ) -> SubcloudRow:
        """Stop syncing these endpoint types: out of capabilities, sync rows deleted."""
        return await self.run(us.remove_sync_endpoint_types, region_name, tuple(endpoint_types))

    async def request_sync(self, endpoint_type: str) -> frozenset[tuple[str, str]]:
        """Mark every managed pair of the endpoint type requested and wake them all.

        For work written by someone else (upstream's ``sync_request`` cast): the pairs go out on
        the commit feed like committed work orders, so the engine learns of them the one way it
        learns of all work, and drops the master answers it cached.
        """
        pairs = frozenset(await self.run(us.request_sync, endpoint_type))
        if pairs:
            self.commits.publish(Committed(pairs))
        return pairs

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
        """Record work orders, all or none, before any other write waiting (``units_work``).

        Raises:
            dcorch.work.Overloaded: the dispatcher's orders lane stayed full.
        """
        return await self.dispatcher.submit(orders)

    submit = enqueue_work
    """The :class:`dcorch.work.WorkSink` name of :meth:`enqueue_work`."""

    async def pending_requests(
        self,
        region_name: str,
        endpoint_type: str,
        *,
        states: Sequence[str] = c.ORCH_REQUEST_PENDING_STATES,
        limit: int | None = None,
    ) -> list[PendingRequest]:
        """Live requests of one pair in ``states``, oldest (lowest id) first."""
        if limit is None:
            return await self.reads.pending(region_name, endpoint_type, tuple(states))
        return await self.run_readonly(
            ur.pending_requests, region_name, endpoint_type, tuple(states), limit
        )

    async def completed_requests(self, region_name: str, *, limit: int) -> list[PendingRequest]:
        """The region's ``limit`` latest completed requests not purged yet, oldest first."""
        return await self.run_readonly(ur.completed_requests, region_name, limit)

    async def later_delete_exists(
        self, region_name: str, resource_id: int, after_request_id: int
    ) -> bool:
        """A delete of the resource for that region, recorded after the request, queued or done."""
        return await self.run_readonly(
            ur.later_delete_exists, region_name, resource_id, after_request_id
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

    async def subcloud_backlogs(
        self, regions: Sequence[str] | None = None
    ) -> list[SubcloudBacklog]:
        """Each subcloud's (or each named one's) states and queued/in-progress request count."""
        return await self.run_readonly(
            ur.subcloud_backlogs, None if regions is None else tuple(regions)
        )

    async def request_regions(self, resource_type: str, master_id: str) -> list[str]:
        """Regions of every request, completed included, recorded for one master resource."""
        return await self.run_readonly(ur.request_regions, resource_type, master_id)

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
