"""A dedicated asyncio event-loop thread that Trio code can await.

Why (docs/database.md#a-database-actor-owning-one-asyncio-thread): the ``AsyncEngine``, aiosqlite
and asyncpg need asyncio, and ``trio-asyncio`` would patch asyncio process-wide and is slower on
I/O. So the engine has its own thread and loop, and a Trio task hands it coroutines:

1. ``loop.call_soon_threadsafe`` creates the asyncio task on the loop thread;
2. the task's done-callback wakes the Trio task with ``TrioToken.run_sync_soon(reschedule)``;
3. meanwhile the Trio task sleeps in ``wait_task_rescheduled`` (no worker thread is held).

A cancelled Trio caller cancels the asyncio task but waits until it has *finished*
(``Abort.FAILED``), leaving nothing running unobserved; the unit runner shields crossings anyway.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class BridgeClosed(RuntimeError):
    """The bridge's loop thread is not running."""


class AsyncioThreadBridge:
    """Owns one asyncio loop thread; :meth:`run` executes a coroutine function on it."""

    def __init__(self, name: str = "dcorch-db-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self._loop is not None else "stopped"
        return f"<AsyncioThreadBridge {self._name} {state}>"

    async def start(self) -> None:
        """Start the loop thread and return once its loop is running."""
        token = trio.lowlevel.current_trio_token()
        ready = trio.Event()
        holder: dict[str, asyncio.AbstractEventLoop] = {}

        def main() -> None:
            # Made in its own thread: under trio-asyncio (if imported) a Trio thread would raise.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            holder["loop"] = loop
            loop.call_soon(token.run_sync_soon, ready.set)
            try:
                loop.run_forever()
            finally:
                _close_loop(loop)

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        await ready.wait()
        self._loop = holder["loop"]

    async def stop(self) -> None:
        """Stop the loop (pending asyncio tasks are cancelled) and join the thread."""
        loop, thread = self._loop, self._thread
        self._loop = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        # join() blocks; the loop exits within a few ms once stop() is scheduled.
        await trio.to_thread.run_sync(thread.join)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the loop thread and return its result (or raise its error)."""
        result: T = await self._run(fn, args)
        return result

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the plain function ``fn(*args)`` on the loop thread (for loop-bound objects)."""
        result: T = await self._run(fn, args)
        return result

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        loop = self._loop
        if loop is None:
            raise BridgeClosed("asyncio bridge is not running")
        token = trio.lowlevel.current_trio_token()
        me = trio.lowlevel.current_task()
        box: dict[str, Any] = {}

        def done(task: asyncio.Future[Any]) -> None:
            if task.cancelled():
                res: outcome.Outcome[Any] = outcome.Error(asyncio.CancelledError())
            elif (exc := task.exception()) is not None:
                res = outcome.Error(exc)
            else:
                res = outcome.Value(task.result())
            # reschedule() unwraps one Outcome, so the real one travels inside a Value.
            token.run_sync_soon(trio.lowlevel.reschedule, me, outcome.Value(res))

        def start_task() -> None:
            task = loop.create_task(_call(fn, args))
            box["task"] = task
            if box.get("cancel"):
                task.cancel()
            task.add_done_callback(done)

        def cancel_task() -> None:
            box["cancel"] = True
            task = box.get("task")
            if task is not None:
                task.cancel()

        def abort(raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            box["raise_cancel"] = raise_cancel
            loop.call_soon_threadsafe(cancel_task)
            return trio.lowlevel.Abort.FAILED

        loop.call_soon_threadsafe(start_task)
        res: outcome.Outcome[Any] = await trio.lowlevel.wait_task_rescheduled(abort)
        if (
            isinstance(res, outcome.Error)
            and isinstance(res.error, asyncio.CancelledError)
            and "raise_cancel" in box
        ):
            box["raise_cancel"]()  # raises trio.Cancelled in place of asyncio's
        return res.unwrap()


async def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop, finish async generators and close it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
