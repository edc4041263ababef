"""The actor system: a root supervisor, the name registry, and graceful shutdown.

    async with open_actor_system(
        ActorSpec(name="db", factory=DbActor),
        SupervisorSpec(name="sync"),
        shutdown_timeout=10.0,
    ) as system:
        sync = system.lookup_supervisor("sync")
        await sync.start_child(ActorSpec(name="subcloud1", factory=SyncActor))
        await system.lookup("sync/subcloud1").tell(Audit())

Leaving the block stops children last-started-first, cancelling the rest once `shutdown_timeout`
runs out. The registry is per system, so systems run side by side (the harness and bench need it).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn, final

import trio

from ._node import Node
from ._ref import ActorRef, SupervisorRef, TaskRef
from ._spec import Backoff, ChildSpec, RestartIntensity, Strategy, SupervisorSpec
from ._state import NodeSnapshot
from ._supervisor import Supervisor
from .errors import ActorNotFound, DuplicateActorName

_DEFAULT_INTENSITY = RestartIntensity()
_DEFAULT_BACKOFF = Backoff()


@final
class ActorSystem:
    """A running tree of supervised children, with lookup by name (from `open_actor_system`)."""

    def __init__(self, root: SupervisorSpec, rng: random.Random) -> None:
        self.rng = rng
        """Source of backoff jitter; inject a seeded one for reproducible delays."""
        self._registry: dict[str, Node] = {}
        self._root = Node(root, "", None)
        self._root.supervisor = Supervisor(self, self._root)
        self._registry[""] = self._root

    @property
    def root(self) -> SupervisorRef:
        """The root supervisor, e.g. to start top-level children at run time."""
        assert isinstance(self._root.ref, SupervisorRef)
        return self._root.ref

    def lookup(self, path: str) -> ActorRef[Any, Any]:
        """The actor registered under `path` (e.g. "sync/subcloud1"), or `ActorNotFound`.

        The ref stays valid while the actor restarts; after a final stop it raises
        `ActorStopped`, and a new child under the same name gets a new ref.
        """
        ref = self._find(path).ref
        if not isinstance(ref, ActorRef):
            raise ActorNotFound(f"no actor named {path}")
        return ref

    def lookup_supervisor(self, path: str) -> SupervisorRef:
        """The supervisor registered under `path` ("" is the root), or `ActorNotFound`."""
        ref = self._find(path).ref
        if not isinstance(ref, SupervisorRef):
            raise ActorNotFound(f"no supervisor named {path}")
        return ref

    def lookup_task(self, path: str) -> TaskRef:
        """The supervised task registered under `path`, or `ActorNotFound`."""
        ref = self._find(path).ref
        if not isinstance(ref, TaskRef):
            raise ActorNotFound(f"no task named {path}")
        return ref

    def names(self) -> list[str]:
        """Every registered path, the root ("") included."""
        return list(self._registry)

    def snapshot(self) -> NodeSnapshot:
        """The whole tree as plain data (`dataclasses.asdict` makes it dicts and lists)."""
        return self._root.snapshot()

    def _find(self, path: str) -> Node:
        node = self._registry.get(path)
        if node is None:
            raise ActorNotFound(f"no actor named {path}")
        return node

    def _register(self, node: Node) -> None:
        if node.path in self._registry:  # pragma: no cover - supervisors check siblings first
            raise DuplicateActorName(f"actor name {node.path} is already taken")
        self._registry[node.path] = node

    def _unregister(self, node: Node) -> None:
        # always true: a path is taken until its node is gone; kept as a guard
        if self._registry.get(node.path) is node:  # pragma: no branch
            del self._registry[node.path]

    def __repr__(self) -> str:
        return (
            f"<ActorSystem {self._root.name} {self._root.state.value} names {len(self._registry)}>"
        )


@asynccontextmanager
async def open_actor_system(
    *children: ChildSpec,
    name: str = "system",
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: RestartIntensity = _DEFAULT_INTENSITY,
    backoff: Backoff = _DEFAULT_BACKOFF,
    shutdown_timeout: float = 10.0,
    rng: random.Random | None = None,
) -> AsyncIterator[ActorSystem]:
    """Start `children` under a root supervisor and yield the running `ActorSystem`.

    Args:
        children: started in order before the block runs; a failure to start is raised.
        name: the root supervisor's name (its path is "").
        strategy, intensity, backoff: the root supervisor's restart rules; past its intensity
            the system ends and the block raises `RestartIntensityExceeded`.
        shutdown_timeout: total time for the graceful stop at the end of the block, after
            which everything still running is cancelled.
        rng: jitter source for backoff delays; a fresh `random.Random()` if None.

    A block's exception or a single system failure is raised as itself, not in an exception group.
    """
    if not shutdown_timeout >= 0:
        raise ValueError(f"shutdown_timeout must be >= 0, got {shutdown_timeout}")
    root = SupervisorSpec(
        name=name, children=children, strategy=strategy, intensity=intensity, backoff=backoff
    )
    system = ActorSystem(root, random.Random() if rng is None else rng)
    body_error: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = system._root.supervisor
            assert supervisor is not None
            await nursery.start(supervisor.serve)
            try:
                yield system
            except Exception as exc:
                # held back so that the nursery is not cancelled: a failing body still gets
                # a graceful shutdown (Cancelled and KeyboardInterrupt propagate at once)
                body_error = exc
            finally:
                # graceful first; at the deadline the nursery cancels whatever is left
                nursery.cancel_scope.deadline = trio.current_time() + shutdown_timeout
                supervisor.request_stop()
    except BaseExceptionGroup as group:
        if body_error is not None:
            raise BaseExceptionGroup(
                "actor system failed", [body_error, *group.exceptions]
            ) from None
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            _reraise(group.exceptions[0])
        raise
    if body_error is not None:
        raise body_error


def _reraise(error: BaseException) -> NoReturn:
    """Raise `error` out of the group that wrapped it, keeping its original context."""
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context
