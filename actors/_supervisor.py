"""Supervisors: a nursery of children plus the OTP rules for restarting them.

Each child runs in a *keeper* task that starts it and restarts it after its backoff
(one_for_one), or hands the restart to the supervisor's task (one_for_all, rest_for_one:
siblings stop last-started-first and restart in order, which needs one coordinator). Past the
intensity it stops its children and fails with `RestartIntensityExceeded`; its parent decides::

    spec = SupervisorSpec(
        name="sync",
        strategy=Strategy.REST_FOR_ONE,
        intensity=RestartIntensity(max_restarts=5, period=60.0),
        children=(ActorSpec(name="db", factory=DbActor), TaskSpec(name="http", fn=serve)),
    )
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, final

import trio

from ._actor import Control, run_actor
from ._node import Node, StartSignal
from ._ref import ActorRef
from ._spec import (
    ActorSpec,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorSpec,
    timeout_or_inf,
)
from ._state import State
from .errors import (
    ActorError,
    ActorNotFound,
    ActorStopped,
    DuplicateActorName,
    RestartIntensityExceeded,
)

if TYPE_CHECKING:
    from ._system import ActorSystem

logger = logging.getLogger(__name__)


@final
class Supervisor:
    """One incarnation of a supervisor; a restart of the supervisor builds a new one."""

    def __init__(self, system: ActorSystem, node: Node) -> None:
        assert isinstance(node.spec, SupervisorSpec)
        self._system = system
        self._node = node
        self._spec: SupervisorSpec = node.spec
        # dicts keep start order and make add/remove/lookup O(1) for 10,000 children
        self._children: dict[str, Node] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._accepting = False
        self._stop_requested = False
        self._failure: RestartIntensityExceeded | None = None
        # at most one entry per child (guarded by Node.pending), so it is bounded
        self._pending: deque[Node] = deque()
        self._history: deque[float] = deque(maxlen=self._spec.intensity.max_restarts + 1)
        self._restart_scope: trio.CancelScope | None = None

    @property
    def _halting(self) -> bool:
        return self._stop_requested or self._failure is not None

    def children(self) -> Iterable[Node]:
        return self._children.values()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, supervise them until stopped, stop them in reverse.

        Ready (``task_status.started()``) once every initial child runs. Raises the error of
        a child that failed to start, or `RestartIntensityExceeded` after escalating.
        """
        start_error: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for spec in self._spec.children:
                        await self._start(spec)
                except Exception as exc:
                    start_error = exc
                else:
                    self._accepting = True
                    if self._node.parent is None:  # a child's state is set by its keeper
                        self._node.state = State.RUNNING
                    task_status.started()
                    await self._serve()
                await self._stop_all()
        finally:
            if self._node.parent is None:  # keepers set the state of all other supervisors
                failed = self._failure is not None or start_error is not None
                self._node.state = State.FAILED if failed else State.STOPPED
                if failed:
                    self._node.last_error = repr(start_error or self._failure)
        if start_error is not None:
            raise start_error
        if self._failure is not None:
            raise self._failure

    def request_stop(self) -> None:
        """Begin a graceful stop: no new children, then stop all, last started first."""
        self._stop_requested = True
        self._wake.set()
        if self._restart_scope is not None:
            self._restart_scope.cancel()

    async def start_node(self, spec: ChildSpec) -> Node:
        if not self._accepting or self._halting:
            raise ActorStopped(f"supervisor {self._node.path or '/'} is not accepting children")
        return await self._start(spec)

    async def stop_child(self, name: str) -> None:
        node = self._children.get(name)
        if node is None:
            raise ActorNotFound(f"no child named {name} under {self._node.path or '/'}")
        await self.stop_node(node)

    async def stop_node(self, node: Node) -> None:
        """Stop `node` for good: gracefully within its shutdown_timeout, then by cancelling."""
        if not node.stopping:
            node.stopping = True
            if node.state in (State.STARTING, State.RUNNING):
                node.state = State.STOPPING
            if node.mailbox is not None:
                node.mailbox.close()
            self._interrupt(node, final=True)
        with trio.move_on_after(timeout_or_inf(node.spec.shutdown_timeout)):
            await node.exited.wait()
        if not node.exited.is_set():
            logger.warning("child.stop_timeout child=%s", node.path)
            node.keeper_scope.cancel()
            await node.exited.wait()

    # -- starting and keeping one child ---------------------------------------------------

    async def _start(self, spec: ChildSpec) -> Node:
        path = f"{self._node.path}/{spec.name}" if self._node.path else spec.name
        if spec.name in self._children:
            raise DuplicateActorName(f"actor name {path} is already taken")
        node = Node(spec, path, self)
        self._children[spec.name] = node
        self._system._register(node)
        assert self._nursery is not None
        # start_soon plus a readiness event rather than nursery.start: it needs half the
        # scheduler rounds, which matters when 10,000 children start one after another
        self._nursery.start_soon(self._keep, node)
        try:
            await node.settled.wait()
        except BaseException:
            # cancelled while the child starts: like nursery.start, take the child down too
            node.stopping = True
            node.keeper_scope.cancel()
            raise
        if node.start_error is not None:
            error, node.start_error = node.start_error, None
            raise error
        if node.exited.is_set():
            raise ActorError(f"{node.kind.value} {path} ended before it was started")
        return node

    async def _keep(self, node: Node) -> None:
        """The keeper task of `node`: runs it from its first start to its final stop."""
        try:
            with node.keeper_scope:
                # stopping already only if stopped before this task first ran: a scheduling
                # race that no test can order, hence no branch
                if not node.stopping:  # pragma: no branch
                    await self._keep_loop(node)
        except Exception as exc:
            if node.settled.is_set():  # pragma: no cover - nobody waits: a bug, fail loudly
                raise
            # a failed first start: the task waiting in _start raises it
            node.start_error = exc
        finally:
            self._gone(node)

    async def _keep_loop(self, node: Node) -> None:
        status = StartSignal(node, first=True)
        while True:
            crash = await self._incarnate(node, status)
            if status.is_first and not status.started_once:
                return  # the first start ended early: _start reports it
            status = StartSignal(node, first=False)
            if node.held:
                await self._park(node)
            else:
                if self._ends_here(node, crash):
                    return
                delay = self._count_restart(node, crash)
                if delay is None:
                    return
                if self._spec.strategy is Strategy.ONE_FOR_ONE:
                    node.state = State.RESTARTING
                    node.wake = trio.Event()
                    with trio.move_on_after(delay):
                        await node.wake.wait()
                else:
                    node.held = node.pending = True
                    node.delay = delay
                    self._pending.append(node)
                    self._wake.set()
                    await self._park(node)
            if node.stopping or self._halting:
                return

    async def _incarnate(self, node: Node, status: StartSignal) -> Exception | None:
        """Run one incarnation; return its crash, or None if it ended without one."""
        node.state = State.STOPPING if node.stopping else State.STARTING
        spec = node.spec
        try:
            with trio.CancelScope() as node.scope:
                if isinstance(spec, ActorSpec):
                    actor = spec.factory()
                    assert isinstance(node.ref, ActorRef)
                    actor.ref = node.ref
                    actor.system = self._system
                    node.control = Control()
                    assert node.mailbox is not None
                    await run_actor(actor, node.mailbox, node.control, status.started)
                elif isinstance(spec, SupervisorSpec):
                    node.supervisor = Supervisor(self._system, node)
                    await node.supervisor.serve(task_status=status)
                else:
                    await spec.fn(*spec.args, task_status=status)
        except Exception as exc:
            node.crashed = True
            node.last_error = repr(exc)
            if status.is_first and not status.started_once:
                raise  # the caller of start_child (or of the parent's start) gets it
            logger.warning("child.crashed child=%s", node.path, exc_info=True)
            return exc
        finally:
            node.scope = None
            node.control = None
            node.supervisor = None
        node.crashed = False
        return None

    def _ends_here(self, node: Node, crash: Exception | None) -> bool:
        if node.stopping or self._halting:
            return True
        restart = node.spec.restart
        return restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and crash is None)

    def _count_restart(self, node: Node, crash: Exception | None) -> float | None:
        """Record a restart of `node`; its backoff delay, or None after escalating."""
        now = trio.current_time()
        intensity = self._spec.intensity
        cutoff = now - intensity.period
        history = self._history
        history.append(now)
        while history and history[0] <= cutoff:
            history.popleft()
        if len(history) > intensity.max_restarts:
            error = RestartIntensityExceeded(
                f"supervisor {self._node.path or '/'} exceeded {intensity.max_restarts} "
                f"restarts in {intensity.period}s, last crash in {node.path}"
            )
            error.__cause__ = crash
            self._fail(error)
            return None
        recent = node.recent
        while recent and recent[0] <= cutoff:
            recent.popleft()
        attempt = len(recent)  # bounded by max_restarts, or the check above escalates
        recent.append(now)
        node.restarts += 1
        delay = self._spec.backoff.delay(attempt, self._system.rng)
        logger.info("child.restarting child=%s attempt=%d delay=%.3f", node.path, attempt, delay)
        return delay

    def _fail(self, error: RestartIntensityExceeded) -> None:
        # always true: _ends_here found no failure just before the one call, in the same
        # step; kept so that a second failure could never replace the first
        if self._failure is None:  # pragma: no branch
            logger.error("supervisor.escalating supervisor=%s", self._node.path or "/")
            self._failure = error
            self._wake.set()
            if self._restart_scope is not None:
                self._restart_scope.cancel()

    async def _park(self, node: Node) -> None:
        """Wait, stopped, until a group restart resumes this child (or it is stopped)."""
        node.state = State.RESTARTING
        node.wake = trio.Event()
        node.settled.set()
        if node.stopping or self._halting:
            return
        await node.wake.wait()

    def _interrupt(self, node: Node, *, final: bool) -> None:
        """Ask the running incarnation of `node` to end (gracefully for actors and
        supervisors, by cancellation for tasks), and wake a keeper that is waiting."""
        if node.control is not None:
            if not (final and isinstance(node.spec, ActorSpec) and node.spec.drain_on_stop):
                node.control.request_stop()
        elif node.supervisor is not None:
            node.supervisor.request_stop()
        elif node.scope is not None:
            node.scope.cancel()
        if final:
            node.wake.set()

    def _gone(self, node: Node) -> None:
        """The keeper of `node` ends: sync, so it also runs under cancellation."""
        node.state = State.FAILED if node.crashed else State.STOPPED
        node.pending = False
        if node.mailbox is not None:
            node.mailbox.discard()
        # always true: a name is taken until its node is gone; kept as a guard
        if self._children.get(node.name) is node:  # pragma: no branch
            del self._children[node.name]
        self._system._unregister(node)
        node.settled.set()
        node.exited.set()

    # -- the supervisor's own task: group restarts and stopping ---------------------------

    async def _serve(self) -> None:
        while not self._halting:
            if not self._pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            node = self._pending.popleft()
            if node.pending:
                with trio.CancelScope() as self._restart_scope:
                    await self._restart_group(node)
                self._restart_scope = None

    async def _restart_group(self, failed: Node) -> None:
        order = list(self._children.values())
        if self._spec.strategy is Strategy.ONE_FOR_ALL:
            group = order
        else:
            group = order[order.index(failed) :] if failed in order else []
        for sibling in reversed(group):
            if sibling.held or sibling.stopping:
                continue
            sibling.held = True
            if sibling.settled.is_set():
                # else it is still starting and _start waits on this very event: keep it
                sibling.settled = trio.Event()
            self._interrupt(sibling, final=False)
            with trio.move_on_after(timeout_or_inf(sibling.spec.shutdown_timeout)):
                await sibling.settled.wait()
            if not sibling.settled.is_set():
                # None only if its keeper has not run yet: a scheduling race, hence no branch
                if sibling.scope is not None:  # pragma: no branch
                    sibling.scope.cancel()
                await sibling.settled.wait()
        await trio.sleep(failed.delay)
        for sibling in group:
            if sibling.exited.is_set() or sibling.stopping:
                continue
            # a sibling that crashed too has its own request queued: its restart is counted
            counted = sibling.pending
            sibling.pending = sibling.held = False
            if sibling is not failed and not counted:
                if sibling.spec.restart is Restart.TEMPORARY:
                    sibling.stopping = True
                    sibling.wake.set()
                    continue
                sibling.restarts += 1
            sibling.settled = trio.Event()
            sibling.wake.set()
            await sibling.settled.wait()

    async def _stop_all(self) -> None:
        self._accepting = False
        self._stop_requested = True
        if self._node.state is State.RUNNING:
            self._node.state = State.STOPPING
        for node in reversed(list(self._children.values())):
            await self.stop_node(node)
