"""Sync status to dcmanager as RPC casts, through an outbox that never holds up syncing.

Upstream reports a pair's status with the cast ``update_subcloud_endpoint_status`` to the
``dcmanager-state`` topic (``subcloud_name=None, subcloud_region, endpoint_type, sync_status,
alarmable``). Here :class:`RpcStatusReporter` (the engine's ``Reporter``) hands each report to a
:class:`StatusOutbox` and returns at once; the outbox's one task delivers them through a
:class:`~dcorch.rpc.contract.Caster` (docs/behaviour.md#sync-status-reporting):

- **Coalesced per pair.** At most one report per (region, endpoint type) waits: a newer status
  replaces an undelivered older one in its place, so a broker outage costs one cast per pair
  when it ends, carrying the pair's latest status, and the outbox holds at most one entry per
  pair (its bound).
- **Ordered per pair.** One task casts one report at a time, so a pair's reports reach the broker
  in the order they were made; a report that fails while a newer one of its pair waits is
  dropped, never sent after it.
- **Retried with backoff.** While the caster raises ``CastUndeliverable`` the report stays first
  in line and the task waits ``Backoff.delay(n)`` (doubling, capped, jittered) before trying
  again; the first success resets it.
- **Deliveries recorded, in batches, behind the casts.** A delivered report goes to a second
  task, the recorder, which hands ``on_delivered`` (the engine's ``DeliveryRecord``) everything
  delivered since its last batch (up to :data:`RECORD_BATCH`), so the database takes them in one
  group commit and casting never waits for it: one database write per cast held the outbox to
  the database's pace (~240 casts/s on SQLite, against ~2,000 for the caster alone). What waits
  for the recorder holds at most one report per pair (a newer delivery replaces its pair's
  unrecorded one: only the newest delivered status belongs in the row), its bound.
- **Recorded only when delivered, never lost.** The database never claims a report before the
  broker took it. A shutdown records what was delivered (shielded, at most
  :data:`FLUSH_TIMEOUT` s); a crashed recorder puts its batch back for the restarted task. A
  process killed between a delivery and its record leaves the pair's old record: the restarted
  engine re-sends the pair (dcmanager hears it twice, which is harmless) whenever its status
  differs from that record (docs/behaviour.md#sync-status-reporting).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from actors import Backoff
from dcorch.rpc.contract import Caster, CastUndeliverable, Context

logger = logging.getLogger(__name__)

DCMANAGER_STATE_TOPIC: Final = "dcmanager-state"
"""Upstream's ``TOPIC_DC_MANAGER_STATE``."""
STATUS_METHOD: Final = "update_subcloud_endpoint_status"

RECORD_BATCH: Final = 500
"""Delivered reports per ``on_delivered`` call (the dispatcher's units per transaction)."""
FLUSH_TIMEOUT: Final = 5.0
"""Seconds a shutdown waits for the database to record what was delivered."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One pair's sync status for dcmanager."""

    region: str
    endpoint_type: str
    status: str
    alarmable: bool

    @property
    def pair(self) -> tuple[str, str]:
        return (self.region, self.endpoint_type)

    def cast_kwargs(self) -> dict[str, Any]:
        """The cast's keyword arguments, as upstream's dcorch sends them."""
        return {
            "subcloud_name": None,
            "subcloud_region": self.region,
            "endpoint_type": self.endpoint_type,
            "sync_status": self.status,
            "alarmable": self.alarmable,
        }


OnDelivered = Callable[[Sequence[StatusReport]], Awaitable[None]]
"""``await on_delivered(reports)`` records delivered reports (of distinct pairs, oldest delivery
first); it handles each report's failure itself, as one lost record costs only a re-send."""


