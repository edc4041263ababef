"""The recent message ids: a redelivered call or cast is answered, not applied twice.

A call is acknowledged only after its handler returned and its reply was published, so a
connection lost in between makes the broker deliver it again (``redelivered``, same
``_unique_id``), and a client may resend it. The first delivery's outcome is kept here; the
second one waits for it (the handler may still be running: handlers outlive connections) and
sends the same reply.
"""

from __future__ import annotations

from collections import OrderedDict

import trio


class Abandoned(Exception):
    """The handler did not finish (the server stopped it): the message must be delivered again."""


class Outcome:
    """One message's handling: in progress until :meth:`finish` (or :meth:`abandon`)."""

    __slots__ = ("_done", "abandoned", "reply")

    def __init__(self) -> None:
        self._done = trio.Event()
        self.reply: bytes | None = None
        """The encoded reply of a call; None for a cast."""
        self.abandoned = False

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self, reply: bytes | None) -> None:
        self.reply = reply
        self._done.set()

    def abandon(self) -> None:
        self.abandoned = True
        self._done.set()

    async def wait(self) -> bytes | None:
        """The reply once the handler is done; raises :class:`Abandoned` if it never will be."""
        await self._done.wait()
        if self.abandoned:
            raise Abandoned()
        return self.reply


class RecentIds:
    """At most ``size`` finished outcomes by message id, oldest forgotten first.

    Outcomes still in progress are never forgotten (there are at most ``prefetch`` of them).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outcomes)

    def get(self, key: str) -> Outcome | None:
        return self._outcomes.get(key)

    def start(self, key: str) -> Outcome:
        """A new in-progress outcome for ``key`` (which must not be known)."""
        outcome = Outcome()
        self._outcomes[key] = outcome
        self._trim()
        return outcome

    def forget(self, key: str, outcome: Outcome) -> None:
        if self._outcomes.get(key) is outcome:
            del self._outcomes[key]

    def _trim(self) -> None:
        excess = len(self._outcomes) - self._size
        if excess <= 0:
            return
        for key in [k for k, o in self._outcomes.items() if o.done][:excess]:
            del self._outcomes[key]
