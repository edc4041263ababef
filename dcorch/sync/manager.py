"""The sync manager: one supervised sync actor per managed subcloud, woken by events.

Lifecycle (docs/behaviour.md#subcloud-lifecycle): the v1 API calls
:meth:`SyncManager.subcloud_changed` after changing a subcloud in the database and
:meth:`SyncManager.subcloud_deleted` after a delete; an actor runs while its subcloud is managed,
as a *dynamic* child of the manager's supervisor (actor system ``sync``), restarted with backoff.
Past the restart intensity :meth:`run` fails; the service restarts it, reloading from the database.

Work arrives by events: each commit on the database's feed (:class:`dcorch.db.commits.CommitFeed`)
wakes the actors of the (region, endpoint type) pairs that got requests and invalidates shared
master answers. A slow sweep wakes all every ``safety_sweep_interval`` in case a wake was lost.
"""

from __future__ import annotations

import contextlib
import logging
import random
from functools import partial

import trio

from actors import (
    ActorRef,
    ActorSpec,
    ActorStopped,
    ActorSystem,
    MailboxFull,
    NodeSnapshot,
    open_actor_system,
)
from dcorch import constants as c
from dcorch.db.commits import Committed
from dcorch.db.database import Database
from dcorch.db.errors import SubcloudNotFound
from dcorch.db.rows import SubcloudRow
from dcorch.db.schema import utcnow
from dcorch.remote.clients import CachedMasterClient, StatusReporter
from dcorch.remote.endpoints import EndpointResolver, MasterEndpoints
from dcorch.remote.http import HttpSession
from dcorch.remote.master_health import MasterHealth
from dcorch.settings import ActorSettings, EngineSettings
from dcorch.supervision import restart_policy
from dcorch.sync.drivers import apply_request
from dcorch.sync.env import Driver, SyncEnv, Timers
from dcorch.sync.noop import NoOpCounts
from dcorch.sync.status import Reporter, WallClock
from dcorch.sync.subcloud_actor import SubcloudHandle, SubcloudSyncActor, Wake

logger = logging.getLogger(__name__)


def actor_name(region: str) -> str:
    """Actor names cannot contain ``/``; region names in practice never do."""
    return region.replace("/", "%2F")


