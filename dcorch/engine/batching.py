"""Taking a batch off a channel: the heart of every group commit in dcorch."""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


async def receive_batch(channel: trio.MemoryReceiveChannel[T], max_items: int) -> list[T]:
    """Wait for one item, then take whatever else is already queued, up to ``max_items``.

    Waiting only for the first item keeps a lone request's latency at one hop, while everything
    that queued up during the previous commit rides along in the next one.
    """
    batch = [await channel.receive()]
    while len(batch) < max_items:
        try:
            batch.append(channel.receive_nowait())
        except trio.WouldBlock:
            break
    return batch
