"""What every sync actor shares: database, clients, limiter, timers and injected seams."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from dcorch.db.database import Database
from dcorch.db.rows import PendingRequest
from dcorch.remote.clients import CachedMasterClient
from dcorch.remote.endpoints import EndpointResolver
from dcorch.remote.http import HttpSession
from dcorch.settings import EngineSettings
from dcorch.sync.drivers import DriverContext
from dcorch.sync.noop import NoOp, NoOpCounts
from dcorch.sync.status import Reporter, WallClock
from dcorch.work import WorkSink

Driver = Callable[[DriverContext, PendingRequest], Awaitable[NoOp | None]]
"""Applies one request (``dcorch.sync.drivers.apply_request``; tests wrap it); returns a
:class:`NoOp` when the request changed nothing."""


class Timers:
    """One task's worth of timers for every subcloud: "wake region R at time T".

    Actors say when they next need to run (unreachable retry, next audit, initial sync retry);
    :meth:`run` sleeps until the earliest deadline and calls ``fire(region)``. One deadline per
    region is kept, so the heap is bounded by the subclouds (plus superseded entries, skipped).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._changed = trio.Event()

    def schedule(self, region: str, deadline: float) -> None:
        """Wake ``region`` at ``deadline`` (``inf``: no timer); an earlier one wins."""
        if math.isinf(deadline):
            return
        current = self._due.get(region)
        if current is not None and current <= deadline and current > trio.current_time():
            return
        self._due[region] = deadline
        heapq.heappush(self._heap, (deadline, region))
        self._changed.set()

    def cancel(self, region: str) -> None:
        self._due.pop(region, None)

    def __len__(self) -> int:
        return len(self._due)

    async def run(
        self,
        fire: Callable[[str], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fire due timers forever."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                deadline, region = heapq.heappop(self._heap)
                if self._due.get(region) == deadline:
                    del self._due[region]
                    fire(region)
            next_at = self._heap[0][0] if self._heap else math.inf
            with trio.move_on_at(next_at):
                await self._changed.wait()


@dataclass(frozen=True, slots=True)
class SyncEnv:
    """Dependencies of the sync actors (one per manager)."""

    db: Database
    settings: EngineSettings
    http: HttpSession
    resolver: EndpointResolver
    master: CachedMasterClient
    """The System Controller, with answers shared by every actor (one cache)."""
    reporter: Reporter
    sink: WorkSink
    """Where audit repairs are committed (the database's dispatcher)."""
    limiter: trio.CapacityLimiter
    timers: Timers
    driver: Driver
    rng: random.Random
    wall_clock: WallClock
    noops: NoOpCounts
    """Requests completed without a change, by reason (``/metrics``)."""
    keyring_password: str | None = None
    """The central admin password: when known, audits repair the subcloud keyring with it
    (docs/behaviour.md#audit); the drivers use it, it is never stored."""
    master_ca_dir: str = ""
    """``master.ca_cert_dir``, for the platform driver (:class:`DriverContext`)."""
