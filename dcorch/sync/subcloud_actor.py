"""The sync actor of one managed subcloud: initial sync, audits and sync passes of its pairs.

One actor owns all of its subcloud's pairs, so two syncs (or audits) of one pair never run at
once (upstream dd30c8c2, docs/behaviour.md#engine) and nothing is locked in the database. Its one
message is :class:`Wake`; *what* to do is in the :class:`SubcloudHandle` shared with the manager
(dirty pairs, due timers, the latest subcloud row). So wake-ups coalesce: a thousand commits for
one subcloud take one or two passes, and a full mailbox means a wake is already pending.

What must survive a crash (timers, dirty pairs) is in the handle and the requests are in the
database, so a restarted actor carries on: its ``on_start`` marks every pair dirty and wakes it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime

import trio

from actors import Actor, MailboxFull
from dcorch import constants as c
from dcorch.db.errors import DatabaseError
from dcorch.db.rows import PendingRequest, SubcloudRow, SubcloudSyncRow
from dcorch.remote.clients import CloudClient, current_job
from dcorch.remote.errors import MasterUnavailable, SubcloudUnreachable, SyncError
from dcorch.sync.audit import PairAudit
from dcorch.sync.drivers import DriverContext
from dcorch.sync.env import SyncEnv
from dcorch.sync.initial_sync import InitialSyncFailure, InitialSyncOutcome, run_initial_sync
from dcorch.sync.noop import NoOp
from dcorch.sync.pair_sync import PairSync
from dcorch.sync.status import StatusBook

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wake:
    """Look at the handle: something is dirty, due, or the subcloud changed."""


@dataclass(slots=True)
class SubcloudHandle:
    """What the manager and the actor of one subcloud share (outlives actor restarts)."""

    subcloud: SubcloudRow
    dirty: set[str] = field(default_factory=set)
    """Endpoint types with possibly new work (set by wake-ups, taken by the actor)."""
    retry_at: dict[str, float] = field(default_factory=dict)
    """Endpoint type -> when an unreachable pair (or one waiting for the master) is tried again."""
    master_wait: set[str] = field(default_factory=set)
    """Endpoint types whose last pass stopped because the master is down: woken at once when
    it is back (:meth:`dcorch.sync.manager.SyncManager.master_recovered`)."""
    audit_after_master: set[str] = field(default_factory=set)
    """Endpoint types to audit as soon as the master is back: their audit failed on the
    master, or a pass timed requests out because of it (the audit queues that work again)."""
    audit_at: dict[str, float] = field(default_factory=dict)
    """Endpoint type -> when its next audit is due (absent: not known yet)."""
    initial_retry_at: float | None = None
    initial_sync_failure: InitialSyncFailure | None = None
    """Why the last initial sync failed (cleared when one completes); shown by the v1 API."""
    db_failures: int = 0
    """Consecutive passes that failed on the database (drives the back-off)."""
    db_retry_at: float | None = None
    stopped: bool = False
    """The manager is stopping this actor (unmanaged, deleted): a pass stops at its next
    request instead of running to its end."""
    passes: int = 0
    audits: int = 0

    @property
    def region(self) -> str:
        return self.subcloud.region_name

    @property
    def enabled(self) -> bool:
        """Managed, online and initial sync completed: requests may be applied."""
        s = self.subcloud
        return (
            not self.stopped
            and s.management_state == c.MANAGEMENT_MANAGED
            and s.availability_status == c.AVAILABILITY_ONLINE
            and s.initial_sync_state == c.INITIAL_SYNC_COMPLETED
        )


class SubcloudSyncActor(Actor[Wake, None]):
    """Handles :class:`Wake` messages for one subcloud (see the module docstring)."""

    def __init__(self, env: SyncEnv, handle: SubcloudHandle) -> None:
        self._env = env
        self._handle = handle
        self._status: StatusBook | None = None

    def __repr__(self) -> str:
        h = self._handle
        return f"<SubcloudSyncActor {h.region} dirty {sorted(h.dirty)} passes {h.passes}>"

    async def on_start(self) -> None:
        h = self._handle
        rows = await self._env.db.list_subcloud_syncs(h.region)
        self._status = StatusBook(
            self._env.db,
            self._env.reporter,
            h.region,
            dedup_seconds=self._env.settings.status_report_dedup,
            wall_clock=self._env.wall_clock,
        )
        self._status.load(rows)
        now = trio.current_time()
        for row in rows:
            h.audit_at.setdefault(row.endpoint_type, now + self._audit_delay(row))
        h.dirty.update(h.subcloud.endpoint_types)
        # A restart must pick up whatever the crashed incarnation left pending.
        with contextlib.suppress(MailboxFull):
            self.ref.tell_nowait(Wake())

    async def handle(self, message: Wake) -> None:
        h = self._handle
        try:
            await self._work()
        except DatabaseError as exc:
            # The database is down or locked past the unit's retries. Crashing would burn the
            # restart intensity all sync actors share and could stop every subcloud's sync
            # (docs/behaviour.md#spinning-on-database-errors): keep everything dirty and come
            # back later, backing off so a long outage costs a few calls per subcloud.
            h.db_failures += 1
            delay = min(
                self._env.settings.offline_retry_interval,
                self._env.settings.request_retry_backoff * 2 ** min(h.db_failures - 1, 16),
            )
            logger.warning(
                "sync.database_error region=%s retry_in=%.1f error=%s", h.region, delay, exc
            )
            h.dirty.update(h.subcloud.endpoint_types)
            h.db_retry_at = trio.current_time() + delay
            self._env.timers.schedule(h.region, h.db_retry_at)
            return
        h.db_failures = 0
        h.db_retry_at = None

    async def _work(self) -> None:
        h = self._handle
        if h.db_retry_at is not None and trio.current_time() < h.db_retry_at:
            self._env.timers.schedule(h.region, h.db_retry_at)
            return
        s = h.subcloud
        if s.management_state != c.MANAGEMENT_MANAGED:
            return
        if s.availability_status == c.AVAILABILITY_ONLINE:
            await self._initial_sync_if_needed()
        if h.enabled:
            now = trio.current_time()
            for ept in h.subcloud.endpoint_types:
                if h.audit_at.get(ept, math.inf) <= now and h.retry_at.get(ept, -math.inf) <= now:
                    await self._audit(ept)
            due = {e for e, t in h.retry_at.items() if t <= trio.current_time()}
            todo, h.dirty = h.dirty | due, set()
            for ept in h.subcloud.endpoint_types:
                if ept in todo:
                    await self._sync(ept)
        self._env.timers.schedule(h.region, self._next_deadline())

    def _audit_delay(self, row: SubcloudSyncRow) -> float:
        last: datetime | None = row.last_audit_time
        if last is None or row.audit_status == c.AUDIT_NONE:
            return 0.0
        age = (self._env.wall_clock() - last).total_seconds()
        return max(0.0, self._env.settings.audit_interval - age)

    def _next_deadline(self) -> float:
        h = self._handle
        times = [*h.retry_at.values()]
        if h.enabled:
            times += h.audit_at.values()
        if h.initial_retry_at is not None:
            times.append(h.initial_retry_at)
        if h.db_retry_at is not None:
            times.append(h.db_retry_at)
        return min(times, default=math.inf)

    def _master_is_up(self) -> bool:
        health = self._env.master.health
        return health is not None and health.is_up

    def _audit_after_master(self, endpoint_type: str) -> None:
        """Audit the pair once the master is back (now, if it came back meanwhile)."""
        if self._master_is_up():
            self._handle.audit_at[endpoint_type] = trio.current_time()
        else:
            self._handle.audit_after_master.add(endpoint_type)

    def _remote(self) -> CloudClient:
        return CloudClient.for_subcloud(
            self._env.http, self._env.resolver.endpoints_for(self._handle.subcloud)
        )

    async def _refresh(self) -> None:
        self._handle.subcloud = await self._env.db.get_subcloud(self._handle.region)

    async def _initial_sync_if_needed(self) -> None:
        h = self._handle
        env = self._env
        if h.subcloud.initial_sync_state == c.INITIAL_SYNC_IN_PROGRESS:
            # Only this actor runs this initial sync, and not now: in-progress was left by a
            # crashed incarnation (or a database error) and would be stuck until a restart.
            await env.db.set_initial_sync_state(
                h.region, c.INITIAL_SYNC_IN_PROGRESS, c.INITIAL_SYNC_REQUESTED
            )
            await self._refresh()
        if h.subcloud.initial_sync_state == c.INITIAL_SYNC_FAILED:
            if h.initial_retry_at is None:
                h.initial_retry_at = trio.current_time() + env.settings.initial_sync_retry
            if trio.current_time() < h.initial_retry_at:
                return
            h.initial_retry_at = None
            await env.db.set_initial_sync_state(
                h.region, c.INITIAL_SYNC_FAILED, c.INITIAL_SYNC_REQUESTED
            )
            await self._refresh()
        if h.subcloud.initial_sync_state != c.INITIAL_SYNC_REQUESTED:
            return

        def failed(exc: SyncError) -> None:
            h.initial_sync_failure = InitialSyncFailure.of(exc, env.wall_clock())

        outcome: InitialSyncOutcome | None = None
        with trio.move_on_after(env.settings.audit_timeout):
            async with env.limiter:
                outcome = await run_initial_sync(
                    env.db, h.subcloud, self._remote(), env.master, on_failure=failed
                )
        if outcome is None:
            # Cut by audit_timeout: fail it (CAS), so it is retried after initial_sync_retry.
            logger.warning(
                "initial_sync.timed_out region=%s after=%.0f", h.region, env.settings.audit_timeout
            )
            failed(SyncError(f"initial sync timed out after {env.settings.audit_timeout:.0f} s"))
            await env.db.set_initial_sync_state(
                h.region, c.INITIAL_SYNC_IN_PROGRESS, c.INITIAL_SYNC_FAILED
            )
        await self._refresh()
        if outcome is InitialSyncOutcome.COMPLETED:
            h.initial_sync_failure = None
            assert self._status is not None
            self._status.forget()
            now = trio.current_time()
            h.retry_at.clear()
            for ept in h.subcloud.endpoint_types:
                h.audit_at[ept] = now  # the enable-time audit (docs/behaviour.md#initial-sync)
                h.dirty.add(ept)
        elif outcome is None or outcome is InitialSyncOutcome.FAILED:
            h.initial_retry_at = trio.current_time() + env.settings.initial_sync_retry

    async def _audit(self, endpoint_type: str) -> None:
        h = self._handle
        env = self._env
        h.audit_at[endpoint_type] = trio.current_time() + env.settings.audit_interval
        if endpoint_type in env.settings.disable_audit_endpoints:
            return
        audit = PairAudit(
            env.db,
            h.region,
            endpoint_type,
            self._remote(),
            env.master,
            env.sink,
            wall_clock=env.wall_clock,
            keyring=env.keyring_password is not None,
        )
        status = c.AUDIT_FAILED
        with trio.move_on_after(env.settings.audit_timeout):
            try:
                async with env.limiter:
                    await audit.run()
                status = c.AUDIT_COMPLETED
                h.audit_after_master.discard(endpoint_type)
            except MasterUnavailable as exc:
                # The master's outage is logged once by its tracker; audit again when it is back.
                self._audit_after_master(endpoint_type)
                logger.info(
                    "audit.failed region=%s endpoint=%s url=%s error=%s",
                    h.region,
                    endpoint_type,
                    exc.url,
                    exc,
                )
            except SyncError as exc:
                logger.warning(
                    "audit.failed region=%s endpoint=%s error=%s", h.region, endpoint_type, exc
                )
        h.audits += 1
        h.dirty.add(endpoint_type)
        await env.db.update_subcloud_sync(
            h.region, endpoint_type, audit_status=status, last_audit_time=env.wall_clock()
        )

    async def _sync(self, endpoint_type: str) -> None:
        h = self._handle
        env = self._env
        h.retry_at.pop(endpoint_type, None)
        pair = PairSync(
            env.db,
            env.settings,
            h.region,
            endpoint_type,
            limiter=env.limiter,
            rng=env.rng,
            wall_clock=env.wall_clock,
            noops=env.noops,
        )
        ctx = DriverContext(
            env.db,
            h.subcloud,
            self._remote(),
            env.master,
            keyring_password=env.keyring_password,
            master_ca_dir=env.master_ca_dir,
        )

        async def apply(request: PendingRequest) -> NoOp | None:
            if not h.enabled:
                # The manager saw the subcloud go offline/unmanaged: stop like should_stop.
                raise SubcloudGone(h.region)
            # Its master reads are shared with all subclouds applying the job (clients.MasterReads).
            token = current_job.set(request.orch_job_id)
            try:
                return await env.driver(ctx, request)
            finally:
                current_job.reset(token)

        result = await pair.run_pass(apply)
        h.passes += 1
        h.master_wait.discard(endpoint_type)
        if not result.reachable:
            h.retry_at[endpoint_type] = trio.current_time() + env.settings.offline_retry_interval
        elif result.master_retry_at is not None:
            if self._master_is_up():  # it came back during the pass: at once
                h.retry_at[endpoint_type] = trio.current_time()
            else:
                h.retry_at[endpoint_type] = result.master_retry_at
                h.master_wait.add(endpoint_type)
        if result.master_timeouts:
            self._audit_after_master(endpoint_type)
        failed = any(
            r.state != c.ORCH_REQUEST_QUEUED and r.state != c.ORCH_REQUEST_IN_PROGRESS
            for r in result.remaining
        )
        assert self._status is not None
        await self._status.update(
            endpoint_type,
            result.in_sync,
            result.alarmable,
            managed=h.subcloud.management_state == c.MANAGEMENT_MANAGED,
            sync_request=c.SYNC_REQUEST_FAILED if failed else c.SYNC_REQUEST_COMPLETED,
        )


class SubcloudGone(SubcloudUnreachable):
    """The subcloud stopped being enabled during a pass: stop it as if unreachable."""
