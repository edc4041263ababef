"""Taking a batch off a channel: the heart of every group commit and batched read."""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


def take_queued(channel: trio.MemoryReceiveChannel[T], max_items: int) -> tuple[list[T], bool]:
    """Whatever is queued right now, up to ``max_items``, and whether the channel is still open.

    Never waits: the caller waits once for *something* to arrive, so a lone request's latency
    stays one hop, while everything that queued up during the previous commit rides along in
    the next one.
    """
    batch: list[T] = []
    while len(batch) < max_items:
        try:
            batch.append(channel.receive_nowait())
        except trio.WouldBlock:
            return batch, True
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return batch, False
    return batch, True
