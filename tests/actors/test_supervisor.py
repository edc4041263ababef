"""Restart strategies, restart types, intensity, escalation and backoff timing."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from actors import (
    ActorError,
    ActorSpec,
    ActorStopped,
    Backoff,
    Restart,
    RestartIntensity,
    RestartIntensityExceeded,
    State,
    Strategy,
    SupervisorSpec,
    TaskSpec,
    open_actor_system,
)

from ._probes import Log, Probe, SlowStop, probe, state_of

NO_DELAY = Backoff(base=0, jitter=0)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("stop", "b"), ("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [
                *[("stop", "b"), ("stop", "c"), ("stop", "a")],
                *[("start", "a"), ("start", "b"), ("start", "c")],
            ],
        ),
        (
            Strategy.REST_FOR_ONE,
            [("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")],
        ),
    ],
)
async def test_strategy_restarts_the_right_children_in_order(
    autojump_clock: trio.testing.MockClock,
    log: Log,
    strategy: Strategy,
    expected: list[tuple[str, str]],
) -> None:
    specs = tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "abc")
    async with open_actor_system(
        SupervisorSpec(name="group", children=specs, strategy=strategy, backoff=NO_DELAY)
    ) as system:
        assert log == [("start", "a"), ("start", "b"), ("start", "c")]
        log.clear()
        await system.lookup("group/b").tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert log == expected
        restarted = {name for kind, name in expected if kind == "start"}
        for name in "abc":
            ref = system.lookup(f"group/{name}")
            assert ref.state is State.RUNNING
            assert ref.restarts == (1 if name in restarted else 0)
            assert await ref.ask("ping") == (name, "ping")


async def test_group_restart_keeps_the_mailboxes_of_stopped_siblings(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    specs = tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "ab")
    async with open_actor_system(
        SupervisorSpec(
            name="g",
            children=specs,
            strategy=Strategy.ONE_FOR_ALL,
            backoff=Backoff(base=1, jitter=0),
        )
    ) as system:
        a, b = system.lookup("g/a"), system.lookup("g/b")
        a.tell_nowait("crash")
        await trio.testing.wait_all_tasks_blocked()
        b.tell_nowait("queued while restarting")
        assert b.state is State.RESTARTING
        assert await b.ask("after") == ("b", "after")
    assert ("handled", "b:queued while restarting") in log


@pytest.mark.parametrize(
    ("restart", "crash", "restarted"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
async def test_restart_types_for_a_task_that_ends(
    autojump_clock: trio.testing.MockClock, restart: Restart, crash: bool, restarted: bool
) -> None:
    runs: list[float] = []
    finish = trio.Event()

    async def job(*, task_status: trio.TaskStatus[int]) -> None:
        runs.append(trio.current_time())
        task_status.started(len(runs))
        if len(runs) == 1:
            await finish.wait()
            if crash:
                raise ValueError("job failed")
            return
        await trio.sleep_forever()

    async with open_actor_system(
        TaskSpec(name="job", fn=job, restart=restart), backoff=NO_DELAY
    ) as system:
        task = system.lookup_task("job")
        assert task.value == 1
        finish.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(runs) == (2 if restarted else 1)
        if restarted:
            assert system.lookup_task("job") is task
            assert task.value == len(runs)
            assert task.state is State.RUNNING
        else:
            assert "job" not in system.names()
            assert task.state is (State.FAILED if crash else State.STOPPED)


async def test_backoff_doubles_up_to_the_cap_on_the_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    class FailsToRestart(Probe):
        async def on_start(self) -> None:
            starts.append(trio.current_time())
            if 2 <= len(starts) <= 5:
                raise RuntimeError("not yet")

    async with open_actor_system(
        ActorSpec(name="a", factory=lambda: FailsToRestart("a", [])),
        backoff=Backoff(base=1.0, cap=8.0, jitter=0),
        intensity=RestartIntensity(max_restarts=10, period=100.0),
    ) as system:
        ref = system.lookup("a")
        await ref.tell("crash")
        await trio.sleep(60)
        assert ref.state is State.RUNNING
        assert ref.restarts == 5
    deltas = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert deltas == [1.0, 2.0, 4.0, 8.0, 8.0]


async def test_backoff_jitter_comes_from_the_injected_random_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    class Recorder(Probe):
        async def on_start(self) -> None:
            starts.append(trio.current_time())

    backoff = Backoff(base=1.0, cap=30.0, jitter=0.5)
    async with open_actor_system(
        ActorSpec(name="a", factory=lambda: Recorder("a", [])),
        backoff=backoff,
        intensity=RestartIntensity(max_restarts=10, period=100.0),
        rng=random.Random(7),
    ) as system:
        ref = system.lookup("a")
        for _ in range(3):
            await ref.tell("crash")
            await trio.sleep(20)
    expected_rng = random.Random(7)
    expected = [backoff.delay(n, expected_rng) for n in range(3)]
    crash_times = [starts[0], starts[0] + 20, starts[0] + 40]
    delays = [start - crash for start, crash in zip(starts[1:], crash_times, strict=True)]
    assert delays == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert all(1.0 * 2**n < delay for n, delay in enumerate(delays))


async def test_intensity_exceeded_escalates_to_the_parent_which_restarts_the_subtree(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    inner = SupervisorSpec(
        name="inner",
        children=(ActorSpec(name="a", factory=probe("a", log)),),
        intensity=RestartIntensity(max_restarts=2, period=10.0),
        backoff=NO_DELAY,
    )
    async with open_actor_system(inner, backoff=NO_DELAY) as system:
        old = system.lookup("inner/a")
        for _ in range(2):
            await old.tell("crash")
            await trio.testing.wait_all_tasks_blocked()
        assert old.restarts == 2
        assert system.lookup_supervisor("inner").restarts == 0
        await old.tell("crash")  # the third within 10 s: inner gives up
        await trio.testing.wait_all_tasks_blocked()
        parent_view = system.lookup_supervisor("inner")
        assert parent_view.restarts == 1
        assert parent_view.state is State.RUNNING
        assert parent_view.snapshot().last_error == (
            "RestartIntensityExceeded('supervisor inner exceeded 2 restarts in 10.0s, "
            "last crash in inner/a')"
        )
        new = system.lookup("inner/a")
        assert new is not old
        assert new.restarts == 0
        assert await new.ask("hello") == ("a", "hello")
        with pytest.raises(ActorStopped):
            await old.ask("hello")


async def test_restarts_spread_over_more_than_the_period_do_not_escalate(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        intensity=RestartIntensity(max_restarts=1, period=5.0),
        backoff=NO_DELAY,
    ) as system:
        ref = system.lookup("a")
        for _ in range(4):
            await ref.tell("crash")
            await trio.sleep(5.0)
        assert ref.restarts == 4
        assert ref.state is State.RUNNING


async def test_top_level_escalation_ends_the_system_with_the_error(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    systems = []

    async def run() -> None:
        async with open_actor_system(
            ActorSpec(name="a", factory=probe("a", log)),
            ActorSpec(name="b", factory=probe("b", log)),
            intensity=RestartIntensity(max_restarts=0, period=5.0),
        ) as system:
            systems.append(system)
            await system.lookup("b").tell("crash")
            await trio.sleep_forever()

    with pytest.raises(
        RestartIntensityExceeded, match=r"^supervisor / exceeded 0 restarts"
    ) as info:
        await run()
    assert isinstance(info.value.__cause__, RuntimeError)
    # b crashed (its on_stop ran), then the root stopped a gracefully
    assert log[-2:] == [("stop", "b"), ("stop", "a")]
    assert systems[0].snapshot().state == "failed"


async def test_one_for_all_drops_temporary_siblings_instead_of_restarting_them(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.ONE_FOR_ALL,
            backoff=NO_DELAY,
            children=(
                ActorSpec(name="a", factory=probe("a", log)),
                ActorSpec(name="t", factory=probe("t", log), restart=Restart.TEMPORARY),
            ),
        )
    ) as system:
        await system.lookup("g/a").tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert system.lookup_supervisor("g").children() == ["a"]
        assert system.lookup("g/a").state is State.RUNNING
    assert log == [
        *[("start", "a"), ("start", "t")],
        *[("stop", "a"), ("stop", "t"), ("start", "a")],
        ("stop", "a"),
    ]


async def test_a_group_restart_is_abandoned_when_the_supervisor_stops(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.REST_FOR_ONE,
            backoff=Backoff(base=60.0, cap=60.0, jitter=0),
            children=tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "ab"),
        )
    ) as system:
        await system.lookup("g/a").tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert system.lookup("g/b").state is State.RESTARTING
        t0 = trio.current_time()
        await system.lookup_supervisor("g").stop()
        assert trio.current_time() == t0
    assert log == [("start", "a"), ("start", "b"), ("stop", "a"), ("stop", "b")]


async def test_a_sibling_that_will_not_stop_is_cancelled_at_its_shutdown_timeout(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    starts: list[tuple[str, float]] = []

    class Timed(Probe):
        async def on_start(self) -> None:
            starts.append((self.name, trio.current_time()))

    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.ONE_FOR_ALL,
            backoff=NO_DELAY,
            children=(
                ActorSpec(name="a", factory=lambda: Timed("a", log)),
                ActorSpec(
                    name="stubborn",
                    factory=lambda: Timed("stubborn", log, hang_on_stop=True),
                    shutdown_timeout=2.0,
                ),
            ),
        )
    ) as system:
        t0 = trio.current_time()
        await system.lookup("g/a").tell("crash")
        await trio.sleep(10)
        assert system.lookup("g/stubborn").state is State.RUNNING
    assert starts[2:] == [("a", t0 + 2.0), ("stubborn", t0 + 2.0)]


async def test_a_failing_on_stop_after_a_crash_does_not_hide_the_crash(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class BadStop(Probe):
        async def on_stop(self) -> None:
            raise OSError("cannot close")

    async with open_actor_system(
        ActorSpec(name="a", factory=lambda: BadStop("a", []), shutdown_timeout=1.0),
        backoff=NO_DELAY,
    ) as system:
        ref = system.lookup("a")
        await ref.tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.restarts == 1
        assert ref.statistics().last_error == "RuntimeError('a crashed')"
    assert "actor.on_stop_failed actor=a" in caplog.text


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_start_child_returns_for_an_actor_a_group_restart_caught_starting(
    autojump_clock: trio.testing.MockClock, log: Log, strategy: Strategy
) -> None:
    class SlowStart(Probe):
        async def on_start(self) -> None:
            await super().on_start()
            await trio.sleep(2)

    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=strategy,
            backoff=NO_DELAY,
            children=(ActorSpec(name="a", factory=probe("a", log)),),
        )
    ) as system:
        group = system.lookup_supervisor("g")
        t0 = trio.current_time()

        async def crash_a_meanwhile() -> None:
            await trio.sleep(1)
            await system.lookup("g/a").tell("crash")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash_a_meanwhile)
            with trio.fail_after(10):
                slow = await group.start_child(
                    ActorSpec(name="s", factory=lambda: SlowStart("s", log))
                )
            # the group restart let its on_start finish, stopped it and parked it
            assert trio.current_time() - t0 == 2.0
            assert slow.state is State.RESTARTING
        # then started it again, after a; its second on_start takes 2 s too
        assert await slow.ask("x") == ("s", "x")
        assert trio.current_time() - t0 == 4.0
        assert state_of(slow) is State.RUNNING
        assert (slow.restarts, system.lookup("g/a").restarts) == (1, 1)
    assert log[:6] == [
        *[("start", "a"), ("start", "s"), ("stop", "a"), ("stop", "s")],
        *[("start", "a"), ("start", "s")],
    ]


async def test_start_child_fails_for_a_task_a_group_restart_cancelled_while_starting(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async def never_ready(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.ONE_FOR_ALL,
            backoff=NO_DELAY,
            children=(ActorSpec(name="a", factory=probe("a", log)),),
        )
    ) as system:
        t0 = trio.current_time()

        async def crash_a_meanwhile() -> None:
            await trio.sleep(1)
            await system.lookup("g/a").tell("crash")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash_a_meanwhile)
            with (
                trio.fail_after(10),
                pytest.raises(ActorError, match=r"^task g/t ended before it was started$"),
            ):
                await system.lookup_supervisor("g").start_child(TaskSpec(name="t", fn=never_ready))
            assert trio.current_time() - t0 == 1.0
        await trio.testing.wait_all_tasks_blocked()
        assert system.lookup_supervisor("g").children() == ["a"]
        assert system.lookup("g/a").state is State.RUNNING
    assert log[:3] == [("start", "a"), ("stop", "a"), ("start", "a")]


async def test_siblings_that_crash_together_share_one_group_restart(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    specs = tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "abc")
    async with open_actor_system(
        SupervisorSpec(name="g", children=specs, strategy=Strategy.ONE_FOR_ALL, backoff=NO_DELAY)
    ) as system:
        log.clear()
        system.lookup("g/a").tell_nowait("crash")
        system.lookup("g/b").tell_nowait("crash")
        await trio.testing.wait_all_tasks_blocked()
        # a and b stop as they crash (in either order), then c; all start once, in order
        assert sorted(log[:2]) == [("stop", "a"), ("stop", "b")]
        assert log[2:] == [("stop", "c"), ("start", "a"), ("start", "b"), ("start", "c")]
        for name in "abc":
            ref = system.lookup(f"g/{name}")
            assert ref.state is State.RUNNING
            assert ref.restarts == 1


async def test_an_escalation_during_a_group_restart_backoff_is_immediate(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    inner = SupervisorSpec(
        name="g",
        strategy=Strategy.REST_FOR_ONE,
        intensity=RestartIntensity(max_restarts=1, period=60.0),
        backoff=Backoff(base=10.0, jitter=0),
        children=tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "ab"),
    )
    async with open_actor_system(inner, backoff=NO_DELAY) as system:
        t0 = trio.current_time()
        await system.lookup("g/b").tell("crash")
        await trio.sleep(1)
        assert system.lookup("g/b").state is State.RESTARTING  # 9 s of backoff left
        await system.lookup("g/a").tell("crash")  # the second restart within 60 s
        await trio.testing.wait_all_tasks_blocked()
        # g gave up at once, without waiting for b's backoff, and the root restarted it
        assert trio.current_time() - t0 == 1.0
        group = system.lookup_supervisor("g")
        assert group.restarts == 1
        assert group.state is State.RUNNING
        assert group.snapshot().last_error == (
            "RestartIntensityExceeded('supervisor g exceeded 1 restarts in 60.0s, "
            "last crash in g/a')"
        )
        assert [system.lookup(f"g/{n}").state for n in "ab"] == [State.RUNNING] * 2
    assert log[:6] == [
        *[("start", "a"), ("start", "b"), ("stop", "b"), ("stop", "a")],
        *[("start", "a"), ("start", "b")],
    ]


async def test_a_supervisor_stopped_during_a_group_restart_lets_the_sibling_finish_stopping(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.REST_FOR_ONE,
            backoff=NO_DELAY,
            children=(
                ActorSpec(name="a", factory=probe("a", log)),
                ActorSpec(name="b", factory=lambda: SlowStop("b", log)),
            ),
        )
    ) as system:
        a, b = system.lookup("g/a"), system.lookup("g/b")
        t0 = trio.current_time()
        await a.tell("crash")  # the group restart stops b, whose on_stop takes 1 s
        await trio.sleep(0.5)
        await system.lookup_supervisor("g").stop()
        # the restart is abandoned; b's on_stop is not cut short and nothing starts again
        assert trio.current_time() - t0 == 1.0
        assert (a.state, b.state) == (State.FAILED, State.STOPPED)
        assert system.names() == [""]
    assert log == [
        *[("start", "a"), ("start", "b"), ("stop", "a")],
        *[("stop", "b"), ("stopped", "b")],
    ]


async def test_a_child_stopped_during_a_group_restart_backoff_is_not_restarted(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        SupervisorSpec(
            name="g",
            strategy=Strategy.REST_FOR_ONE,
            backoff=Backoff(base=10.0, jitter=0),
            children=tuple(ActorSpec(name=n, factory=probe(n, log)) for n in "ab"),
        )
    ) as system:
        group = system.lookup_supervisor("g")
        a, b = system.lookup("g/a"), system.lookup("g/b")
        t0 = trio.current_time()
        await a.tell("crash")
        await trio.sleep(1)
        assert (a.state, b.state) == (State.RESTARTING, State.RESTARTING)
        await group.stop_child("b")
        assert trio.current_time() - t0 == 1.0
        assert b.state is State.STOPPED
        assert await a.ask("x") == ("a", "x")  # a alone starts again after its backoff
        assert trio.current_time() - t0 == 10.0
        assert group.children() == ["a"]
        assert (a.restarts, b.restarts) == (1, 0)
    assert log == [
        *[("start", "a"), ("start", "b"), ("stop", "a"), ("stop", "b")],
        *[("start", "a"), ("handled", "a:x"), ("stop", "a")],
    ]
