"""One sync pass of one pair: apply its pending requests in id order until none is left.

Why "until none is left": a change committed during a pass is picked up by its final re-query (a
wake is queued anyway), so no request waits for the next audit (docs/behaviour.md#lost-wake-up).

Per request (docs/behaviour.md#request-outcomes-and-retries; backoff, not upstream's 1 s / 3 s):

* success -> ``completed`` (soft-deleted); a success that changed nothing (the driver's
  :class:`~dcorch.sync.noop.NoOp`) is also logged at INFO, counted, and its reason stored with the
  request (docs/behaviour.md#no-op-completions);
* :class:`SubcloudUnreachable` -> the pass stops; the request keeps its state and place, and
  the actor retries the pair after ``offline_retry_interval``; no time limit (the queue of an
  unreachable or offline subcloud is kept, as upstream's);
* :class:`MasterUnavailable` -> the pass stops, the request keeps its place (the attempt is
  given back) and the pair is tried again at the master's next probe, or at the request's
  deadline, whichever is first: at the deadline it is ``timed-out``;
* :class:`TransientSyncError` -> jittered backoff up to ``request_max_attempts``, then ``failed``;
* :class:`PermanentSyncError` -> ``failed`` at once; :class:`SyncAborted` -> ``aborted``;
* ``request_time_budget`` spent since the request's **creation** (``created_at``) -> the next
  failure that would be retried (transient, master down) makes it ``timed-out``, and an attempt
  running at the deadline is cut there. A request that reaches its turn late (after waiting for
  an unreachable subcloud) still gets one attempt, uncut, bounded by its calls' HTTP timeouts.

A failed request does not stop later ones (as upstream, docs/behaviour.md#sync-pass).
``try_count`` is written *before* each attempt: one crashing the actor fails after its attempts.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.rows import PendingRequest, RequestUpdate
from dcorch.db.schema import utcnow
from dcorch.remote.errors import (
    MasterUnavailable,
    PermanentSyncError,
    SubcloudUnreachable,
    SyncAborted,
    TransientSyncError,
)
from dcorch.settings import EngineSettings
from dcorch.sync.noop import NoOp, NoOpCounts
from dcorch.sync.status import WallClock

logger = logging.getLogger(__name__)

WORK_STATES: Final = (c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_IN_PROGRESS)
FINAL_BAD_STATES: Final = (c.ORCH_REQUEST_FAILED, c.ORCH_REQUEST_TIMED_OUT, c.ORCH_REQUEST_ABORTED)
LIVE_STATES: Final = WORK_STATES + FINAL_BAD_STATES
"""Everything not completed: what keeps a pair out of sync."""
FERNET_SOURCE_ID: Final = "keys"

Apply = Callable[[PendingRequest], Awaitable[NoOp | None]]


class Outcome(enum.Enum):
    """How one request ended in this pass."""

    COMPLETED = c.ORCH_REQUEST_COMPLETED
    FAILED = c.ORCH_REQUEST_FAILED
    TIMED_OUT = c.ORCH_REQUEST_TIMED_OUT
    ABORTED = c.ORCH_REQUEST_ABORTED


@dataclass(slots=True)
class PassResult:
    """What a pass did and what is left."""

    reachable: bool = True
    """False when the pass stopped on :class:`SubcloudUnreachable`."""
    master_retry_at: float | None = None
    """Set when the pass stopped on :class:`MasterUnavailable`: when to try the pair again
    (the master's next probe, or the deadline of the request it stopped at, if earlier)."""
    master_timeouts: int = 0
    """Requests this pass timed out because the master was down (the audit after the master
    is back queues their work again)."""
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    """Request id -> how it ended (requests left pending are absent)."""
    remaining: list[PendingRequest] = field(default_factory=list)
    """Live requests after the pass (pending and failed-like), in id order."""

    @property
    def in_sync(self) -> bool:
        return not self.remaining

    @property
    def alarmable(self) -> bool:
        """A fernet-only backlog (no failures) does not raise 280.002.

        Upstream 18f54a44; see docs/behaviour.md#sync-status-reporting.
        """
        return any(
            r.state in FINAL_BAD_STATES or r.source_resource_id != FERNET_SOURCE_ID
            for r in self.remaining
        )


def backoff_delay(settings: EngineSettings, attempt: int, rng: random.Random) -> float:
    """Delay after failed attempt ``attempt`` (1-based): doubling, capped, with jitter.

    Jitter draws from [delay/2, delay]: subclouds failing together do not retry in lock-step.
    """
    delay: float = min(
        settings.request_retry_backoff * 2.0 ** (attempt - 1), settings.request_retry_backoff_max
    )
    return delay * rng.uniform(0.5, 1.0)


class PairSync:
    """Runs passes for one pair; owned by that pair's sync actor (never two at once)."""

    def __init__(
        self,
        db: Database,
        settings: EngineSettings,
        region: str,
        endpoint_type: str,
        *,
        limiter: trio.CapacityLimiter,
        rng: random.Random,
        wall_clock: WallClock = utcnow,
        noops: NoOpCounts | None = None,
    ) -> None:
        """``wall_clock``: naive UTC, the time base of ``created_at`` (request deadlines);
        ``noops``: where no-op completions are counted (the engine's one, for ``/metrics``)."""
        self._db = db
        self._noops = noops if noops is not None else NoOpCounts()
        self._settings = settings
        self.region = region
        self.endpoint_type = endpoint_type
        self._limiter = limiter
        self._rng = rng
        self._wall_clock = wall_clock
        self._result = PassResult()

    async def run_pass(self, apply: Apply) -> PassResult:
        """Apply pending requests in id order until none is left (or the subcloud is gone)."""
        result = PassResult()
        self._result = result
        while True:
            live = await self._db.pending_requests(
                self.region, self.endpoint_type, states=LIVE_STATES
            )
            todo = [r for r in live if r.state in WORK_STATES and r.id not in result.outcomes]
            if not todo:
                result.remaining = live
                return result
            for request in todo:
                try:
                    result.outcomes[request.id] = await self._run_request(request, apply)
                except SubcloudUnreachable as exc:
                    logger.info(
                        "sync.unreachable region=%s endpoint=%s url=%s error=%s",
                        self.region,
                        self.endpoint_type,
                        exc.url,
                        exc,
                    )
                    result.reachable = False
                except _WaitForMaster as wait:
                    # Logged once per outage by the master's health tracker, not per pair.
                    result.master_retry_at = wait.retry_at
                else:
                    continue
                result.remaining = await self._db.pending_requests(
                    self.region, self.endpoint_type, states=LIVE_STATES
                )
                return result

    def deadline(self, request: PendingRequest) -> float:
        """trio time at which ``request_time_budget`` since the request's creation is spent."""
        now = trio.current_time()
        budget = self._settings.request_time_budget
        if request.created_at is None:
            return now + budget
        age = (self._wall_clock() - request.created_at).total_seconds()
        return now + budget - max(0.0, age)

    async def _run_request(self, request: PendingRequest, apply: Apply) -> Outcome:
        max_attempts = max(1, self._settings.request_max_attempts)
        if request.try_count >= max_attempts:
            # Its attempts were used by earlier incarnations of this actor that crashed.
            logger.error(
                "sync.poison_request region=%s id=%d tries=%d",
                self.region,
                request.id,
                request.try_count,
            )
            return await self._finish(request, Outcome.FAILED)
        deadline = self.deadline(request)
        tries = request.try_count
        for attempt in range(1, max_attempts - request.try_count + 1):
            tries += 1
            await self._db.update_requests(
                [RequestUpdate(request.id, state=c.ORCH_REQUEST_IN_PROGRESS, try_count=tries)]
            )
            late = trio.current_time() >= deadline
            stop: SubcloudUnreachable | _WaitForMaster | None = None
            try:
                # A late request's one attempt is not cut (see the module docstring).
                with trio.move_on_at(math.inf if late else deadline):
                    async with self._limiter:
                        noop = await apply(request)
                    if noop is None:
                        return await self._finish(request, Outcome.COMPLETED)
                    return await self._finish_noop(request, noop)
                logger.info(
                    "sync.timed_out region=%s id=%d cause=attempt-cut", self.region, request.id
                )
                return await self._finish(request, Outcome.TIMED_OUT)
            except SubcloudUnreachable as exc:
                stop = exc
            except MasterUnavailable as exc:
                if trio.current_time() >= deadline:
                    logger.info(
                        "sync.timed_out region=%s id=%d cause=master-%s url=%s",
                        self.region,
                        request.id,
                        exc.dependency,
                        exc.url,
                    )
                    self._result.master_timeouts += 1
                    return await self._finish(request, Outcome.TIMED_OUT)
                stop = _WaitForMaster(min(exc.retry_at, deadline))
                stop.__cause__ = exc
            except SyncAborted as exc:
                logger.warning(
                    "sync.aborted region=%s id=%d error=%s", self.region, request.id, exc
                )
                return await self._finish(request, Outcome.ABORTED)
            except PermanentSyncError as exc:
                logger.warning("sync.failed region=%s id=%d error=%s", self.region, request.id, exc)
                return await self._finish(request, Outcome.FAILED)
            except TransientSyncError as exc:
                logger.info(
                    "sync.retry region=%s id=%d attempt=%d error=%s",
                    self.region,
                    request.id,
                    tries,
                    exc,
                )
                if attempt >= max_attempts - request.try_count:
                    break
                with trio.move_on_at(deadline):
                    await trio.sleep(backoff_delay(self._settings, tries, self._rng))
                if trio.current_time() >= deadline:
                    logger.info(
                        "sync.timed_out region=%s id=%d cause=retries", self.region, request.id
                    )
                    return await self._finish(request, Outcome.TIMED_OUT)
            if stop is not None:
                # Not the request's fault: give the attempt back and keep its place.
                await self._db.update_requests([RequestUpdate(request.id, try_count=tries - 1)])
                raise stop
        return await self._finish(request, Outcome.FAILED)

    async def _finish(self, request: PendingRequest, outcome: Outcome) -> Outcome:
        await self._db.update_requests([RequestUpdate(request.id, state=outcome.value)])
        return outcome

    async def _finish_noop(self, request: PendingRequest, noop: NoOp) -> Outcome:
        """Completed, with the reason nothing changed: stored, logged with the ids, counted."""
        await self._db.update_requests(
            [RequestUpdate(request.id, state=c.ORCH_REQUEST_COMPLETED, result=noop.reason)]
        )
        logger.info(
            "sync.noop region=%s endpoint=%s id=%d resource_type=%s operation=%s master_id=%s "
            "reason=%s",
            self.region,
            self.endpoint_type,
            request.id,
            request.resource_type,
            request.operation_type,
            request.master_id or request.source_resource_id,
            noop.reason,
        )
        self._noops.add(
            self.endpoint_type, request.resource_type, request.operation_type, noop.reason
        )
        return Outcome.COMPLETED


class _WaitForMaster(Exception):
    """The master is down: stop the pass, try the pair again at ``retry_at`` (trio time)."""

    def __init__(self, retry_at: float) -> None:
        super().__init__(f"waiting for the master until {retry_at:.3f}")
        self.retry_at = retry_at
