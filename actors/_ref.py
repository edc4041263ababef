"""Handles to running children: `ActorRef`, `SupervisorRef` and `TaskRef`.

A ref points at the child's node, not an instance: it survives restarts, feeding the same mailbox::

    ref = system.lookup("sync/subcloud1")
    await ref.tell(Audit())            # waits while the mailbox is full
    state = await ref.ask(GetState())  # raises what the handler raised
    print(ref)  # <ActorRef sync/subcloud1 running mailbox 0/16 restarts 1>
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final, overload

import trio

from ._mailbox import Ask, Failure, Reply, Tell
from ._spec import ActorSpec
from ._state import ActorStatistics, NodeSnapshot, State
from .errors import ActorError, ActorStopped, AskTimeout

if TYPE_CHECKING:
    from ._mailbox import Mailbox
    from ._node import Node
    from ._spec import SupervisorSpec, TaskSpec
    from ._supervisor import Supervisor

M = TypeVar("M")
R = TypeVar("R")
M2 = TypeVar("M2")
R2 = TypeVar("R2")


class _Ref:
    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def name(self) -> str:
        """The name among its siblings."""
        return self._node.name

    @property
    def path(self) -> str:
        """The registry name: the names from the root down, joined by '/'."""
        return self._node.path

    @property
    def state(self) -> State:
        return self._node.state

    @property
    def restarts(self) -> int:
        return self._node.restarts

    def snapshot(self) -> NodeSnapshot:
        """This child (and its subtree) as plain data."""
        return self._node.snapshot()

    async def stop(self) -> None:
        """Stop this child for good and wait until it is gone; does nothing if it is gone.

        The child's own `shutdown_timeout` bounds the graceful part, then it is cancelled.
        """
        parent = self._node.parent
        if parent is None:
            raise ActorError("the root supervisor stops with its actor system")
        if self._node.exited.is_set():
            return
        await parent.stop_node(self._node)


@final
class ActorRef(_Ref, Generic[M, R]):
    """Send messages of type `M` to an actor that replies with `R`."""

    __slots__ = ()

    async def tell(self, message: M) -> None:
        """Queue `message` without waiting for it to be handled.

        Waits while the mailbox is full (backpressure); `ActorStopped` once the actor is gone.
        """
        await self._mailbox().put(Tell(message))

    def tell_nowait(self, message: M) -> None:
        """Queue `message` or raise `MailboxFull` at once (or `ActorStopped`)."""
        self._mailbox().put_nowait(Tell(message))

    async def ask(self, message: M) -> R:
        """Send `message` and wait for the reply.

        The wait, queueing included, is bounded by the spec's `ask_timeout` (`AskTimeout`; for
        less, wrap the call in `trio.fail_after`). A handler's exception is raised here and the
        actor lives on; `ActorStopped`: the actor is gone or stopped before handling it.
        """
        node = self._node
        mailbox = self._mailbox()
        assert isinstance(node.spec, ActorSpec)
        limit = node.spec.ask_timeout
        send, receive = trio.open_memory_channel[Reply[R]](1)
        # Closing our end on the way out (timeout, cancel) lets a late reply be dropped.
        with receive:
            try:
                with trio.fail_after(math.inf if limit is None else limit):
                    await mailbox.put(Ask(message, send))
                    reply = await receive.receive()
            except trio.TooSlowError as exc:
                raise AskTimeout(f"ask to actor {node.path} timed out after {limit}s") from exc
            except trio.EndOfChannel:  # pragma: no cover - every ask gets a reply or a failure
                raise ActorStopped(f"actor {node.path} stopped without replying") from None
        if isinstance(reply, Failure):
            raise reply.error
        return reply.value

    def statistics(self) -> ActorStatistics:
        """Mailbox depth, capacity, restarts and last error, right now."""
        return self._node.statistics()

    def _mailbox(self) -> Mailbox[M, R]:
        mailbox = self._node.mailbox
        assert mailbox is not None  # every actor node has one
        return mailbox

    def __repr__(self) -> str:
        node = self._node
        mailbox = self._mailbox()
        return (
            f"<ActorRef {node.path} {node.state.value} "
            f"mailbox {mailbox.depth}/{mailbox.capacity} restarts {node.restarts}>"
        )


@final
class SupervisorRef(_Ref):
    """Start and stop children of a running supervisor."""

    __slots__ = ()

    @overload
    async def start_child(self, spec: ActorSpec[M2, R2]) -> ActorRef[M2, R2]: ...
    @overload
    async def start_child(self, spec: SupervisorSpec) -> SupervisorRef: ...
    @overload
    async def start_child(self, spec: TaskSpec) -> TaskRef: ...

    async def start_child(
        self, spec: ActorSpec[Any, Any] | SupervisorSpec | TaskSpec
    ) -> ActorRef[Any, Any] | SupervisorRef | TaskRef:
        """Start a child at run time and return its ref once it is running.

        Raises the child's start error, `DuplicateActorName` (a sibling's name) or `ActorStopped`
        (supervisor not running). Appended to the start order, so it stops before older ones.
        """
        node = await self._running().start_node(spec)
        return node.ref

    async def stop_child(self, name: str) -> None:
        """Stop the child called `name` for good (`ActorNotFound` if there is none)."""
        await self._running().stop_child(name)

    def children(self) -> list[str]:
        """Names of the current children, in start order."""
        supervisor = self._node.supervisor
        return [] if supervisor is None else [child.name for child in supervisor.children()]

    def _running(self) -> Supervisor:
        supervisor = self._node.supervisor
        if supervisor is None:
            raise ActorStopped(f"supervisor {self._node.path or '/'} is not running")
        return supervisor

    def __repr__(self) -> str:
        node = self._node
        count = len(self.children())
        return (
            f"<SupervisorRef {node.path or '/'} {node.state.value} "
            f"children {count} restarts {node.restarts}>"
        )


@final
class TaskRef(_Ref):
    """A supervised plain async function."""

    __slots__ = ()

    @property
    def value(self) -> object:
        """What the task passed to ``task_status.started()`` in its latest start."""
        return self._node.value

    def __repr__(self) -> str:
        node = self._node
        return f"<TaskRef {node.path} {node.state.value} restarts {node.restarts}>"
