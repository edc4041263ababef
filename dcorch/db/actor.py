"""The database actor: a Trio task that runs units of work on the asyncio thread's engine.

Callers put a call into a bounded mailbox and wait on a one-shot reply channel. The actor takes
calls as fast as connections allow (a :class:`trio.CapacityLimiter` sized like the pool, so the
pool never times out a checkout) and runs each in its own task, which is what lets several units
be in flight on PostgreSQL. On SQLite, writing units additionally queue on one
:class:`trio.Lock`: SQLite has a single writer anyway, and queueing here is cheaper and fairer
than every writer spinning on ``busy_timeout``.

Guarantees:

* **A unit is never cancelled midway.** The crossing runs under ``CancelScope(shield=True)``:
  a cancelled caller only loses its reply (cancelling aiosqlite mid-transaction would leave the
  SQLite file write-locked until the garbage collector ran, stack.md 3.5).
* **Transient errors are retried** with exponential backoff (``retry_*`` settings); each attempt
  is a fresh transaction on a fresh pool checkout. Persistent ones become
  :class:`DatabaseUnavailable`; permanent ones are translated once, in :func:`translate`.
* **Replies never crash the actor**: a requester that went away has closed its reply channel,
  and that is ignored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import outcome
import trio
from sqlalchemy.ext.asyncio import AsyncEngine

from dcorch.db.bridge import AsyncioThreadBridge
from dcorch.db.engine import BEGIN_OPTION, is_transient, translate
from dcorch.db.errors import DatabaseUnavailable
from dcorch.settings import DatabaseSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Call:
    """One message of the mailbox: run ``fn(conn, *args)`` in a transaction, reply with it."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    write: bool
    reply: trio.MemorySendChannel[outcome.Outcome[Any]]


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """What :meth:`Database.statistics` reports."""

    backend: str
    mailbox_used: int
    mailbox_size: int
    in_flight: int
    units_run: int
    retries: int


class UnitRunner:
    """Executes units on the engine with shielding, retries and error translation."""

    def __init__(
        self,
        bridge: AsyncioThreadBridge,
        engine: AsyncEngine,
        settings: DatabaseSettings,
        *,
        sqlite: bool,
    ) -> None:
        self._bridge = bridge
        self._engine = engine
        self._settings = settings
        self._sqlite = sqlite
        self._write_lock = trio.Lock()
        self.limiter = trio.CapacityLimiter(max(1, settings.pool_size + settings.max_overflow))
        self.units_run = 0
        self.retries = 0

    async def serve(
        self,
        mailbox: trio.MemoryReceiveChannel[Call],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Take calls until the mailbox is closed, then wait for the running ones."""
        async with mailbox, trio.open_nursery() as nursery:
            task_status.started()
            async for call in mailbox:
                await self.limiter.acquire_on_behalf_of(call)
                nursery.start_soon(self._handle, call)

    async def _handle(self, call: Call) -> None:
        try:
            with call.reply:
                try:
                    res: outcome.Outcome[Any] = outcome.Value(
                        await self.execute(call.fn, call.args, write=call.write)
                    )
                except Exception as exc:
                    res = outcome.Error(exc)
                # A requester that was cancelled has closed its end; only its reply is lost.
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock
                ):
                    call.reply.send_nowait(res)
        finally:
            self.limiter.release_on_behalf_of(call)

    async def execute(self, fn: Callable[..., Any], args: tuple[Any, ...], *, write: bool) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, retrying transient failures."""
        delay = self._settings.retry_backoff
        attempts = max(1, self._settings.retry_attempts)
        for attempt in range(1, attempts + 1):
            try:
                if write and self._sqlite:
                    async with self._write_lock:
                        return await self._cross(fn, args, write=True)
                return await self._cross(fn, args, write=write)
            except Exception as exc:
                if not is_transient(exc):
                    mapped = translate(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                if attempt == attempts:
                    raise DatabaseUnavailable(
                        f"{getattr(fn, '__name__', fn)} failed after {attempts} attempts: {exc}"
                    ) from exc
                self.retries += 1
                logger.warning(
                    "db.retry unit=%s attempt=%d delay=%.3f error=%s",
                    getattr(fn, "__name__", fn),
                    attempt,
                    delay,
                    str(exc).splitlines()[0],
                )
                await trio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_backoff_max)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _cross(self, fn: Callable[..., Any], args: tuple[Any, ...], *, write: bool) -> Any:
        with trio.CancelScope(shield=True):
            self.units_run += 1
            return await self._bridge.run(_transaction, self._engine, fn, args, write)


async def _transaction(
    engine: AsyncEngine, fn: Callable[..., Any], args: tuple[Any, ...], write: bool
) -> Any:
    """On the asyncio thread: one connection, one transaction, the sync unit via greenlet."""
    async with engine.connect() as conn:
        if write:
            await conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            return await conn.run_sync(fn, *args)
