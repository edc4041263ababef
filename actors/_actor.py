"""The `Actor` base class and the loop that feeds it its mailbox.

Subclass `Actor` and implement `handle`; a supervisor runs it::

    class Counter(Actor[int, int]):
        def __init__(self) -> None:
            self.total = 0

        async def handle(self, message: int) -> int:
            self.total += message
            return self.total

    spec = ActorSpec(name="counter", factory=Counter)

One message is handled at a time, in mailbox order, so handlers need no locks.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar, final

import trio

from ._mailbox import Envelope, Failure, Mailbox, Reply, Tell, Value, deliver
from .errors import ActorStopped

if TYPE_CHECKING:
    from ._ref import ActorRef
    from ._system import ActorSystem

logger = logging.getLogger(__name__)

M = TypeVar("M")
R = TypeVar("R")


class Actor(abc.ABC, Generic[M, R]):
    """A unit of state that handles messages of type `M` one by one and replies with `R`.

    A supervisor builds a fresh instance for every (re)start, so state that must survive a
    crash belongs outside the instance (a database, or the message itself).

    Attributes set by the runtime before `on_start`:
        ref: this actor's own ref (stable across restarts), e.g. to tell itself later.
        system: the running `ActorSystem`, e.g. to look up peers by name.
    """

    ref: ActorRef[M, R]
    system: ActorSystem

    async def on_start(self) -> None:
        """Acquire resources before the first message; a failure here counts as a crash."""

    async def on_stop(self) -> None:
        """Release resources. Runs after a graceful stop, a restart of a sibling, and a crash;
        not when the actor is cancelled at a shutdown deadline, since it could not await."""

    @abc.abstractmethod
    async def handle(self, message: M) -> R:
        """Handle one message. For `ask` the return value is the reply and an exception goes
        back to the asker; for `tell` an exception crashes the actor."""


@final
class Control:
    """Lets the supervisor stop one incarnation between two messages."""

    __slots__ = ("_receive_scope", "stop_requested")

    def __init__(self) -> None:
        self.stop_requested = False
        self._receive_scope: trio.CancelScope | None = None

    def request_stop(self) -> None:
        """Finish the message in hand, then stop. Only the wait for the *next* message is
        cancelled, never a handler halfway through."""
        self.stop_requested = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def next_envelope(self, mailbox: Mailbox[M, R]) -> Envelope[M, R] | None:
        """The next envelope, or None when a stop was requested or the mailbox is drained."""
        with trio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                return await mailbox.get()
            except trio.EndOfChannel:
                return None
            finally:
                self._receive_scope = None
        return None


async def run_actor(
    actor: Actor[M, R],
    mailbox: Mailbox[M, R],
    control: Control,
    on_started: Callable[[], None],
) -> None:
    """Run one incarnation of `actor` until a stop is requested or a tell handler fails.

    `on_started` is called once `on_start` succeeded, i.e. when the actor is ready.
    """
    await actor.on_start()
    on_started()
    crash: Exception | None = None
    try:
        while not control.stop_requested:
            envelope = await control.next_envelope(mailbox)
            if envelope is None:
                break
            await _dispatch(actor, envelope, mailbox.path)
    except Exception as exc:
        crash = exc
    if crash is None:
        await actor.on_stop()
        return
    # on_stop runs outside the except block, so a cancel here cannot discard the crash
    await _stop_after_crash(actor, mailbox.path)
    raise crash


async def _dispatch(actor: Actor[M, R], envelope: Envelope[M, R], path: str) -> None:
    if isinstance(envelope, Tell):
        await actor.handle(envelope.message)
        return
    outcome: Reply[R] = Failure(ActorStopped(f"actor {path} stopped before handling the message"))
    try:
        outcome = Value(await actor.handle(envelope.message))
    except Exception as exc:
        # the asker owns this failure; the actor itself is fine
        outcome = Failure(exc)
    finally:
        # also runs when cancelled mid-handler: the asker then gets ActorStopped
        deliver(envelope.reply, outcome)


async def _stop_after_crash(actor: Actor[M, R], path: str) -> None:
    """Give a crashed actor its on_stop; a failure there must not hide the crash."""
    try:
        await actor.on_stop()
    except Exception:
        logger.warning("actor.on_stop_failed actor=%s", path, exc_info=True)
