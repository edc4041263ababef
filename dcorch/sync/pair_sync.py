"""One sync pass of one pair: apply its pending requests in id order until none is left.

Why "until none is left": a change committed during a pass is picked up by its final re-query (a
wake is queued anyway), so no request waits for the next audit (docs/behaviour.md#lost-wake-up).

Per request (docs/behaviour.md#request-outcomes-and-retries; backoff, not upstream's 1 s / 3 s):

* success -> ``completed`` (soft-deleted);
* :class:`SubcloudUnreachable` -> the pass stops; the request keeps its state and place, and
  the actor retries the pair after ``offline_retry_interval``;
* :class:`TransientSyncError` -> jittered backoff up to ``request_max_attempts``, then ``failed``;
* :class:`PermanentSyncError` -> ``failed`` at once; :class:`SyncAborted` -> ``aborted``;
* ``request_time_budget`` spent on one request's attempts -> ``timed-out``.

A failed request does not stop later ones (as upstream, docs/behaviour.md#sync-pass).
``try_count`` is written *before* each attempt: one crashing the actor fails after its attempts.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.rows import PendingRequest, RequestUpdate
from dcorch.remote.errors import (
    PermanentSyncError,
    SubcloudUnreachable,
    SyncAborted,
    TransientSyncError,
)
from dcorch.settings import EngineSettings

logger = logging.getLogger(__name__)

WORK_STATES: Final = (c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_IN_PROGRESS)
FINAL_BAD_STATES: Final = (c.ORCH_REQUEST_FAILED, c.ORCH_REQUEST_TIMED_OUT, c.ORCH_REQUEST_ABORTED)
LIVE_STATES: Final = WORK_STATES + FINAL_BAD_STATES
"""Everything not completed: what keeps a pair out of sync."""
FERNET_SOURCE_ID: Final = "keys"

Apply = Callable[[PendingRequest], Awaitable[None]]


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
    ) -> None:
        self._db = db
        self._settings = settings
        self.region = region
        self.endpoint_type = endpoint_type
        self._limiter = limiter
        self._rng = rng

    async def run_pass(self, apply: Apply) -> PassResult:
        """Apply pending requests in id order until none is left (or the subcloud is gone)."""
        result = PassResult()
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
                        "sync.unreachable region=%s endpoint=%s error=%s",
                        self.region,
                        self.endpoint_type,
                        exc,
                    )
                    result.reachable = False
                    result.remaining = await self._db.pending_requests(
                        self.region, self.endpoint_type, states=LIVE_STATES
                    )
                    return result

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
        deadline = trio.current_time() + self._settings.request_time_budget
        tries = request.try_count
        unreachable = False
        for attempt in range(1, max_attempts - request.try_count + 1):
            tries += 1
            await self._db.update_requests(
                [RequestUpdate(request.id, state=c.ORCH_REQUEST_IN_PROGRESS, try_count=tries)]
            )
            try:
                with trio.move_on_at(deadline):
                    async with self._limiter:
                        await apply(request)
                    return await self._finish(request, Outcome.COMPLETED)
                return await self._finish(request, Outcome.TIMED_OUT)
            except SubcloudUnreachable:
                unreachable = True
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
                    return await self._finish(request, Outcome.TIMED_OUT)
            if unreachable:
                # Not the request's fault: give the attempt back and keep its place.
                await self._db.update_requests([RequestUpdate(request.id, try_count=tries - 1)])
                raise SubcloudUnreachable(f"{self.region} unreachable")
        return await self._finish(request, Outcome.FAILED)

    async def _finish(self, request: PendingRequest, outcome: Outcome) -> Outcome:
        await self._db.update_requests([RequestUpdate(request.id, state=outcome.value)])
        return outcome
