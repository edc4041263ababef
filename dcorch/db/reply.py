"""The one request/reply idiom of the database: a one-shot :class:`Reply` a caller waits on.

Whoever queues work for a loop (the dispatcher's lanes, the batched reads) puts a ``Reply`` in
the message and awaits :meth:`Reply.wait`; the loop resolves it once with an
:class:`outcome.Outcome`. A caller that was cancelled simply stops waiting: resolving a reply
nobody waits on is harmless, so a loop never has to care who is still listening.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class Reply(Generic[T]):
    """Set once with the outcome of one request; later outcomes are ignored."""

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None

    def resolve(self, result: outcome.Outcome[T]) -> None:
        """Deliver ``result`` unless an outcome was already delivered."""
        if self._result is None:
            self._result = result
            self._done.set()

    async def wait(self) -> T:
        """The value, or the error raised, of the request."""
        await self._done.wait()
        assert self._result is not None
        return self._result.unwrap()
