"""The asyncio-thread bridge on its own: results, errors, cancellation semantics."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from dcorch.db.bridge import AsyncioThreadBridge, BridgeClosed


async def test_results_errors_and_thread() -> None:
    bridge = AsyncioThreadBridge()
    await bridge.start()
    try:

        async def where(x: int) -> tuple[str, int]:
            await asyncio.sleep(0)
            return threading.current_thread().name, x * 2

        assert await bridge.run(where, 21) == ("dcorch-db-asyncio", 42)
        assert await bridge.run_sync(lambda: asyncio.get_running_loop() is not None)

        async def fail() -> None:
            raise LookupError("from asyncio")

        with pytest.raises(LookupError, match="from asyncio"):
            await bridge.run(fail)
    finally:
        await bridge.stop()
    with pytest.raises(BridgeClosed):
        await bridge.run_sync(int)


async def test_cancelled_caller_waits_for_the_asyncio_task_to_end() -> None:
    bridge = AsyncioThreadBridge()
    await bridge.start()
    finished = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            finished.set()

    try:
        with trio.move_on_after(0.05) as scope:
            await bridge.run(slow)
        assert scope.cancelled_caught
        assert finished.is_set()  # the caller returned only after the asyncio task ended
    finally:
        await bridge.stop()
