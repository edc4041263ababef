"""The actor system: registry, dynamic children, snapshots and shutdown."""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing

from actors import (
    ActorError,
    ActorNotFound,
    ActorSpec,
    ActorStopped,
    Backoff,
    DuplicateActorName,
    Restart,
    RestartIntensity,
    RestartIntensityExceeded,
    State,
    SupervisorSpec,
    TaskSpec,
    open_actor_system,
)

from ._probes import Log, Probe, SlowStop, probe, state_of

NO_DELAY = Backoff(base=0, jitter=0)


async def test_shutdown_stops_children_in_reverse_start_order(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        SupervisorSpec(
            name="s",
            children=(
                ActorSpec(name="b", factory=probe("b", log)),
                ActorSpec(name="c", factory=probe("c", log)),
            ),
        ),
        ActorSpec(name="d", factory=probe("d", log)),
    ) as system:
        await system.lookup_supervisor("s").start_child(
            ActorSpec(name="e", factory=probe("e", log))
        )
        log.clear()
    assert log == [("stop", "d"), ("stop", "e"), ("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert system.names() == [""]
    assert system.snapshot().state == "stopped"


async def test_a_hanging_on_stop_is_cancelled_at_the_system_deadline(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        ActorSpec(name="b", factory=probe("b", log, hang_on_stop=True), shutdown_timeout=None),
        shutdown_timeout=3.0,
    ) as system:
        ref = system.lookup("b")
        t0 = trio.current_time()
    assert trio.current_time() - t0 == 3.0
    # b started last so it stops first; its on_stop hangs, and the deadline cancels both
    # before a's graceful stop begins
    assert log == [("start", "a"), ("start", "b"), ("stop", "b")]
    assert ref.state is State.STOPPED


async def test_a_hanging_on_stop_is_cancelled_at_its_own_shutdown_timeout(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        ActorSpec(name="b", factory=probe("b", log, hang_on_stop=True), shutdown_timeout=2.0),
        shutdown_timeout=10.0,
    ):
        t0 = trio.current_time()
    assert trio.current_time() - t0 == 2.0
    assert log[-2:] == [("stop", "b"), ("stop", "a")]


async def test_queued_asks_fail_with_actor_stopped_at_shutdown(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    errors: list[str] = []
    async with trio.open_nursery() as nursery:
        async with open_actor_system(
            ActorSpec(name="a", factory=probe("a", log)), shutdown_timeout=1.0
        ) as system:
            ref = system.lookup("a")
            ref.tell_nowait(trio.Event())  # never set: the actor is busy until cancelled

            async def ask(message: int) -> None:
                with pytest.raises(ActorStopped) as info:
                    await ref.ask(message)
                errors.append(str(info.value))

            for message in range(3):
                nursery.start_soon(ask, message)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().mailbox_depth == 3
            t0 = trio.current_time()
        assert trio.current_time() - t0 == 1.0
    assert errors == ["actor a stopped before handling the message"] * 3


async def test_dynamic_children_start_stop_and_registry(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(SupervisorSpec(name="sync")) as system:
        sync = system.lookup_supervisor("sync")
        ref = await sync.start_child(ActorSpec(name="subcloud1", factory=probe("s1", log)))
        assert system.lookup("sync/subcloud1") is ref
        assert await ref.ask("x") == ("s1", "x")
        with pytest.raises(
            DuplicateActorName, match=r"^actor name sync/subcloud1 is already taken$"
        ):
            await sync.start_child(ActorSpec(name="subcloud1", factory=probe("s1", log)))
        assert sync.children() == ["subcloud1"]
        await sync.stop_child("subcloud1")
        assert sync.children() == []
        with pytest.raises(ActorNotFound, match=r"^no actor named sync/subcloud1$"):
            system.lookup("sync/subcloud1")
        with pytest.raises(ActorNotFound, match=r"^no child named subcloud1 under sync$"):
            await sync.stop_child("subcloud1")
        again = await sync.start_child(ActorSpec(name="subcloud1", factory=probe("s1b", log)))
        assert again is not ref
        assert await again.ask("y") == ("s1b", "y")
    assert log.count(("stop", "s1")) == 1


async def test_a_child_that_fails_to_start_raises_in_the_caller_and_leaves_no_trace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(Probe):
        async def on_start(self) -> None:
            raise OSError("no database")

    async with open_actor_system(backoff=NO_DELAY) as system:
        with pytest.raises(OSError, match=r"^no database$"):
            await system.root.start_child(ActorSpec(name="db", factory=lambda: Broken("db", [])))
        assert system.names() == [""]
        assert system.root.children() == []


async def test_an_initial_child_that_fails_to_start_fails_the_system(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    class Broken(Probe):
        async def on_start(self) -> None:
            raise OSError("no database")

    with pytest.raises(OSError, match=r"^no database$"):
        async with open_actor_system(
            ActorSpec(name="a", factory=probe("a", log)),
            ActorSpec(name="db", factory=lambda: Broken("db", log)),
        ):
            pytest.fail("the body must not run")  # pragma: no cover
    assert log == [("start", "a"), ("stop", "a")]


async def test_a_plain_async_function_runs_as_a_supervised_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cleanups: list[int] = []

    async def serve_http(port: int, *, task_status: trio.TaskStatus[int]) -> None:
        try:
            task_status.started(port)
            await trio.sleep_forever()
        finally:
            cleanups.append(port)

    async with open_actor_system(TaskSpec(name="http", fn=serve_http, args=(8080,))) as system:
        http = system.lookup_task("http")
        assert http.value == 8080
        assert repr(http) == "<TaskRef http running restarts 0>"
        with pytest.raises(ActorNotFound, match=r"^no actor named http$"):
            system.lookup("http")
    assert cleanups == [8080]
    assert http.state is State.STOPPED


async def test_snapshot_and_repr_show_the_live_tree(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    gate = trio.Event()
    async with open_actor_system(
        SupervisorSpec(
            name="sync",
            children=(ActorSpec(name="subcloud1", factory=probe("s1", log), mailbox_size=16),),
            backoff=NO_DELAY,
        ),
        name="dcorch",
    ) as system:
        ref = system.lookup("sync/subcloud1")
        await ref.tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        ref.tell_nowait(gate)
        for n in range(3):
            ref.tell_nowait(n)
        await trio.testing.wait_all_tasks_blocked()
        assert repr(ref) == "<ActorRef sync/subcloud1 running mailbox 3/16 restarts 1>"
        assert repr(system.root) == "<SupervisorRef / running children 1 restarts 0>"
        assert repr(system) == "<ActorSystem dcorch running names 3>"
        assert dataclasses.asdict(system.snapshot()) == {
            "name": "dcorch",
            "path": "",
            "kind": "supervisor",
            "state": "running",
            "restarts": 0,
            "last_error": None,
            "mailbox_depth": None,
            "mailbox_capacity": None,
            "children": (
                {
                    "name": "sync",
                    "path": "sync",
                    "kind": "supervisor",
                    "state": "running",
                    "restarts": 0,
                    "last_error": None,
                    "mailbox_depth": None,
                    "mailbox_capacity": None,
                    "children": (
                        {
                            "name": "subcloud1",
                            "path": "sync/subcloud1",
                            "kind": "actor",
                            "state": "running",
                            "restarts": 1,
                            "last_error": "RuntimeError('s1 crashed')",
                            "mailbox_depth": 3,
                            "mailbox_capacity": 16,
                            "children": (),
                        },
                    ),
                },
            ),
        }
        gate.set()


async def test_the_root_cannot_be_stopped_through_its_ref(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_actor_system() as system:
        with pytest.raises(ActorError, match=r"^the root supervisor stops with its actor system$"):
            await system.root.stop()
    with pytest.raises(ActorStopped, match=r"^supervisor / is not accepting children$"):
        await system.root.start_child(SupervisorSpec(name="late"))


async def test_an_error_in_the_body_is_raised_unwrapped_after_a_graceful_stop(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    with pytest.raises(KeyError, match=r"^'boom'$"):
        async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))):
            raise KeyError("boom")
    assert log == [("start", "a"), ("stop", "a")]


async def test_temporary_child_that_crashes_is_removed(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system() as system:
        ref = await system.root.start_child(
            ActorSpec(name="t", factory=probe("t", log), restart=Restart.TEMPORARY)
        )
        await ref.tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.state is State.FAILED
        assert system.names() == [""]


@pytest.mark.slow
async def test_ten_thousand_actors_start_and_stop() -> None:
    count = 10_000
    log: Log = []
    async with open_actor_system(SupervisorSpec(name="sync")) as system:
        sync = system.lookup_supervisor("sync")
        for n in range(count):
            await sync.start_child(ActorSpec(name=f"s{n}", factory=probe(f"s{n}", log)))
        assert len(system.names()) == count + 2
        assert await system.lookup("sync/s9999").ask("x") == ("s9999", "x")
        for n in range(0, count, 2):  # dynamic stops, from the middle of the start order
            await sync.stop_child(f"s{n}")
        assert len(sync.children()) == count // 2
    assert system.names() == [""]
    stops = [name for kind, name in log if kind == "stop"]
    assert len(stops) == count
    # the survivors stop last-started first
    assert stops[count // 2 :] == [f"s{n}" for n in reversed(range(1, count, 2))]


async def test_a_start_child_cancelled_while_starting_takes_the_child_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStart(Probe):
        async def on_start(self) -> None:
            await trio.sleep(10)

    async with open_actor_system() as system:
        with trio.move_on_after(1) as scope:
            await system.root.start_child(
                ActorSpec(name="slow", factory=lambda: SlowStart("s", []))
            )
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert system.names() == [""]


async def test_a_start_child_cancelled_at_once_leaves_no_trace_in_either_task_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The caller and the new child's keeper task become runnable together, and trio picks
    # their order at random: the child either never starts, or starts and is cancelled
    # (so no on_stop). Several rounds run both orders with near certainty.
    async with open_actor_system() as system:
        for round_ in range(20):
            log: Log = []
            with trio.CancelScope() as scope:
                scope.cancel()
                await system.root.start_child(ActorSpec(name="a", factory=probe("a", log)))
            assert scope.cancelled_caught, round_
            await trio.testing.wait_all_tasks_blocked()
            assert system.names() == [""], round_
            assert log in ([], [("start", "a")]), round_


async def test_a_task_that_returns_before_it_is_started_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def quits(*, task_status: trio.TaskStatus[None]) -> None:
        return

    async with open_actor_system() as system:
        with pytest.raises(ActorError, match=r"^task quits ended before it was started$"):
            await system.root.start_child(TaskSpec(name="quits", fn=quits))
        assert system.names() == [""]


async def test_a_stop_during_a_restart_backoff_is_immediate(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(backoff=Backoff(base=30.0, jitter=0)) as system:
        ref = await system.root.start_child(ActorSpec(name="a", factory=probe("a", log)))
        await ref.tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.state is State.RESTARTING
        t0 = trio.current_time()
        await ref.stop()
        assert trio.current_time() == t0
        assert ref.statistics().state == "failed"  # its last incarnation crashed
    assert log == [("start", "a"), ("stop", "a")]


async def test_an_asker_waiting_for_mailbox_room_gets_actor_stopped_when_it_stops(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system() as system:
        # a size-0 mailbox is a rendezvous: every sender waits for the actor
        ref = await system.root.start_child(
            ActorSpec(name="a", factory=probe("a", log), mailbox_size=0)
        )
        async with trio.open_nursery() as nursery:
            gate = trio.Event()
            nursery.start_soon(ref.tell, gate)
            await trio.testing.wait_all_tasks_blocked()

            async def late_ask() -> None:
                with pytest.raises(ActorStopped, match=r"^actor a is stopped$"):
                    await ref.ask("late")

            nursery.start_soon(late_ask)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().senders_waiting == 1
            nursery.start_soon(ref.stop)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert ref.state is State.STOPPED


async def test_refs_name_and_path_and_lookups_check_the_kind(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep_forever()

    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        SupervisorSpec(name="s", children=(ActorSpec(name="b", factory=probe("b", log)),)),
        TaskSpec(name="t", fn=serve),
        name="dcorch",
    ) as system:
        b = system.lookup("s/b")
        assert (b.name, b.path) == ("b", "s/b")
        assert (system.root.name, system.root.path) == ("dcorch", "")
        assert (system.lookup_task("t").name, system.lookup_task("t").path) == ("t", "t")
        with pytest.raises(ActorNotFound, match=r"^no supervisor named a$"):
            system.lookup_supervisor("a")
        with pytest.raises(ActorNotFound, match=r"^no task named s$"):
            system.lookup_task("s")
        with pytest.raises(ActorNotFound, match=r"^no actor named s/c$"):
            system.lookup_task("s/c")
        assert system.lookup_supervisor("") is system.root


async def test_a_stopped_supervisor_ref_has_no_children(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        SupervisorSpec(name="s", children=(ActorSpec(name="b", factory=probe("b", log)),))
    ) as system:
        sub = system.lookup_supervisor("s")
        assert sub.children() == ["b"]
        await sub.stop()
        assert sub.children() == []
        assert repr(sub) == "<SupervisorRef s stopped children 0 restarts 0>"
        with pytest.raises(ActorStopped, match=r"^supervisor s is not running$"):
            await sub.start_child(ActorSpec(name="c", factory=probe("c", log)))
    assert log == [("start", "b"), ("stop", "b")]


@pytest.mark.parametrize("value", [-1.0, math.nan])
async def test_open_actor_system_rejects_a_bad_shutdown_timeout(value: float) -> None:
    with pytest.raises(ValueError, match=rf"^shutdown_timeout must be >= 0, got {value}$"):
        async with open_actor_system(shutdown_timeout=value):
            pytest.fail("the body must not run")  # pragma: no cover


async def test_concurrent_stops_of_one_child_both_wait_until_it_is_gone(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(ActorSpec(name="a", factory=lambda: SlowStop("a", log))) as system:
        ref = system.lookup("a")
        t0 = trio.current_time()
        done: list[float] = []

        async def stop() -> None:
            await ref.stop()
            done.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop)
            nursery.start_soon(stop)
        assert done == [1.0, 1.0]
        assert ref.state is State.STOPPED
    assert log == [("start", "a"), ("stop", "a"), ("stopped", "a")]


async def test_a_child_stopped_while_it_starts_finishes_starting_and_then_stops(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    class SlowStartAndStop(SlowStop):
        async def on_start(self) -> None:
            await super().on_start()
            await trio.sleep(2)

    async with open_actor_system() as system:
        t0 = trio.current_time()
        stopped: list[float] = []

        async def stop_it_meanwhile() -> None:
            await trio.sleep(1)
            ref = system.lookup("slow")
            assert ref.state is State.STARTING
            await ref.stop()
            stopped.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_it_meanwhile)
            ref = await system.root.start_child(
                ActorSpec(name="slow", factory=lambda: SlowStartAndStop("slow", log))
            )
            # on_start ran to its end, but the child stays stopping: it never runs
            assert trio.current_time() - t0 == 2.0
            assert ref.state is State.STOPPING
        assert stopped == [3.0]
        assert state_of(ref) is State.STOPPED
    assert log == [("start", "slow"), ("stop", "slow"), ("stopped", "slow")]


async def test_a_task_that_reports_started_twice_gets_a_runtime_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[str] = []

    async def twice(*, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(1)
        try:
            task_status.started(2)
        except RuntimeError as exc:
            errors.append(str(exc))
        await trio.sleep_forever()

    async with open_actor_system(TaskSpec(name="t", fn=twice)) as system:
        task = system.lookup_task("t")
        assert task.value == 1
        assert task.state is State.RUNNING
    assert errors == ["started() called twice on the same task status"]


async def test_a_body_error_and_a_system_failure_are_raised_together(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async def run() -> None:
        async with open_actor_system(
            ActorSpec(name="a", factory=probe("a", log), shutdown_timeout=1.0),
            ActorSpec(name="b", factory=probe("b", log)),
            intensity=RestartIntensity(max_restarts=0, period=5.0),
        ) as system:
            a = system.lookup("a")
            a.tell_nowait(trio.Event())  # never set: a is busy until it is cancelled
            system.lookup("b").tell_nowait("crash")  # the root gives up and stops a
            await a.ask("queued")  # fails when a is cancelled at its shutdown_timeout

    t0 = trio.current_time()
    with pytest.raises(ExceptionGroup) as info:
        await run()
    assert trio.current_time() - t0 == 1.0
    group = info.value
    assert group.message == "actor system failed"
    assert [type(error) for error in group.exceptions] == [ActorStopped, RestartIntensityExceeded]
    assert str(group.exceptions[0]) == "actor a stopped before handling the message"
    assert log == [("start", "a"), ("start", "b"), ("stop", "b")]


async def test_a_cancel_from_outside_ends_the_system_at_once(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    t0 = trio.current_time()
    with trio.move_on_after(1) as scope:
        async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))) as system:
            ref = system.lookup("a")
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() - t0 == 1.0
    # cancelled rather than stopped gracefully: a's on_stop does not run
    assert log == [("start", "a")]
    assert ref.state is State.STOPPED
    assert system.snapshot().state == "stopped"


async def test_the_internal_node_repr_shows_kind_path_and_state(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    # Node is private, but its repr is what tracebacks with locals (pytest -l) and
    # debuggers show for the tree
    async with open_actor_system(
        SupervisorSpec(name="s", children=(ActorSpec(name="b", factory=probe("b", log)),))
    ) as system:
        assert repr(system.lookup("s/b")._node) == "<Node actor s/b running>"
        assert repr(system.root._node) == "<Node supervisor / running>"
