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
- **Deliveries recorded.** ``on_delivered`` (the engine's ``DeliveryRecord``) is told of each
  delivered report, so the database never claims a report that a restart lost.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from actors import Backoff
from dcorch.rpc.contract import Caster, CastUndeliverable, Context

logger = logging.getLogger(__name__)

DCMANAGER_STATE_TOPIC: Final = "dcmanager-state"
"""Upstream's ``TOPIC_DC_MANAGER_STATE``."""
STATUS_METHOD: Final = "update_subcloud_endpoint_status"

OnDelivered = Callable[[str, str, str, bool], Awaitable[None]]
"""``await on_delivered(region, endpoint_type, status, alarmable)`` after a delivery."""


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


class StatusOutbox:
    """Reports waiting for dcmanager, and the task that delivers them (see the module doc).

    Args:
        caster: the RPC transport's caster.
        backoff: the wait after each failed cast (``n`` counts the failures in a row).
        topic: dcmanager-state's topic.
        rng: jitter source (seed it for reproducible delays).
        on_delivered: told of each delivered report.
        ctxt: the request context sent with each cast (None: the transport's default).

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
    ) -> None:
        self._caster = caster
        self._backoff = backoff
        self._topic = topic
        self._rng = rng or random.Random()
        self._on_delivered = on_delivered
        self._ctxt = ctxt
        self._waiting: OrderedDict[tuple[str, str], StatusReport] = OrderedDict()
        self._arrived = trio.Event()
        self.failures = 0
        """Casts refused in a row (0 once one gets through)."""
        self.retry_at: float | None = None
        """When the next cast is tried after a refusal (trio time), else None."""
        self.delivered = 0
        self.refused = 0
        self.coalesced = 0
        """Reports replaced by a newer status of their pair before they were delivered."""

    def __repr__(self) -> str:
        return (
            f"<StatusOutbox waiting {len(self._waiting)} delivered {self.delivered} "
            f"failures {self.failures}>"
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the waiting reports until cancelled."""
        task_status.started()
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
            await self._delivered(report)

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

    async def _delivered(self, report: StatusReport) -> None:
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
        try:
            await self._on_delivered(
                report.region, report.endpoint_type, report.status, report.alarmable
            )
        except Exception as exc:
            # dcmanager has it: an unrecorded delivery only costs one more report after a
            # restart, so it must not stop the deliveries behind it.
            logger.warning(
                "status_outbox.record_failed region=%s endpoint=%s error=%s",
                report.region,
                report.endpoint_type,
                exc,
            )


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
