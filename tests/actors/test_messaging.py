"""tell, ask, backpressure and replies, on the autojump clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    ActorNotFound,
    ActorRef,
    ActorSpec,
    ActorStopped,
    AskTimeout,
    Backoff,
    MailboxFull,
    State,
    open_actor_system,
)

from ._probes import Log, probe

NO_DELAY = Backoff(base=0, jitter=0)


async def test_ask_returns_the_reply(autojump_clock: trio.testing.MockClock, log: Log) -> None:
    async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))) as system:
        assert await system.lookup("a").ask("hi") == ("a", "hi")
    assert log == [("start", "a"), ("handled", "a:hi"), ("stop", "a")]


async def test_ask_failure_goes_to_the_caller_and_the_actor_lives_on(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))) as system:
        ref = system.lookup("a")
        with pytest.raises(RuntimeError, match=r"^a crashed$"):
            await ref.ask("crash")
        assert await ref.ask("after") == ("a", "after")
        assert ref.restarts == 0
        assert ref.state is State.RUNNING
    assert log.count(("start", "a")) == 1


async def test_tell_failure_crashes_and_restarts_the_actor(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)), backoff=NO_DELAY
    ) as system:
        ref = system.lookup("a")
        await ref.tell("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.restarts == 1
        assert ref.state is State.RUNNING
        assert ref.statistics().last_error == "RuntimeError('a crashed')"
        assert await ref.ask("after") == ("a", "after")
    assert log[:3] == [("start", "a"), ("stop", "a"), ("start", "a")]


async def test_queued_messages_survive_a_restart_and_the_ref_stays_valid(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)), backoff=Backoff(base=1.0, jitter=0)
    ) as system:
        ref = system.lookup("a")
        ref.tell_nowait("crash")
        ref.tell_nowait(1)
        ref.tell_nowait(2)
        await trio.testing.wait_all_tasks_blocked()
        assert ref.state is State.RESTARTING
        assert ref.statistics().mailbox_depth == 2
        assert await ref.ask(3) == ("a", 3)
        assert system.lookup("a") is ref
    handled = [event for kind, event in log if kind == "handled"]
    assert handled == ["a:1", "a:2", "a:3"]


async def test_tell_waits_for_room_and_tell_nowait_raises_mailbox_full(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    gate = trio.Event()
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log), mailbox_size=2)
    ) as system:
        ref = system.lookup("a")
        ref.tell_nowait(gate)  # the actor takes it and blocks on the gate
        await trio.testing.wait_all_tasks_blocked()
        ref.tell_nowait(1)
        ref.tell_nowait(2)
        with pytest.raises(MailboxFull, match=r"^mailbox of actor a is full \(2/2\)$"):
            ref.tell_nowait(3)
        sent = trio.Event()

        async def blocked_sender() -> None:
            await ref.tell(4)
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            assert ref.statistics().senders_waiting == 1
            assert repr(ref) == "<ActorRef a running mailbox 2/2 restarts 0>"
            gate.set()
        assert sent.is_set()
        assert await ref.ask(5) == ("a", 5)
    handled = [event for kind, event in log if kind == "handled"]
    assert handled == ["a:1", "a:2", "a:4", "a:5"]


async def test_ask_timeout_is_exact_and_a_too_slow_error(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    gate = trio.Event()
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log), ask_timeout=2.5)
    ) as system:
        ref = system.lookup("a")
        t0 = trio.current_time()
        with pytest.raises(AskTimeout, match=r"^ask to actor a timed out after 2.5s$") as info:
            await ref.ask(gate)
        assert trio.current_time() - t0 == 2.5
        assert isinstance(info.value, trio.TooSlowError)
        gate.set()
        assert await ref.ask("still alive") == ("a", "still alive")


async def test_a_reply_to_a_cancelled_asker_does_not_crash_the_actor(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    gate = trio.Event()
    async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))) as system:
        ref = system.lookup("a")
        with trio.move_on_after(1) as scope:
            await ref.ask(gate)
        assert scope.cancelled_caught
        gate.set()  # the actor now replies to an asker that left
        await trio.testing.wait_all_tasks_blocked()
        assert ref.restarts == 0
        assert ref.state is State.RUNNING
        assert await ref.ask("next") == ("a", "next")


async def test_messages_to_a_stopped_actor_fail_at_once(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    async with open_actor_system(ActorSpec(name="a", factory=probe("a", log))) as system:
        ref = system.lookup("a")
        await ref.stop()
        assert ref.state is State.STOPPED
        t0 = trio.current_time()
        with pytest.raises(ActorStopped, match=r"^actor a is stopped$"):
            await ref.ask("late")
        with pytest.raises(ActorStopped, match=r"^actor a is stopped$"):
            await ref.tell("late")
        with pytest.raises(ActorStopped, match=r"^actor a is stopped$"):
            ref.tell_nowait("late")
        assert trio.current_time() == t0
        with pytest.raises(ActorNotFound, match=r"^no actor named a$"):
            system.lookup("a")
        await ref.stop()  # stopping twice is harmless
    assert log == [("start", "a"), ("stop", "a")]


async def test_a_graceful_stop_fails_queued_asks_unless_draining(
    autojump_clock: trio.testing.MockClock, log: Log
) -> None:
    gate = trio.Event()
    errors: list[str] = []
    replies: list[object] = []
    async with open_actor_system(
        ActorSpec(name="a", factory=probe("a", log)),
        ActorSpec(name="d", factory=probe("d", log), drain_on_stop=True),
    ) as system:
        a, d = system.lookup("a"), system.lookup("d")

        async def ask(ref: ActorRef[Any, Any], message: object) -> None:
            try:
                replies.append(await ref.ask(message))
            except ActorStopped as exc:
                errors.append(str(exc))

        async with trio.open_nursery() as nursery:
            a.tell_nowait(gate)
            d.tell_nowait(gate)
            nursery.start_soon(ask, a, 1)
            nursery.start_soon(ask, d, 2)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(a.stop)
            nursery.start_soon(d.stop)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert errors == ["actor a stopped before handling the message"]
    assert replies == [("d", 2)]
