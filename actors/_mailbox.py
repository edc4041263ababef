"""Message envelopes and the bounded mailbox that carries them.

A fixed-size trio memory channel that outlives the instances reading it: restarts lose nothing::

    mailbox = Mailbox[str, int]("sync/subcloud1", capacity=16)
    await mailbox.put(Tell("audit"))
    envelope = await mailbox.get()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar, final

import trio

from .errors import ActorStopped, MailboxFull

logger = logging.getLogger(__name__)

M = TypeVar("M")
R = TypeVar("R")


@final
@dataclass(frozen=True, slots=True)
class Tell(Generic[M]):
    """A fire-and-forget message: a failure while handling it crashes the actor."""

    message: M


@final
@dataclass(frozen=True, slots=True)
class Value(Generic[R]):
    """A successful reply."""

    value: R


@final
@dataclass(frozen=True, slots=True)
class Failure:
    """A failed reply: the asker raises `error`."""

    error: BaseException


Reply: TypeAlias = Value[R] | Failure


@final
@dataclass(frozen=True, slots=True)
class Ask(Generic[M, R]):
    """A request: the reply goes through `reply`, a channel of size 1 owned by the asker."""

    message: M
    reply: trio.MemorySendChannel[Reply[R]]


Envelope: TypeAlias = Tell[M] | Ask[M, R]


def deliver(reply: trio.MemorySendChannel[Reply[R]], outcome: Reply[R]) -> None:
    """Send `outcome` to an asker without ever failing.

    An asker gone away (cancelled, timed out) closed its end: the reply is dropped without
    crashing the answering actor. Synchronous, so it works from cancelled tasks and ``finally``.
    """
    try:
        reply.send_nowait(outcome)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        logger.debug("ask.abandoned outcome=%r", outcome)
    except trio.WouldBlock:  # pragma: no cover - each reply channel carries one reply
        logger.warning("ask.replied_twice outcome=%r", outcome)
    reply.close()


@final
class Mailbox(Generic[M, R]):
    """The bounded queue of one child, shared by all its refs and all its incarnations."""

    __slots__ = ("_receive", "_send", "capacity", "path")

    def __init__(self, path: str, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[Envelope[M, R]](capacity)

    @property
    def depth(self) -> int:
        """Messages waiting in the buffer (senders blocked on a full mailbox not included)."""
        return self._send.statistics().current_buffer_used

    @property
    def senders_waiting(self) -> int:
        """Tasks blocked in `put` because the mailbox is full."""
        return self._send.statistics().tasks_waiting_send

    def _stopped(self) -> ActorStopped:
        return ActorStopped(f"actor {self.path} is stopped")

    async def put(self, envelope: Envelope[M, R]) -> None:
        """Queue `envelope`, waiting for room: this wait is the backpressure."""
        try:
            await self._send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._stopped() from None

    def put_nowait(self, envelope: Envelope[M, R]) -> None:
        """Queue `envelope` or raise `MailboxFull` at once."""
        try:
            self._send.send_nowait(envelope)
        except trio.WouldBlock:
            raise MailboxFull(
                f"mailbox of actor {self.path} is full ({self.capacity}/{self.capacity})"
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._stopped() from None

    async def get(self) -> Envelope[M, R]:
        """The next envelope; raises `trio.EndOfChannel` once closed and drained."""
        return await self._receive.receive()

    def close(self) -> None:
        """Refuse new messages; the queued ones can still be read (drained)."""
        self._send.close()

    def discard(self) -> int:
        """Close for good, fail every queued ask with `ActorStopped`; returns how many dropped.

        Synchronous, so it runs even when the owner was cancelled at a shutdown deadline.
        """
        self._send.close()
        dropped = 0
        while True:
            try:
                envelope = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            dropped += 1
            if isinstance(envelope, Ask):
                error = ActorStopped(f"actor {self.path} stopped before handling the message")
                deliver(envelope.reply, Failure(error))
        self._receive.close()
        if dropped:
            logger.info("mailbox.discarded actor=%s messages=%d", self.path, dropped)
        return dropped