class StatusOutbox:
    """Reports waiting for dcmanager, and the tasks that deliver and record them (module doc).

    Args:
        caster: the RPC transport's caster.
        backoff: the wait after each failed cast (``n`` counts the failures in a row).
        topic: dcmanager-state's topic.
        rng: jitter source (seed it for reproducible delays).
        on_delivered: records delivered reports, a batch at a time.
        ctxt: the request context sent with each cast (None: the transport's default).
        flush_timeout: how long a stopping :meth:`run` waits to record what was delivered.

    :meth:`run` is the task a supervisor runs; what waits lives in this object, so a restarted
    task loses nothing but the cast it was in (put back first in line).
    """

    def __init__(
        self,
        caster: Caster,
        *,
        backoff: Backoff,
        topic: str = DCMANAGER_STATE_TOPIC,
        rng: random.Random | None = None,
        on_delivered: OnDelivered | None = None,
        ctxt: Context | None = None,
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self._caster = caster
        self._flush_timeout = flush_timeout
        self._backoff = backoff
        self._topic = topic
        self._rng = rng or random.Random()
        self._on_delivered = on_delivered
        self._ctxt = ctxt
        self._waiting: OrderedDict[tuple[str, str], StatusReport] = OrderedDict()
        self._arrived = trio.Event()
        self._unrecorded: OrderedDict[tuple[str, str], StatusReport] = OrderedDict()
        self._to_record = trio.Event()
        self.failures = 0
        """Casts refused in a row (0 once one gets through)."""
        self.retry_at: float | None = None
        """When the next cast is tried after a refusal (trio time), else None."""
        self.delivered = 0
        self.refused = 0
        self.coalesced = 0
        """Reports replaced by a newer status of their pair before they were delivered."""
        self.recorded = 0
        """Delivered reports handed to ``on_delivered``."""
        self.record_batches = 0

    def __repr__(self) -> str:
        return (
            f"<StatusOutbox waiting {len(self._waiting)} delivered {self.delivered} "
            f"unrecorded {len(self._unrecorded)} failures {self.failures}>"
        )

    def put(self, report: StatusReport) -> None:
        """Queue ``report``, replacing its pair's undelivered one; never blocks."""
        if report.pair in self._waiting:
            self.coalesced += 1
        self._waiting[report.pair] = report
        self._arrived.set()

    def waiting(self) -> list[StatusReport]:
        """The undelivered reports, next first (introspection, ``/metrics``, tests)."""
        return list(self._waiting.values())

    def unrecorded(self) -> list[StatusReport]:
        """Delivered reports the database has not been told of yet, oldest first."""
        return list(self._unrecorded.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the waiting reports, and record the delivered ones, until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self._on_delivered is not None:
                    nursery.start_soon(self._record_loop, self._on_delivered)
                task_status.started()
                await self._cast_loop()
        except BaseExceptionGroup as group:
            [*errors] = group.exceptions
            if len(errors) != 1:
                raise
            error = errors[0]  # one task failed: raise its own error (and traceback), as before
            raise error from None
        finally:
            if self._on_delivered is not None and self._unrecorded:
                # On the way out: record what was delivered, shielded, for a bounded time.
                with trio.move_on_after(self._flush_timeout, shield=True):
                    await self._flush(self._on_delivered)
                if self._unrecorded:
                    # Still safe: their rows keep the old report, so the next start re-sends.
                    logger.warning(
                        "status_outbox.unrecorded_at_exit count=%d", len(self._unrecorded)
                    )

    # -- casting ---------------------------------------------------------------------------

    async def _cast_loop(self) -> None:
        while True:
            if not self._waiting:
                self._arrived = trio.Event()
                await self._arrived.wait()
                continue
            _, report = self._waiting.popitem(last=False)
            try:
                await self._caster.cast(
                    self._topic, STATUS_METHOD, report.cast_kwargs(), ctxt=self._ctxt
                )
            except CastUndeliverable as exc:
                self._put_back(report)
                await self._back_off(exc)
                continue
            except BaseException:
                self._put_back(report)  # a crash or a shutdown loses nothing that waited
                raise
            self._delivered(report)

    def _put_back(self, report: StatusReport) -> None:
        """First in line again, unless a newer status of its pair came meanwhile."""
        if report.pair in self._waiting:
            self.coalesced += 1
            return
        self._waiting[report.pair] = report
        self._waiting.move_to_end(report.pair, last=False)

    async def _back_off(self, exc: CastUndeliverable) -> None:
        self.refused += 1
        delay = self._backoff.delay(self.failures, self._rng)
        self.failures += 1
        self.retry_at = trio.current_time() + delay
        log = logger.warning if self.failures == 1 else logger.debug
        log(
            "status_outbox.undeliverable waiting=%d failures=%d retry_in=%.2f error=%s",
            len(self._waiting),
            self.failures,
            delay,
            exc,
        )
        await trio.sleep(delay)

    def _delivered(self, report: StatusReport) -> None:
        if self.failures:
            logger.warning(
                "status_outbox.delivering_again after_failures=%d waiting=%d",
                self.failures,
                len(self._waiting),
            )
        self.failures = 0
        self.retry_at = None
        self.delivered += 1
        if self._on_delivered is None:
            return
        # The newest delivery of a pair is the one its row must say: it replaces an older one
        # still unrecorded, and goes to the back (recorded after what was delivered before it).
        self._unrecorded.pop(report.pair, None)
        self._unrecorded[report.pair] = report
        self._to_record.set()

    # -- recording -------------------------------------------------------------------------

    async def _record_loop(self, record: OnDelivered) -> None:
        """Hand what was delivered to ``record``, a batch at a time, while casting goes on."""
        while True:
            if not self._unrecorded:
                self._to_record = trio.Event()
                await self._to_record.wait()
                continue
            await self._record_batch(record)

    async def _record_batch(self, record: OnDelivered) -> None:
        batch = [self._unrecorded.popitem(last=False)[1] for _ in range(self._batch_size())]
        try:
            await record(batch)
        except Exception as exc:
            # dcmanager has them: an unrecorded delivery costs one more report after a restart,
            # so it must not stop the deliveries (or the records) behind it.
            logger.warning(
                "status_outbox.record_failed reports=%d first_region=%s error=%s",
                len(batch),
                batch[0].region,
                exc,
            )
            return
        except BaseException:
            # A crash or a cancel mid-batch: the restarted task (or the flush) records it again,
            # unless a newer delivery of its pair came meanwhile (recording it again is harmless).
            for report in reversed(batch):
                if report.pair not in self._unrecorded:
                    self._unrecorded[report.pair] = report
                    self._unrecorded.move_to_end(report.pair, last=False)
            raise
        self.recorded += len(batch)
        self.record_batches += 1

    def _batch_size(self) -> int:
        return min(RECORD_BATCH, len(self._unrecorded))

    async def _flush(self, record: OnDelivered) -> None:
        while self._unrecorded:
            await self._record_batch(record)


class RpcStatusReporter:
    """The engine's status ``Reporter`` over RPC: queue in the outbox, return at once.

    ``report`` answers False (queued, not yet delivered): the engine's dedup counts the report
    as sent, and the outbox's ``on_delivered`` records it in the database when dcmanager has it.
    """

    def __init__(self, outbox: StatusOutbox) -> None:
        self._outbox = outbox

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> bool:
        self._outbox.put(StatusReport(region, endpoint_type, status, alarmable))
        return False
