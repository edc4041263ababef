"""Reporting a pair's sync status to dcmanager, on change only.

Per docs/behaviour.md#sync-status-reporting. The last value sent and its time are kept in
``subcloud_sync`` (``sync_status_reported``, ``sync_status_report_time``) so a restart does not
re-send everything; an initial sync clears them so a re-managed subcloud is re-announced (bug
2091034). Changes are sent at once, an unchanged status at most every ``status_report_dedup``
seconds, and at most one report per pass, with its final state (b3e4ea0d, 21360c82, 856c5985).

A reporter either delivers at once (dcmanager's HTTP API) or only queues (the RPC outbox, which
retries while the broker is away and must not hold up the pass). The record in ``subcloud_sync``
only ever says what dcmanager has: a queued report is written there by :class:`DeliveryRecord`
once it is delivered, so a restart re-sends what it lost (docs/behaviour.md#sync-status-reporting).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import trio

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.errors import DatabaseError, SubcloudNotFound, SubcloudSyncNotFound
from dcorch.db.rows import SubcloudSyncRow
from dcorch.db.schema import utcnow
from dcorch.remote.errors import MasterUnavailable, SyncError

logger = logging.getLogger(__name__)

WallClock = Callable[[], datetime]


class Reporter(Protocol):
    """Who receives status reports (dcmanager)."""

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> bool:
        """Send one report: True once dcmanager has it, False when it is queued for delivery.

        A queuing reporter records each delivery itself (:class:`DeliveryRecord`). Raises
        :class:`MasterUnavailable` or :class:`SyncError` when it could do neither (the next
        pass tries again).
        """
        ...


class QueuedReport(Protocol):
    """A delivered report, as a queuing reporter's outbox hands it to :class:`DeliveryRecord`."""

    @property
    def region(self) -> str: ...
    @property
    def endpoint_type(self) -> str: ...
    @property
    def status(self) -> str: ...


class UnreportedStatus:
    """The reporter when the master has no dcmanager (``master.dcmanager_url`` empty).

    Every report "succeeds" without leaving the process, so :class:`StatusBook` still keeps each
    pair's status in ``subcloud_sync`` for the v1 API, and nothing retries a report forever.
    """

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> bool:
        return True


class StatusBook:
    """The last report of each pair of one subcloud, mirrored from the database."""

    def __init__(
        self,
        db: Database,
        reporter: Reporter,
        region: str,
        *,
        dedup_seconds: float,
        wall_clock: WallClock = utcnow,
    ) -> None:
        self._db = db
        self._reporter = reporter
        self._region = region
        self._dedup = timedelta(seconds=dedup_seconds)
        self._clock = wall_clock
        self._last: dict[str, tuple[str, datetime | None]] = {}
        self.reports_sent = 0

    def load(self, rows: list[SubcloudSyncRow]) -> None:
        """Seed from the pair rows (at actor start and after an initial sync cleared them)."""
        self._last = {
            r.endpoint_type: (r.sync_status_reported, r.sync_status_report_time) for r in rows
        }

    def forget(self) -> None:
        """Forget every pair's last report (the initial sync cleared them in the database)."""
        self._last = dict.fromkeys(self._last, (c.SYNC_STATUS_NONE, None))

    async def update(
        self,
        endpoint_type: str,
        in_sync: bool,
        alarmable: bool,
        *,
        managed: bool,
        sync_request: str | None = None,
    ) -> bool:
        """Report if the status changed (or the dedup window passed); True if sent.

        ``sync_request``, when given, is written in the same database update.
        """
        status = c.SYNC_STATUS_IN_SYNC if in_sync else c.SYNC_STATUS_OUT_OF_SYNC
        last_status, last_time = self._last.get(endpoint_type, (c.SYNC_STATUS_NONE, None))
        now = self._clock()
        fresh = last_time is not None and now - last_time < self._dedup
        fields: dict[str, Any] = {}
        if sync_request is not None:
            fields["sync_request"] = sync_request
        sent = False
        if managed and not (fresh and last_status == status):
            try:
                delivered = await self._reporter.report(
                    self._region, endpoint_type, status, alarmable
                )
            except MasterUnavailable as exc:
                # Logged once per outage by the master's health tracker; tried again next pass.
                logger.debug(
                    "status.report_deferred region=%s endpoint=%s error=%s",
                    self._region,
                    endpoint_type,
                    exc,
                )
            except SyncError as exc:
                # dcmanager refused it: keep the old record so the next pass tries again.
                logger.warning(
                    "status.report_failed region=%s endpoint=%s error=%s",
                    self._region,
                    endpoint_type,
                    exc,
                )
            else:
                # Queued counts as sent for the dedup in this process (the outbox delivers it,
                # the newest status of the pair first); the database only learns of deliveries.
                sent = True
                self.reports_sent += 1
                self._last[endpoint_type] = (status, now)
                if delivered:
                    fields["sync_status_reported"] = status
                    fields["sync_status_report_time"] = now
        if fields:
            await self._db.update_subcloud_sync(self._region, endpoint_type, **fields)
        return sent


class DeliveryRecord:
    """Writes queued reports into ``subcloud_sync`` once dcmanager has them.

    Called by the reporter's outbox with the reports delivered since its last call (distinct
    pairs). Each is one write unit, all issued at once, so the dispatcher commits the batch in a
    few transactions (``update_subcloud_sync_many``) instead of one each; a failed write costs
    only its own report. The time is the batch's, within a commit of the deliveries, so the
    hourly re-announcement counts from when dcmanager heard it. A pair deleted meanwhile has
    nothing left to record.
    """

    def __init__(self, db: Database, *, wall_clock: WallClock = utcnow) -> None:
        self._db = db
        self._clock = wall_clock

    async def __call__(self, reports: Sequence[QueuedReport]) -> None:
        now = self._clock()
        async with trio.open_nursery() as nursery:
            for report in reports:
                nursery.start_soon(
                    self._one, report.region, report.endpoint_type, report.status, now
                )

    async def _one(self, region: str, endpoint_type: str, status: str, now: datetime) -> None:
        try:
            await self._db.update_subcloud_sync(
                region,
                endpoint_type,
                sync_status_reported=status,
                sync_status_report_time=now,
            )
        except (SubcloudNotFound, SubcloudSyncNotFound):
            logger.debug(
                "status.delivered_for_gone_pair region=%s endpoint=%s", region, endpoint_type
            )
        except DatabaseError as exc:
            # dcmanager has it: an unrecorded delivery only costs one more report after a
            # restart, so it must not fail the batch's other records.
            logger.warning(
                "status.record_failed region=%s endpoint=%s error=%s", region, endpoint_type, exc
            )