class SyncManager:
    """Supervises the per-subcloud sync actors.

    Args:
        db: the database; its commit feed wakes the actors, it takes the audits' repairs.
        settings: ``[engine]`` settings.
        actor_settings: ``[actors]`` settings (restart intensity and backoff of sync actors).
        http: the shared, authenticated HTTP session.
        resolver: where each subcloud's services are.
        master: the System Controller's service endpoints.
        reporter: receives sync status reports; defaults to dcmanager at ``master.dcmanager``.
        driver: applies one request (tests wrap :func:`apply_request` to inject faults).
        rng: jitter source (seed it for reproducible tests).
        wall_clock: naive-UTC clock for database timestamps and request deadlines.
        health: the master's health tracker (the service's one); every call to the master
            goes through it, and its recovery wakes the pairs that waited for the master.
        keyring_password: the central admin password (None: unknown), which the audits set
            on a subcloud's ``admin`` before replacing its record (docs/behaviour.md#audit).
        master_ca_dir: the System Controller's CA files (``master.ca_cert_dir``).
    """

    def __init__(
        self,
        db: Database,
        settings: EngineSettings,
        *,
        actor_settings: ActorSettings,
        http: HttpSession,
        resolver: EndpointResolver,
        master: MasterEndpoints,
        reporter: Reporter | None = None,
        driver: Driver = apply_request,
        rng: random.Random | None = None,
        wall_clock: WallClock = utcnow,
        health: MasterHealth | None = None,
        keyring_password: str | None = None,
        master_ca_dir: str = "",
    ) -> None:
        self._db = db
        self._settings = settings
        self._actor_settings = actor_settings
        self._rng = rng or random.Random()
        self._timers = Timers()
        self._env = SyncEnv(
            db=db,
            settings=settings,
            http=http,
            resolver=resolver,
            master=CachedMasterClient.for_master(http, master, health),
            reporter=reporter or StatusReporter(http, master, health),
            sink=db,
            limiter=trio.CapacityLimiter(max(1, settings.sync_concurrency)),
            timers=self._timers,
            driver=driver,
            rng=self._rng,
            wall_clock=wall_clock,
            noops=NoOpCounts(),
            keyring_password=keyring_password,
            master_ca_dir=master_ca_dir,
        )
        self._handles: dict[str, SubcloudHandle] = {}
        self._refs: dict[str, ActorRef[Wake, None]] = {}
        self._system: ActorSystem | None = None
        self._lifecycle = trio.Lock()
        if health is not None:
            health.on_recovered(self.master_recovered)

    def __repr__(self) -> str:
        state = "running" if self._system is not None else "stopped"
        return f"<SyncManager {state} subclouds {len(self._refs)} timers {len(self._timers)}>"

    def handle(self, region: str) -> SubcloudHandle | None:
        """The shared state of one subcloud's actor (introspection and tests)."""
        return self._handles.get(region)

    @property
    def noops(self) -> NoOpCounts:
        """Requests completed without changing anything, by reason, since start (``/metrics``)."""
        return self._env.noops

    def regions(self) -> list[str]:
        """Regions that currently have a sync actor."""
        return list(self._refs)

    def snapshot(self) -> NodeSnapshot:
        """The supervision tree (restarts, states, mailbox depths) as plain data."""
        if self._system is None:
            raise ActorStopped("sync manager is not running")
        return self._system.snapshot()

    async def run(  # noqa: ASYNC128 - started() once the actors run
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover states, start an actor per managed subcloud, then serve until cancelled."""
        subclouds = await self._recover()
        async with open_actor_system(
            name="sync", **restart_policy(self._actor_settings), rng=self._rng
        ) as system:
            self._system = system
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._timers.run, self._tell)
                    async with self._lifecycle:
                        for row in subclouds:
                            if row.management_state == c.MANAGEMENT_MANAGED:
                                await self._start(row)
                    nursery.start_soon(self._sweep)
                    nursery.start_soon(self._follow_commits)
                    logger.info("sync_manager.started subclouds=%d", len(self._refs))
                    task_status.started()
            finally:
                self._system = None
                self._refs.clear()

    async def _recover(self) -> list[SubcloudRow]:
        """Start-up recovery: interrupted or failed initial syncs are requested again.

        Per docs/behaviour.md#engine. In-progress orch_requests need nothing: pending and
        idempotent, they are applied again by each pair's first pass, in id order.
        """
        rows = await self._db.list_subclouds()
        out = []
        for row in rows:
            state = row.initial_sync_state
            if state in (c.INITIAL_SYNC_IN_PROGRESS, c.INITIAL_SYNC_FAILED):
                await self._db.set_initial_sync_state(
                    row.region_name, state, c.INITIAL_SYNC_REQUESTED
                )
                row = await self._db.get_subcloud(row.region_name)
            out.append(row)
        return out

    async def subcloud_changed(self, region: str) -> None:
        """Re-read a subcloud after the API changed it; start/stop/wake its actor."""
        async with self._lifecycle:
            if self._system is None:
                return  # run() loads every subcloud when it starts
            try:
                row = await self._db.get_subcloud(region)
            except SubcloudNotFound:
                await self._stop(region)
                return
            handle = self._handles.get(region)
            if row.management_state != c.MANAGEMENT_MANAGED:
                await self._stop(region)
            elif region not in self._refs or handle is None:
                await self._start(row)
            elif row.endpoint_types != handle.subcloud.endpoint_types:
                # It syncs other endpoint types now (add/remove_subcloud_sync_endpoint_type): a
                # fresh actor loads the pairs as they are, as a restart would, so a new pair is
                # audited at once and announced (upstream enables and initial-syncs it) and a
                # removed one leaves no timer behind.
                await self._stop(region)
                await self._start(row)
            else:
                handle.subcloud = row
                handle.dirty.update(row.endpoint_types)
                handle.initial_retry_at = None
                self._tell(region)

    async def subcloud_deleted(self, region: str) -> None:
        """Stop the actor of a deleted subcloud (its rows are already gone)."""
        async with self._lifecycle:
            await self._stop(region)

    async def sync_now(self, region: str) -> None:
        """Wake a subcloud's actor and return once the pass it runs has ended.

        Queued behind pending wake-ups, so all the actor was woken for before (passes, audits,
        status reports) is done on return. Raises :class:`ActorStopped` if there is no actor.
        """
        ref = self._refs.get(region)
        if ref is None:
            raise ActorStopped(f"no sync actor for {region}")
        await ref.ask(Wake())

    def wake(self, region: str, endpoint_type: str) -> None:
        """Mark a pair dirty and wake its actor, never blocking (full: a pending wake sees it)."""
        handle = self._handles.get(region)
        if handle is None:
            return
        handle.dirty.add(endpoint_type)
        self._tell(region)

    def master_recovered(self, dependency: str) -> None:
        """A master dependency is back: retry now every pair that stopped waiting for it, audit
        now the pairs whose audit failed on it or whose requests it timed out, and retry the
        initial syncs it failed."""
        now = trio.current_time()
        for region, handle in list(self._handles.items()):
            failure = handle.initial_sync_failure
            if failure is not None and failure.master_dependency is not None:
                handle.initial_retry_at = now  # its hold-off was for the master: over
                self._tell(region)
            if not (handle.master_wait or handle.audit_after_master):
                continue
            for ept in handle.master_wait:
                handle.retry_at.pop(ept, None)
            for ept in handle.audit_after_master:
                handle.audit_at[ept] = now
            handle.dirty |= handle.master_wait | handle.audit_after_master
            handle.master_wait.clear()
            handle.audit_after_master.clear()
            self._tell(region)

    def initial_sync_failure(self, region: str) -> dict[str, object] | None:
        """Why the subcloud's last initial sync failed (None: it did not), for the v1 API."""
        handle = self._handles.get(region)
        failure = handle.initial_sync_failure if handle is not None else None
        return failure.as_json() if failure is not None else None

    def on_commit(self, committed: Committed) -> None:
        """The master changed and these pairs got requests: forget master answers, wake them."""
        self._env.master.reads.invalidate()
        for region, endpoint_type in committed.pairs:
            self.wake(region, endpoint_type)

    async def _follow_commits(self) -> None:
        feed = self._db.commits
        while True:
            self.on_commit(await feed.receive())

    def _tell(self, region: str) -> None:
        ref = self._refs.get(region)
        if ref is None:
            return
        with contextlib.suppress(MailboxFull, ActorStopped):  # a wake is pending / going away
            ref.tell_nowait(Wake())

    async def _start(self, row: SubcloudRow) -> None:
        assert self._system is not None
        region = row.region_name
        handle = SubcloudHandle(row)
        self._handles[region] = handle
        spec = ActorSpec(
            name=actor_name(region),
            factory=partial(SubcloudSyncActor, self._env, handle),
            mailbox_size=max(1, self._settings.sync_actor_mailbox_size),
            ask_timeout=None,
            shutdown_timeout=1.0,
        )
        self._refs[region] = await self._system.root.start_child(spec)

    async def _stop(self, region: str) -> None:
        handle = self._handles.pop(region, None)
        if handle is not None:
            handle.stopped = True  # the pass in hand ends at its next request
        self._timers.cancel(region)
        ref = self._refs.pop(region, None)
        if ref is not None:
            await ref.stop()

    async def _sweep(self) -> None:
        """Wake every pair now and then, in case a wake-up was lost (never the hot path)."""
        while True:
            await trio.sleep(self._settings.safety_sweep_interval)
            for region, handle in list(self._handles.items()):
                handle.dirty.update(handle.subcloud.endpoint_types)
                self._tell(region)
