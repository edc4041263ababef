"""Runs one unit of work in one transaction on the asyncio thread's engine.

A *unit*, a synchronous ``fn(conn, *args)`` over SQLAlchemy Core, runs in ``conn.run_sync`` on
the ``AsyncEngine``'s thread (:mod:`dcorch.db.bridge`, ``docs/database.md``). Guarantees:

* **A unit is never cancelled midway.** The crossing is shielded: a cancelled caller only loses
  its answer (cancelling aiosqlite mid-transaction leaves the SQLite file write-locked until GC).
* **Transient errors are retried** with exponential backoff (``retry_*``), each time in a fresh
  transaction, then :class:`DatabaseUnavailable`; others are translated once (:func:`translate`).
* **Pool checkouts never time out**: a :class:`trio.CapacityLimiter` sized like the pool admits
  units, so callers queue in Trio (fair, cancellable) rather than in the pool.

Writes are queued and grouped by :mod:`dcorch.db.dispatcher`; reads run once admitted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from sqlalchemy.ext.asyncio import AsyncEngine

from dcorch.db.bridge import AsyncioThreadBridge
from dcorch.db.engine import BEGIN_OPTION, is_transient, translate
from dcorch.db.errors import DatabaseUnavailable
from dcorch.settings import DatabaseSettings

logger = logging.getLogger(__name__)

Unit = Callable[..., Any]
"""``fn(conn, *args)``: synchronous SQLAlchemy Core code run in one transaction."""

Execute = Callable[[Unit, tuple[Any, ...], bool], Awaitable[Any]]
"""``execute(fn, args, write)``: run one unit in one transaction and return its value.

This is the seam where tests inject database faults: :func:`dcorch.db.open_database` accepts a
wrapper around the real one (``wrap_execute``)."""


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """What :meth:`Database.statistics` reports."""

    backend: str
    orders_queued: int
    """Work-order submissions waiting for the dispatcher."""
    writes_queued: int
    """Other write units waiting for the dispatcher."""
    in_flight: int
    """Units running or waiting for a pool connection."""
    units_run: int
    retries: int


class UnitRunner:
    """Executes units on the engine with shielding, retries and error translation."""

    def __init__(
        self, bridge: AsyncioThreadBridge, engine: AsyncEngine, settings: DatabaseSettings
    ) -> None:
        self._bridge = bridge
        self._engine = engine
        self._settings = settings
        self.limiter = trio.CapacityLimiter(max(1, settings.pool_size + settings.max_overflow))
        self.units_run = 0
        self.retries = 0

    async def execute(self, fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, retrying transient failures."""
        delay = self._settings.retry_backoff
        attempts = max(1, self._settings.retry_attempts)
        for attempt in range(1, attempts + 1):
            try:
                async with self.limiter:
                    return await self._cross(fn, args, write)
            except Exception as exc:
                if not is_transient(exc):
                    mapped = translate(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                name = getattr(fn, "__name__", repr(fn))
                if attempt == attempts:
                    raise DatabaseUnavailable(
                        f"{name} failed after {attempts} attempts: {exc}"
                    ) from exc
                self.retries += 1
                logger.warning(
                    "db.retry unit=%s attempt=%d delay=%.3f error=%s",
                    name,
                    attempt,
                    delay,
                    str(exc).splitlines()[0],
                )
                await trio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_backoff_max)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _cross(self, fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
        with trio.CancelScope(shield=True):
            self.units_run += 1
            return await self._bridge.run(_transaction, self._engine, fn, args, write)


async def _transaction(engine: AsyncEngine, fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
    """On the asyncio thread: one connection, one transaction, the sync unit via greenlet."""
    async with engine.connect() as conn:
        if write:
            await conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            return await conn.run_sync(fn, *args)
