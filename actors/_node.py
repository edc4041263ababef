"""The record a supervisor keeps for each child, across all of the child's incarnations.

A node is what a ref points to. It holds the mailbox, the restart counters and the state,
so a restart swaps the running incarnation underneath an unchanged node::

    node = Node(spec, path="sync/subcloud1", parent=supervisor)
    node.ref.tell_nowait(message)  # queued in node.mailbox, read by whichever incarnation runs
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, final

import trio

from ._mailbox import Mailbox
from ._ref import ActorRef, SupervisorRef, TaskRef
from ._spec import ActorSpec, ChildSpec, SupervisorSpec
from ._state import ActorStatistics, Kind, NodeSnapshot, State

if TYPE_CHECKING:
    from ._actor import Control
    from ._supervisor import Supervisor


@final
class Node:
    """One child of a supervisor (or the root), alive from its start until its final stop."""

    __slots__ = (
        "control",
        "crashed",
        "delay",
        "exited",
        "held",
        "keeper_scope",
        "kind",
        "last_error",
        "mailbox",
        "name",
        "parent",
        "path",
        "pending",
        "recent",
        "ref",
        "restarts",
        "scope",
        "settled",
        "spec",
        "start_error",
        "state",
        "stopping",
        "supervisor",
        "value",
        "wake",
    )

    def __init__(self, spec: ChildSpec, path: str, parent: Supervisor | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.parent = parent
        self.state = State.STARTING
        self.restarts = 0
        self.last_error: str | None = None
        self.crashed = False
        self.start_error: Exception | None = None
        """Why the first start failed, for the task waiting in start_child."""
        self.value: object = None
        """What a task passed to task_status.started()."""
        self.mailbox: Mailbox[Any, Any] | None = None
        self.control: Control | None = None
        """The running actor incarnation's stop switch."""
        self.supervisor: Supervisor | None = None
        """The running supervisor incarnation."""
        self.scope: trio.CancelScope | None = None
        """Cancels the running incarnation only."""
        self.keeper_scope = trio.CancelScope()
        """Cancels the whole child, restarts included; its keeper enters it. Made here, not
        by the keeper, so that it can be cancelled before the keeper task first runs."""
        self.stopping = False
        self.held = False
        """Stopped by a sibling's group restart and waiting for its turn to start again."""
        self.pending = False
        """Has a group restart request queued at its supervisor."""
        self.delay = 0.0
        self.recent: deque[float] = deque()
        self.wake = trio.Event()
        self.settled = trio.Event()
        self.exited = trio.Event()
        self.ref: ActorRef[Any, Any] | SupervisorRef | TaskRef
        if isinstance(spec, ActorSpec):
            self.kind = Kind.ACTOR
            self.mailbox = Mailbox(path, spec.mailbox_size)
            self.ref = ActorRef(self)
        elif isinstance(spec, SupervisorSpec):
            self.kind = Kind.SUPERVISOR
            self.ref = SupervisorRef(self)
        else:
            self.kind = Kind.TASK
            self.ref = TaskRef(self)

    def statistics(self) -> ActorStatistics:
        mailbox = self.mailbox
        return ActorStatistics(
            path=self.path,
            state=self.state.value,
            mailbox_depth=mailbox.depth if mailbox else 0,
            mailbox_capacity=mailbox.capacity if mailbox else 0,
            senders_waiting=mailbox.senders_waiting if mailbox else 0,
            restarts=self.restarts,
            last_error=self.last_error,
        )

    def snapshot(self) -> NodeSnapshot:
        """This node and, for a running supervisor, its children, as plain data."""
        children: tuple[NodeSnapshot, ...] = ()
        if self.supervisor is not None:
            children = tuple(child.snapshot() for child in self.supervisor.children())
        mailbox = self.mailbox
        return NodeSnapshot(
            name=self.name,
            path=self.path,
            kind=self.kind.value,
            state=self.state.value,
            restarts=self.restarts,
            last_error=self.last_error,
            mailbox_depth=mailbox.depth if mailbox else None,
            mailbox_capacity=mailbox.capacity if mailbox else None,
            children=children,
        )

    def __repr__(self) -> str:
        return f"<Node {self.kind.value} {self.path or '/'} {self.state.value}>"


@final
class StartSignal:
    """The task_status handed to every incarnation: marks the node running and wakes
    whoever waits for it (the caller of start_child, or a group restart)."""

    __slots__ = ("_node", "is_first", "started_once")

    def __init__(self, node: Node, *, first: bool) -> None:
        self._node = node
        self.is_first = first
        self.started_once = False

    def started(self, value: object = None) -> None:
        if self.started_once:
            raise RuntimeError("started() called twice on the same task status")
        self.started_once = True
        node = self._node
        node.value = value
        if not node.stopping:
            node.state = State.RUNNING
        if not node.held:  # a group restart stopping this child waits for it to park
            node.settled.set()
